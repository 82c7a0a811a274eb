"""A broker restart and a Postgres restart lose no execution and break no invariant.

They restart the machine's own services (the ones .ci/run checks), so they run only when
those are the services under test and their control commands exist; otherwise they skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

import web
from app import config
from tests.support import invariants, packs
from tests.support.flow import statuses, submit, wait_final, wait_until
from tests.support.workers import Pool

pytestmark = [pytest.mark.broker, pytest.mark.timeout(400), pytest.mark.processes]


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _restart_broker(url: str) -> None:
    if url.startswith("amqp://") and shutil.which("rabbitmqctl"):
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=60)
        time.sleep(3)
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
        subprocess.run(
            ["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=120
        )
    elif url.startswith("redis://") and shutil.which("redis-cli"):
        subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"], capture_output=True, timeout=30
        )
        time.sleep(2)
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=True,
            timeout=30,
        )
        wait_until(lambda: _answers(6379), 30, what="Redis back")
    else:
        pytest.skip(
            "needs USHER_TEST_BROKER_URL naming the local RabbitMQ or Redis "
            "(rabbitmqctl / redis-cli on PATH); the filesystem broker has no server"
        )


def _local_postgres(url: str) -> str:
    parsed = make_url(url)
    versions = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
    if (
        parsed.host not in ("127.0.0.1", "localhost")
        or not shutil.which("pg_ctlcluster")
        or len(versions) != 1
    ):
        pytest.skip("needs USHER_TEST_DATABASE_URL naming this machine's Postgres cluster")
    return versions[0]


def _load(engine: Engine, tmp_path: Path) -> str:
    return (
        packs.load(
            engine,
            tmp_path,
            [
                {
                    "name": "steady",
                    "runner": "sleep",
                    "policy": {
                        "concurrency": 2,
                        "retry": {"max_retries": 10, "strategy": "fixed", "initial_delay_ms": 200},
                    },
                    "parameters": {"type": "object", "properties": {"seconds": {"type": "number"}}},
                }
            ],
        )
        + ".steady"
    )


def test_a_broker_restart_loses_nothing(
    engine: Engine, settings: config.Settings, celery_app: Any, tmp_path: Path
) -> None:
    if not settings.broker_url:
        pytest.skip("the embedded filesystem broker has no server to restart")
    ref = _load(engine, tmp_path)
    pool = Pool(settings, tmp_path / "logs")
    try:
        pool.start(concurrency=2)
        pool.start_beat()
        submit(engine, settings, celery_app, ref, [{"seconds": 0.1}] * 30)
        wait_until(lambda: statuses(engine, ref).get("succeeded", 0) >= 5, 60, what="progress")
        _restart_broker(settings.broker_url)
        restarted = time.monotonic()
        submit(engine, settings, celery_app, ref, [{"seconds": 0.1}] * 10)
        wait_final(engine, [ref], timeout=120)
        print(f"all done {time.monotonic() - restarted:.1f}s after the broker came back")
    finally:
        pool.stop_all()
    assert statuses(engine, ref) == {"succeeded": 40}
    invariants.check_line(engine, ref, limit=2)


def test_a_postgres_restart_loses_nothing_and_the_api_never_500s(
    engine: Engine, db_url: str, settings: config.Settings, celery_app: Any, tmp_path: Path
) -> None:
    version = _local_postgres(db_url)
    ref = _load(engine, tmp_path)
    api_settings = settings.model_copy(update={"api_token": "t"})
    client = web.create_app(api_settings, celery_app).test_client()
    answers: list[int] = []
    stop = threading.Event()

    def poll_api() -> None:
        while not stop.is_set():
            try:
                answers.append(
                    client.get(
                        f"/api/v1/actions/{ref}/queue-stats", headers={"Authorization": "Bearer t"}
                    ).status_code
                )
            except Exception:  # pragma: no cover - a raised error is a failure below
                answers.append(-1)
            time.sleep(0.1)

    pool = Pool(settings, tmp_path / "logs")
    poller = threading.Thread(target=poll_api, daemon=True)
    try:
        pool.start(concurrency=2)
        pool.start_beat()
        submit(engine, settings, celery_app, ref, [{"seconds": 0.2}] * 30)
        wait_until(lambda: statuses(engine, ref).get("succeeded", 0) >= 5, 60, what="progress")
        poller.start()
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        wait_until(lambda: _answers(5432), 60, what="Postgres back")
        restarted = time.monotonic()
        wait_final(engine, [ref], timeout=120)
        print(f"all done {time.monotonic() - restarted:.1f}s after Postgres came back")
    finally:
        stop.set()
        pool.stop_all()
    assert statuses(engine, ref) == {"succeeded": 30}
    invariants.check_line(engine, ref, limit=2)
    assert set(answers) <= {200, 503}, sorted(set(answers))
