"""``usher bench --intake-http``: single requests, the way webhooks and most API clients send
them, against a real ``usher web`` with a worker running the work, beside the batch path and
plain Celery's ``send_task`` in the same run.

On a scratch database with 10 no-op lines (concurrency 10) and a real worker (2 processes):
K client threads (one httpx connection each) post N requests as fast as answers come, for

1. ``POST /api/v1/executions``, every request on one line;
2. the same over the 10 lines;
3. ``POST /api/v1/events`` (a trigger no rule takes: intake alone);
4. ``POST /api/v1/executions/batch`` of 100 (N / 100 requests);
5. plain Celery: N ``send_task`` from K threads (to a queue nobody reads, deleted after).

Figures: requests (or items) per second, latency p50 / p99, the answers by status, what was
stored against what was answered 202 (lost: 0), and the CPU per request of each part (the
web processes, the worker, Postgres, the broker, this client) from /proc.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from app import celery as usher_celery
from app import config, db
from app.cli import processes
from app.cli.bench import statements
from app.cli.bench.intake import _serve
from app.cli.bench.measures import CpuMeter, percentile
from app.cli.bench.scratch import delete_queues, scratch
from policies import packs

LINES = 10
PLAIN_QUEUE = "usher.bench.intake-http"


def _pack(engine: Engine, folder: Path) -> list[str]:
    name = f"http{uuid.uuid4().hex[:6]}"
    root = folder / "packs" / name
    (root / "actions").mkdir(parents=True)
    (root / "pack.yaml").write_text(
        f"name: {name}\npolicy: {{concurrency: 10, max_queue_length: 10000000}}\n"
    )
    for i in range(LINES):
        (root / "actions" / f"a{i}.yaml").write_text(f"name: a{i}\nrunner: noop\n")
    with db.unit_of_work(engine) as session:
        packs.load(session, root)
    return [f"{name}.a{i}" for i in range(LINES)]


def _load(
    base: str, token: str, path: str, bodies: list[Any], clients: int
) -> tuple[float, list[float], Counter[int], list[Any]]:
    """Post every body from ``clients`` threads, each on its own connection: seconds, each
    request's latency (s), the statuses, and the 202 answers."""
    local = threading.local()
    made: list[httpx.Client] = []
    lock = threading.Lock()

    def post(body: Any) -> tuple[float, int, Any]:
        http = getattr(local, "http", None)
        if http is None:
            http = local.http = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120
            )
            with lock:
                made.append(http)
        started = time.perf_counter()
        answer = http.post(path, json=body)
        took = time.perf_counter() - started
        return took, answer.status_code, answer.json() if answer.status_code == 202 else None

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(post, bodies))
    seconds = time.perf_counter() - started
    for http in made:
        http.close()
    return (
        seconds,
        [r[0] for r in results],
        Counter(r[1] for r in results),
        [r[2] for r in results if r[2] is not None],
    )


def _plain(app: Any, n: int, clients: int) -> tuple[float, list[float]]:
    def send(_: int) -> float:
        started = time.perf_counter()
        app.send_task("usher.bench.plain", args=[0], queue=PLAIN_QUEUE)
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        took = list(pool.map(send, range(n)))
    return time.perf_counter() - started, took


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(statements.query(f"intake_http_{table}")).scalar_one())


def measure(
    settings: config.Settings,
    console: Console,
    requests: int = 3000,
    clients: int = 32,
    web_processes: int = 1,
) -> list[dict[str, Any]]:
    """One row per kind of request (see the module)."""
    rows: list[dict[str, Any]] = []
    with scratch(settings) as (url, folder):
        token = secrets.token_urlsafe(24)
        bench = settings.model_copy(
            update={
                "database_url": url,
                "home": settings.home if settings.broker_url else folder,
                "api_token": token,
            }
        )
        engine = db.make_engine(url)
        app = usher_celery.create(bench)
        pool = processes.Pool(bench, folder / "logs")
        web = None
        try:
            refs = _pack(engine, folder)
            pool.start(concurrency=2, actions=refs[0].split(".")[0] + ".*", name="http1")
            extra = ("--processes", str(web_processes)) if web_processes > 1 else ()
            web, base = _serve(bench, folder, extra)
            meter = CpuMeter(pool, {web.pid: "web"})
            kinds: list[tuple[str, str, list[Any], str, int]] = [
                ("executions, one line", "/api/v1/executions",
                 [{"action": refs[0]}] * requests, "executions", 1),
                ("executions, 10 lines", "/api/v1/executions",
                 [{"action": refs[i % LINES]} for i in range(requests)], "executions", 1),
                ("events, no rule", "/api/v1/events",
                 [{"trigger": "bench.nobody", "payload": {"n": i}} for i in range(requests)],
                 "events", 1),
                ("batch of 100 executions", "/api/v1/executions/batch",
                 [{"items": [{"action": refs[i % LINES]}] * 100}
                  for i in range(max(requests // 100, 1))], "executions", 100),
            ]  # fmt: skip
            for label, path, bodies, table, per in kinds:
                stored_before = _count(engine, table)
                before = meter.read()
                with console.status(f"{label}: {len(bodies):,} requests from {clients} clients"):
                    seconds, took, statuses, answered = _load(base, token, path, bodies, clients)
                after = meter.read()
                items = len(bodies) * per
                stored = _count(engine, table) - stored_before
                rows.append(
                    {
                        "kind": label,
                        "requests": len(bodies),
                        "per_s": round(items / seconds, 1),
                        "p50_ms": round((percentile(took, 50) or 0) * 1000, 1),
                        "p99_ms": round((percentile(took, 99) or 0) * 1000, 1),
                        "answers": dict(sorted(statuses.items())),
                        "lost": len(answered) * per - stored,
                        "cpu_ms": CpuMeter.per_execution_ms(before, after, items),
                    }
                )
            before = meter.read()
            with console.status(f"plain celery: {requests:,} send_task from {clients} threads"):
                seconds, took = _plain(app, requests, clients)
            after = meter.read()
            rows.append(
                {
                    "kind": "plain celery send_task",
                    "requests": requests,
                    "per_s": round(requests / seconds, 1),
                    "p50_ms": round((percentile(took, 50) or 0) * 1000, 1),
                    "p99_ms": round((percentile(took, 99) or 0) * 1000, 1),
                    "answers": {},
                    "lost": 0,
                    "cpu_ms": CpuMeter.per_execution_ms(before, after, requests),
                }
            )
            return rows
        finally:
            if web is not None:
                web.terminate()
                web.wait(timeout=30)
            pool.stop_all()
            delete_queues(app, [PLAIN_QUEUE, *(usher_celery.queue_name(app, r) for r in refs)])
            app.close()
            engine.dispose()


def table(rows: list[dict[str, Any]], clients: int, web_processes: int) -> Table:
    out = Table(
        title=f"single requests: {clients} clients, usher web --processes {web_processes}",
        header_style="bold",
    )
    for column in ("kind", "req/s", "p50 ms", "p99 ms", "answers", "lost", "CPU ms/request"):
        out.add_column(column, justify="left" if column in ("kind", "answers") else "right")
    for row in rows:
        cpu = ", ".join(f"{part} {ms:.2f}" for part, ms in row["cpu_ms"].items() if ms >= 0.01)
        answers = ", ".join(f"{n:,} x {status}" for status, n in row["answers"].items())
        out.add_row(
            row["kind"],
            f"{row['per_s']:,.0f}",
            str(row["p50_ms"]),
            str(row["p99_ms"]),
            answers or "-",
            str(row["lost"]),
            cpu,
        )
    return out
