"""``usher up``: everything on one machine, stopped cleanly with Ctrl-C."""

from __future__ import annotations

import os
import secrets
import signal
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console

from app import db
from policies import packs

if TYPE_CHECKING:
    from app.cli.common import Runtime

console = Console()
DEMO_PACKS = "examples/packs"


def run(rt: Runtime, demo: bool, workers: int, concurrency: int) -> None:
    from app.cli.processes import REPO, spawn, terminate_all

    settings = rt.settings
    with console.status("preparing the database"):
        assert settings.database_url
        db.upgrade(settings.database_url)
    if demo:
        with db.unit_of_work(rt.engine) as session:
            loaded = packs.load(session, REPO / DEMO_PACKS)
        console.print(f"loaded demo pack(s): {', '.join(s.name for s in loaded)}")
    token = settings.api_token or secrets.token_urlsafe(24)
    env = dict(
        os.environ,
        USHER_DATABASE_URL=settings.database_url,
        USHER_API_TOKEN=token,
        USHER_HOME=str(settings.home.resolve()),
    )
    # Plain HTTP on this machine: a Secure cookie would never come back.
    env.setdefault("USHER_INSECURE_COOKIES", "true")
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
    # The workers' own grace for running executions, and time to release what is left: a
    # worker killed before then leaves executions running, to be run again.
    grace = settings.shutdown_grace_s + 10
    console.print(f"stopping... (running executions get up to {settings.shutdown_grace_s:g}s)")
    terminate_all(processes, grace_s=grace)
    rt.engine.dispose()
    if rt.embedded:
        db.stop_embedded(settings.home)
    console.print("stopped")


DEMO_EVENTS: list[tuple[str, dict[str, object]]] = [
    ("alert", {"severity": "high", "host": "db1"}),
    ("alert", {"severity": "critical", "host": "db2"}),
    ("alert", {"severity": "high", "host": "db1"}),
    ("alert", {"severity": "low", "host": "web1"}),
    ("alert", {"severity": "high", "host": "web2"}),
    ("data_changed", {"source": "crm"}),
    ("data_changed", {"source": "billing"}),
    ("data_changed", {"source": "inventory"}),
    ("order_created", {"id": 1001, "amount": 25.0}),
    ("order_created", {"id": 1002, "amount": -5.0}),
    ("order_created", {"id": 1003, "amount": 12.5}),
]


def fire_demo(rt: Runtime) -> None:
    """Send the demo events through the real path: stored, then matched by a worker."""
    from app import celery as usher_celery
    from policies import events

    ids = []
    with db.unit_of_work(rt.engine) as session:
        for trigger, payload in DEMO_EVENTS:
            ids.append(events.store(session, trigger, payload))
    for event_id in ids:
        usher_celery.send_event(rt.celery, event_id)
    console.print(
        f"sent {len(ids)} demo events; watch with `usher queues`, `usher executions list`, "
        "`usher dlq list`"
    )
