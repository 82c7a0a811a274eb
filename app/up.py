"""``usher up``: everything on one machine, stopped cleanly with Ctrl-C."""

from __future__ import annotations

import os
import secrets
import signal
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console

from app import db, packs

if TYPE_CHECKING:
    from app.cli import Runtime

console = Console()
DEMO_PACKS = "examples/packs"


def run(rt: Runtime, demo: bool, workers: int, concurrency: int) -> None:
    from app.cli import REPO_ROOT, spawn, terminate_all

    settings = rt.settings
    with console.status("preparing the database"):
        assert settings.database_url
        db.upgrade(settings.database_url)
    if demo:
        with db.unit_of_work(rt.engine) as session:
            loaded = packs.load(session, REPO_ROOT / DEMO_PACKS)
        console.print(f"loaded demo pack(s): {', '.join(s.name for s in loaded)}")
    token = settings.api_token or secrets.token_urlsafe(24)
    env = dict(
        os.environ,
        USHER_DATABASE_URL=settings.database_url,
        USHER_API_TOKEN=token,
        USHER_HOME=str(settings.home.resolve()),
    )
    commands = [["web"], ["beat"]] + [
        ["worker", "-c", str(concurrency), "-n", f"worker{i}@%h"] for i in range(1, workers + 1)
    ]
    processes = [spawn(command, env) for command in commands]
    console.print(f"dashboard: http://{settings.web_host}:{settings.web_port}/")
    console.print(f"admin API token: [bold]{token}[/bold]")
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        if demo:
            fire_demo(rt)
        while not stopping and all(p.poll() is None for p in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        stopping = True
    for command, process in zip(commands, processes, strict=True):
        if process.poll() is not None and not stopping:
            console.print(
                f"[red]usher {' '.join(command)} exited with code {process.returncode}; "
                "stopping everything (its output is above)[/red]"
            )
    console.print("stopping...")
    terminate_all(processes)
    rt.engine.dispose()
    if rt.embedded:
        db.stop_embedded(settings.home)
    console.print("stopped")


def fire_demo(rt: Runtime) -> None:
    from app import celery as usher_celery
    from policies import admission

    grants = []
    with db.unit_of_work(rt.engine) as session:
        for i in range(12):
            enqueued = admission.enqueue(
                session, rt.settings, "demo.slow_report", {"seconds": 2, "n": i}
            )
            grants += enqueued.grants
        for host in ("db1", "db2", "db1", "web1", "db2"):
            grants += admission.enqueue(
                session, rt.settings, "demo.restart_service", {"host": host}
            ).grants
    usher_celery.publish(rt.celery, grants)
    console.print("fired 17 demo executions; watch them with `usher queues`")
