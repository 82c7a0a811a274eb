"""Bulk intake figures: batch enqueues/s, batch events/s, and enqueue/grant cost by depth.

Run: ``python -m app.cli.bench.intake`` (the configured Postgres and broker; a scratch database is
made and dropped). On a scratch database with A no-op actions (a schema-checked integer
parameter ``n``) and A rules on one trigger, each matching one value of ``payload.k``:

a. ``policies.intake.enqueue_many``: N executions over the A actions in batches of B, one
   transaction per batch (what the batch endpoint does, without HTTP);
b. the same through ``POST /api/v1/executions/batch`` of a real ``usher web`` (waitress) on
   127.0.0.1, C clients posting batches of B at once;
c. E events through ``POST /api/v1/events/batch`` in batches of B, each matching one rule,
   processed by a real ``usher worker`` (2 processes) that consumes the events queue but no
   action queue, so only intake is measured: the clock runs from the first request to the
   moment every event's enforcement (and execution) exists;
d. single ``admission.enqueue`` /s and ``lines.admit`` grants/s at the tail and head of a
   line 100 deep and of one D deep (filled with ``enqueue_many``), timed alternately, to show
   the cost is flat. Each is its own transaction, so these are bound by commit latency.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from app import celery as usher_celery
from app import config, db
from app.cli import processes
from app.cli.bench import invariants, statements
from app.cli.bench.scratch import delete_queues, drop_database, scratch_database
from policies import admission, control, intake, lines, packs


def measure(
    settings: config.Settings,
    console: Console,
    executions: int = 20_000,
    actions: int = 10,
    batch: int = 500,
    events: int = 10_000,
    deep: int = 100_000,
    clients: int = 2,
    samples: int = 300,
) -> dict[str, float]:
    """Every figure of the module docstring, as ``{name: value}``; printed with ``show``."""
    assert settings.database_url, "resolve the database URL before benchmarking"
    url, name = scratch_database(settings.database_url)
    folder = Path(tempfile.mkdtemp(prefix="usher-bench-intake-"))
    token = secrets.token_urlsafe(16)
    bench = settings.model_copy(update={"database_url": url, "home": folder, "api_token": token})
    pool = processes.Pool(bench, folder / "logs")
    celery_app = usher_celery.create(bench)
    engine = db.make_engine(url)
    web: subprocess.Popen[bytes] | None = None
    refs: list[str] = []
    try:
        db.upgrade(url)
        pack, refs = _load_pack(engine, folder, actions, deep)
        figures: dict[str, float] = {}
        with console.status("a: enqueue_many"):
            figures |= _intake(engine, bench, refs, executions, batch)
        web, base = _serve(bench, folder)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
            with console.status("b: POST /api/v1/executions/batch"):
                figures |= _http_enqueue(http, refs, executions, batch, clients)
            pool.start(concurrency=2, actions="-none-", name="intake1")
            with console.status("c: POST /api/v1/events/batch -> worker"):
                figures |= _events(engine, http, actions, events, batch, clients)
        figures |= _depth(engine, bench, pack, deep, samples, console)
        figures["counter_mismatches"] = _counter_mismatches(engine)
        return figures
    finally:
        if web is not None:
            web.terminate()
            web.wait(timeout=30)
        pool.stop_all()
        delete_queues(celery_app, [usher_celery.queue_name(celery_app, r) for r in refs])
        celery_app.close()
        engine.dispose()
        db.dispose_all()
        drop_database(settings.database_url, name)


def _load_pack(engine: Engine, folder: Path, actions: int, deep: int) -> tuple[str, list[str]]:
    pack = f"intake{uuid.uuid4().hex[:6]}"
    root = folder / "packs" / pack
    (root / "actions").mkdir(parents=True)
    (root / "rules").mkdir()
    (root / "pack.yaml").write_text(f"name: {pack}\n")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    for i in range(actions):
        (root / "actions" / f"a{i}.yaml").write_text(
            json.dumps(
                {
                    "name": f"a{i}",
                    "runner": "noop",
                    "parameters": schema,
                    "policy": {"concurrency": 10, "max_queue_length": 10_000_000},
                }
            )
        )
        (root / "rules" / f"r{i}.yaml").write_text(
            json.dumps(
                {
                    "name": f"r{i}",
                    "trigger": "bench.intake",
                    "criteria": {"payload.k": {"eq": i}},
                    "action": f"{pack}.a{i}",
                    "parameters": {"n": "{{ event.payload.n }}"},
                }
            )
        )
    for line in ("shallow", "deep"):
        (root / "actions" / f"{line}.yaml").write_text(
            json.dumps(
                {
                    "name": line,
                    "runner": "noop",
                    "policy": {"concurrency": 1, "max_queue_length": deep + 10_000},
                }
            )
        )
    with db.unit_of_work(engine) as session:
        packs.load(session, root)
    return pack, [f"{pack}.a{i}" for i in range(actions)]


def _items(refs: list[str], start: int, size: int) -> list[dict[str, Any]]:
    return [
        {"action": refs[i % len(refs)], "parameters": {"n": i}} for i in range(start, start + size)
    ]


def _intake(
    engine: Engine, settings: config.Settings, refs: list[str], n: int, batch: int
) -> dict[str, float]:

    requests = [_items(refs, start, min(batch, n - start)) for start in range(0, n, batch)]
    began = time.perf_counter()
    for chunk in requests:
        with db.unit_of_work(engine) as session:
            results = intake.enqueue_many(session, settings, chunk)
        if results.refused:
            raise RuntimeError(f"enqueue_many refused {results.refused} items")
    return {"intake_enqueue_per_s": round(n / (time.perf_counter() - began), 1)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(
    settings: config.Settings, folder: Path, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """``usher web [extra]`` (waitress) on 127.0.0.1, started and answering."""
    port = _free_port()
    env = processes.environment(settings) | {
        "USHER_WEB_HOST": "127.0.0.1",
        "USHER_WEB_PORT": str(port),
        "USHER_API_TOKEN": settings.api_token or "",
    }
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    # USHER_BENCH_WEB_REPO: the web of another checkout (a version before, say), on the same
    # database, broker and workers: what an alternating before/after run compares.
    other = os.environ.get("USHER_BENCH_WEB_REPO")
    if other:
        env["PYTHONPATH"] = other
        with (folder / "logs" / "web.log").open("wb") as out:
            web = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "web", *extra],
                env=env,
                cwd=other,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    else:
        web = processes.launch(["web", *extra], env, folder / "logs" / "web.log")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return web, base
        except httpx.HTTPError:
            pass
        if web.poll() is not None or time.monotonic() > deadline:
            web.kill()
            raise RuntimeError(f"usher web did not start: {(folder / 'logs' / 'web.log')}")
        time.sleep(0.1)


def _post_all(http: httpx.Client, path: str, bodies: list[Any], clients: int) -> list[Any]:
    def post(body: Any) -> Any:
        response = http.post(path, json=body, timeout=120)
        if response.status_code != 202:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
        return response.json()

    with ThreadPoolExecutor(clients) as executor:
        return list(executor.map(post, bodies))


def _http_enqueue(
    http: httpx.Client, refs: list[str], n: int, batch: int, clients: int
) -> dict[str, float]:
    bodies = [{"items": _items(refs, s, min(batch, n - s))} for s in range(0, n, batch)]
    began = time.perf_counter()
    answers = _post_all(http, "/api/v1/executions/batch", bodies, clients)
    seconds = time.perf_counter() - began
    refused = sum(a["refused"] for a in answers)
    if refused:
        raise RuntimeError(f"the batch endpoint refused {refused} items")
    return {"http_enqueue_per_s": round(n / seconds, 1)}


def _events(
    engine: Engine, http: httpx.Client, actions: int, n: int, batch: int, clients: int
) -> dict[str, float]:
    bodies = [
        {
            "events": [
                {"trigger": "bench.intake", "payload": {"k": i % actions, "n": i}}
                for i in range(s, min(s + batch, n))
            ]
        }
        for s in range(0, n, batch)
    ]
    count = statements.query("intake_enforcements")
    with engine.connect() as conn:
        before = int(conn.execute(count).scalar_one())
    began = time.perf_counter()
    _post_all(http, "/api/v1/events/batch", bodies, clients)
    posted = time.perf_counter() - began
    deadline = time.monotonic() + max(120, n / 50)
    while True:
        with engine.connect() as conn:
            done = int(conn.execute(count).scalar_one()) - before
        if done >= n:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {n} events were enforced")
        time.sleep(0.02)
    seconds = time.perf_counter() - began
    with engine.connect() as conn:
        executed = conn.execute(statements.query("intake_executed")).scalar_one()
    if executed != n:
        raise RuntimeError(f"{n - executed} of {n} enforcements were not executed")
    return {"event_post_per_s": round(n / posted, 1), "events_per_s": round(n / seconds, 1)}


def _depth(
    engine: Engine,
    settings: config.Settings,
    pack: str,
    deep: int,
    samples: int,
    console: Console,
) -> dict[str, float]:
    """Single enqueues/s at the tail and grants/s at the head of two paused lines (nothing
    runs on its own), one 100 deep and one ``deep`` deep, timed alternately so that both see
    the same machine. A grant is timed as the ``admit`` a completion makes; the claim and
    release that free the slot again are not timed. Each is its own transaction and commit."""

    depths = {f"{pack}.shallow": 100, f"{pack}.deep": deep}
    figures: dict[str, float] = {}
    for ref, depth in depths.items():
        with db.unit_of_work(engine) as session:
            control.set_paused(session, settings, ref, True)
        with console.status(f"d: filling a line to {depth:,} waiting"):
            began = time.perf_counter()
            for start in range(0, depth, 5_000):
                with db.unit_of_work(engine) as session:
                    intake.enqueue_many(
                        session, settings, [{"action": ref}] * min(5_000, depth - start)
                    )
            if depth == deep:
                figures["deep_fill_per_s"] = round(deep / (time.perf_counter() - began), 1)
    with console.status("d: single enqueues and grants, 100 waiting vs deep"):
        queue_ids = {ref: _queue_id(engine, ref) for ref in depths}
        spent = {(verb, ref): 0.0 for verb in ("enqueue", "grant") for ref in depths}
        for _ in range(samples):
            for ref in depths:
                spent[("enqueue", ref)] += _enqueue_one(engine, settings, ref)
                spent[("grant", ref)] += _grant_one(engine, settings, queue_ids[ref])
    for (verb, ref), seconds in spent.items():
        figures[f"{verb}_per_s_at_{depths[ref]}"] = round(samples / seconds, 1)
    return figures


def _queue_id(engine: Engine, ref: str) -> int:
    """The one line of an unpartitioned action."""
    (queue_id,) = invariants.queue_ids(engine, ref)
    return queue_id


def _enqueue_one(engine: Engine, settings: config.Settings, ref: str) -> float:

    began = time.perf_counter()
    with db.unit_of_work(engine) as session:
        admission.enqueue(session, settings, ref, {})
    return time.perf_counter() - began


def _grant_one(engine: Engine, settings: config.Settings, queue_id: int) -> float:
    """Seconds one ``admit`` of the line's head took (in its transaction); then run it."""

    began = time.perf_counter()
    with db.unit_of_work(engine) as session:
        line = replace(lines.lock_line(session, settings, queue_id), paused=False)
        (grant,) = lines.admit(session, line).grants
    seconds = time.perf_counter() - began
    with db.unit_of_work(engine) as session:
        admission.claim(session, grant.execution_id, grant.attempt, "bench", 60)
    with db.unit_of_work(engine) as session:
        ended = admission.Ended(grant.execution_id, grant.attempt, "succeeded")
        admission.release(session, settings, ended)
    return seconds


def _counter_mismatches(engine: Engine) -> float:
    """Lines whose counters differ from a recount of their executions (should be 0)."""
    with engine.connect() as conn:
        return float(conn.execute(statements.query("intake_counter_mismatches")).scalar_one())


LABELS = {
    "intake_enqueue_per_s": ("a", "enqueue_many, batches in one process", "enqueues/s"),
    "http_enqueue_per_s": ("b", "POST /api/v1/executions/batch (waitress)", "enqueues/s"),
    "event_post_per_s": ("c", "POST /api/v1/events/batch, stored", "events/s"),
    "events_per_s": ("c", "events -> enforcements + executions (worker)", "events/s"),
    "deep_fill_per_s": ("d", "enqueue_many filling the deep line", "enqueues/s"),
    "counter_mismatches": ("", "lines whose counters disagree with a recount", "lines"),
}


def show(figures: dict[str, float], console: Console, title: str = "bulk intake") -> None:
    table = Table(title=title, header_style="bold")
    for column in ("", "what", "value", "unit"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for key, value in figures.items():
        part, what, unit = LABELS.get(key, ("d", key.replace("_", " "), ""))
        if key.startswith(("enqueue_per_s_at_", "grant_per_s_at_")):
            verb, depth = key.split("_per_s_at_")
            what = f"single {verb} with {int(depth):,} waiting"
            unit = f"{verb}s/s"
        table.add_row(part, what, f"{value:,.1f}", unit)
    console.print(table)


def main() -> None:
    settings = config.load()
    if not settings.database_url:
        settings = settings.model_copy(update={"database_url": db.embedded_url(settings.home)})
    console = Console()
    sizes = json.loads(os.environ.get("USHER_BENCH_INTAKE", "{}"))
    figures = measure(settings, console, **sizes)
    show(figures, console, f"bulk intake on {settings.broker_url or 'filesystem://'}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
