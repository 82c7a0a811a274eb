"""``usher web --processes N`` as a process (``app.cli.web_processes``): N children on one
port, a dead child replaced, SIGTERM stopping them all; and the durability of intake when a
web process is SIGKILLed in the middle of a 32-client load: every request answered 202 is
in Postgres, none is there twice, and the line's counters and order hold."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from app import config
from app.cli import processes
from tests.support import api, invariants, packs
from tests.support.flow import wait_until

pytestmark = [pytest.mark.timeout(240), pytest.mark.processes]


@pytest.fixture
def settings(api_settings: config.Settings) -> config.Settings:
    return api_settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def web(settings: config.Settings, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    port = _free_port()
    env = processes.environment(settings) | {
        "USHER_WEB_HOST": "127.0.0.1",
        "USHER_WEB_PORT": str(port),
        "USHER_API_TOKEN": api.TOKEN,
    }
    (tmp_path / "logs").mkdir(exist_ok=True)
    parent = processes.launch(["web", "--processes", "2"], env, tmp_path / "logs" / "web.log")
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, 60, what="usher web --processes 2 to answer")
    yield parent, base
    if parent.poll() is None:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)


def test_two_processes_share_the_port_and_a_dead_one_is_replaced(web: tuple[Any, str]) -> None:
    parent, base = web
    wait_until(lambda: len(processes.children(parent.pid)) == 2, 30, what="two children")
    first = processes.children(parent.pid)
    os.kill(first[0], signal.SIGKILL)
    wait_until(
        lambda: len(set(processes.children(parent.pid)) - set(first)) == 1,
        30,
        what="the dead child to be replaced",
    )
    wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, 30, what="answers")
    # SIGTERM stops the parent and every child
    children = processes.children(parent.pid)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 0
    for pid in children:
        wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 30, what="children gone")


def test_a_web_process_killed_under_load_loses_no_answered_request(
    web: tuple[Any, str], engine: Engine, tmp_path: Path
) -> None:
    parent, base = web
    policy = {"concurrency": 1, "max_queue_length": 100_000}
    name = packs.load(engine, tmp_path, [{"name": "one", "runner": "noop", "policy": policy}])
    local = threading.local()
    accepted: list[int] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 6

    def client(_: int) -> None:
        http = httpx.Client(base_url=base, headers=api.AUTH, timeout=10)
        local.http = http
        while time.monotonic() < stop_at:
            try:
                answer = http.post("/api/v1/executions", json={"action": f"{name}.one"})
            except httpx.HTTPError:
                continue  # its web process was killed: no answer, no promise
            if answer.status_code == 202:
                with lock:
                    accepted.append(answer.json()["id"])
        http.close()

    with ThreadPoolExecutor(32) as pool:
        running = [pool.submit(client, n) for n in range(32)]
        time.sleep(2)
        # When one web process is killed in the middle of it
        os.kill(processes.children(parent.pid)[0], signal.SIGKILL)
        for done in running:
            done.result()
    # Then every request answered 202 is stored, once, and the line holds
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT id FROM executions")).scalars().all()
    assert len(accepted) > 100
    assert set(accepted) <= set(stored) and len(set(accepted)) == len(accepted)
    assert len(stored) == len(set(stored))
    lines = invariants.queue_ids(engine, f"{name}.one")
    assert invariants.counter_mismatches(engine) == []
    with engine.connect() as conn:
        seqs = (
            conn.execute(
                text("SELECT seq FROM executions WHERE queue_id = ANY(:q) ORDER BY seq"),
                {"q": lines},
            )
            .scalars()
            .all()
        )
    assert seqs == list(range(1, len(seqs) + 1))  # gap-free: a killed batch took no seq
