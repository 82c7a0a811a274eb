"""Rate-limit figures: grants/s on one rate-limited line, at a small count and a large one.

Run: ``python -m app.cli.bench.ratelimit`` (sizes as JSON in ``USHER_BENCH_RATELIMIT``; the
configured Postgres; a scratch database is
made and dropped). Three no-op actions of 10,000 slots: ``free`` (no rate limit),
``small`` (``count: 10`` per 0.1 ms, so the limit never binds and its window stays empty)
and ``large`` (``count: 100000`` per hour). Each line first gets ``prior`` finished
executions granted over the last ``span_s`` seconds (the large line's window so holds
``prior`` grants, the ones it counts); then ``grants`` single ``admission.enqueue`` calls,
each its own transaction and each granted at once, are timed per line after a few untimed
ones (the first grant of a line whose record predates it fills the record from history).
The figure is the cost of a grant under the limiter: flat when it does not grow with
``count``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from app import config, db
from app.cli.bench import statements
from app.cli.bench.scratch import drop_database, scratch_database
from policies import admission, packs

LINES = {
    "free": None,
    "small": {"count": 10, "per_s": 0.0001},
    "large": {"count": 100_000, "per_s": 3600},
}
WARM = 20


def measure(
    settings: config.Settings,
    console: Console,
    grants: int = 2_000,
    prior: int = 95_000,
    span_s: float = 3000.0,
) -> dict[str, float]:
    """``grant_per_s_<line>`` for each line of the module docstring."""
    assert settings.database_url, "resolve the database URL before benchmarking"
    assert prior + grants + WARM <= 100_000, "the large line's window would fill"
    url, name = scratch_database(settings.database_url)
    folder = Path(tempfile.mkdtemp(prefix="usher-bench-ratelimit-"))
    bench = settings.model_copy(update={"database_url": url, "home": folder})
    engine = db.make_engine(url)
    try:
        db.upgrade(url)
        refs = _load_pack(engine, folder)
        with console.status(f"history: {prior:,} grants per line"):
            with db.unit_of_work(engine) as session:
                for ref in refs.values():
                    action_id = session.execute(
                        statements.query("rate_action_id"), {"ref": ref}
                    ).scalar_one()
                    session.execute(
                        statements.query("rate_history"),
                        {"action_id": action_id, "n": prior, "span_s": span_s},
                    )
            with db.unit_of_work(engine) as session:
                session.execute(statements.query("rate_analyze"))
        figures: dict[str, float] = {}
        for line, ref in refs.items():
            with console.status(f"{grants:,} grants on {line}"):
                figures[f"grant_per_s_{line}"] = _grants(engine, bench, ref, grants)
        return figures
    finally:
        engine.dispose()
        drop_database(settings.database_url, name)


def _load_pack(engine: Engine, folder: Path) -> dict[str, str]:
    pack = f"rate{uuid.uuid4().hex[:6]}"
    root = folder / "packs" / pack
    (root / "actions").mkdir(parents=True)
    (root / "pack.yaml").write_text(f"name: {pack}\n")
    for line, window in LINES.items():
        policy: dict[str, object] = {"concurrency": 10_000, "max_queue_length": 10_000}
        if window:
            policy["rate_limit"] = window
        (root / "actions" / f"{line}.yaml").write_text(
            json.dumps({"name": line, "runner": "noop", "policy": policy})
        )
    with db.unit_of_work(engine) as session:
        packs.load(session, root)
    return {line: f"{pack}.{line}" for line in LINES}


def _grants(engine: Engine, settings: config.Settings, ref: str, n: int) -> float:
    def grant() -> None:
        with db.unit_of_work(engine) as session:
            if not admission.enqueue(session, settings, ref, {}).granted:
                raise RuntimeError(f"{ref}: an enqueue was not granted at once")

    for _ in range(WARM):
        grant()
    began = time.perf_counter()
    for _ in range(n):
        grant()
    return round(n / (time.perf_counter() - began), 1)


def show(figures: dict[str, float], console: Console) -> None:
    table = Table(title="grants/s on one line (enqueue + grant, one transaction each)")
    table.add_column("line")
    table.add_column("grants/s", justify="right")
    for line, window in LINES.items():
        shown = f"{window['count']:,} per {window['per_s']} s" if window else "no rate limit"
        table.add_row(f"{line} ({shown})", f"{figures[f'grant_per_s_{line}']:,.1f}")
    console.print(table)


def main() -> None:
    settings = config.load()
    if not settings.database_url:
        settings = settings.model_copy(update={"database_url": db.embedded_url(settings.home)})
    console = Console()
    sizes = json.loads(os.environ.get("USHER_BENCH_RATELIMIT", "{}"))
    figures = measure(settings, console, **sizes)
    show(figures, console)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
