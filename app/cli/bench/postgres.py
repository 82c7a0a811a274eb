"""How many execution lifecycles one Postgres carries, with no broker and no Celery.

``usher bench --postgres-only``: on a scratch database, N executions are enqueued in
batches; then K client processes each take granted executions and do exactly what a worker
does per execution, ``claim`` then ``finish`` (one statement each, on ``db.Hot``), and
follow the grants each finish returns. The rate is Postgres's ceiling for Usher's
lifecycle on these lines, from clients on the same machine. Beside it, what a lifecycle
costs Postgres whatever the machine's speed: the WAL it writes (``pg_current_wal_lsn()``
before and after) and its CPU, every Postgres process's (``server_cpu_ms``).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from app import config, db
from app.cli.bench import scratch
from policies import admission, intake


def _client(url: str, settings: config.Settings, grants: list[tuple[int, int]], out: Any) -> None:

    hot = db.Hot(url, durable=settings.durable_transitions)
    todo, done, start = list(grants), 0, time.perf_counter()
    while todo:
        execution_id, attempt = todo.pop()
        claim = partial(
            admission.claim, execution_id=execution_id, attempt=attempt, worker="b", lease_s=60
        )
        if hot.run(claim) is None:
            continue
        ended = admission.Ended(execution_id, attempt, "succeeded")
        finish = partial(admission.finish, settings=settings, ended=ended)
        finished = hot.run(finish)
        assert finished is not None, "bench lines have no rate limit"
        todo.extend((g.execution_id, g.attempt) for g in finished.grants)
        done += 1
    hot.close()
    out.put((done, time.perf_counter() - start))


def server_cpu_s() -> float:
    """CPU seconds of every Postgres process so far, the exited backends' too (their
    parent, the postmaster, holds those as its children's time)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat[stat.find("(") + 1 : stat.rfind(")")] != "postgres":
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if fields[1] == "1" or not _is_postgres(int(fields[1])):  # the postmaster
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / tick


def _is_postgres(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.find("(") + 1 : stat.rfind(")")] == "postgres"


def _wal(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_current_wal_lsn() - '0/0'")).scalar_one())


def measure(
    settings: config.Settings,
    executions: int = 10_000,
    actions: int = 10,
    limit: int = 5,
    clients: int = 4,
    listen: bool = False,
) -> dict[str, Any]:
    """{"lifecycles_per_s", "clients", "actions", "limit", "execution_events"} for one run
    (``listen``: with a rule on usher.execution, so each finish writes an event)."""

    with scratch.scratch(settings) as (url, folder):
        engine = db.make_engine(url)
        try:
            pack = scratch.load_pack(engine, folder, actions, limit, listen=listen)
            local = settings.model_copy(update={"database_url": url})
            grants: list[tuple[int, int]] = []
            wal = [_wal(engine)]
            for offset in range(0, executions, 1000):
                requests = [
                    {"action": f"{pack}.noop{i % actions}"}
                    for i in range(offset, min(offset + 1000, executions))
                ]
                with db.unit_of_work(engine) as session:
                    taken = intake.enqueue_many(session, local, requests)
                grants += [(g.execution_id, g.attempt) for g in taken.grants]
            wal.append(_wal(engine))
        except BaseException:
            engine.dispose()
            raise
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        workers = [
            context.Process(target=_client, args=(url, local, grants[i::clients], out))
            for i in range(clients)
        ]
        start, cpu = time.perf_counter(), server_cpu_s()
        for worker in workers:
            worker.start()
        results = [out.get(timeout=600) for _ in workers]
        for worker in workers:
            worker.join()
        seconds = time.perf_counter() - start
        cpu = server_cpu_s() - cpu
        wal.append(_wal(engine))
        engine.dispose()
    done = sum(r[0] for r in results)
    assert done == executions, f"{done} of {executions} lifecycles completed"
    return {
        "lifecycles_per_s": round(done / seconds, 1),
        "server_cpu_ms": round(cpu * 1000 / done, 3),
        "wal_bytes_per_enqueue": round((wal[1] - wal[0]) / done),
        "wal_bytes_per_lifecycle": round((wal[2] - wal[1]) / done),
        "clients": clients,
        "actions": actions,
        "limit": limit,
        "execution_events": listen,
    }
