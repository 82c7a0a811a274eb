"""Flower answers on 127.0.0.1 behind basic auth and lists the worker (real broker)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from app import config
from tests.support.workers import REPO, Pool, environment

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_flower_needs_auth_and_lists_the_worker(
    settings: config.Settings, worker_pool: Pool
) -> None:
    worker = worker_pool.start(concurrency=1, name="flowered")
    port = _free_port()
    env = environment(settings) | {
        "USHER_FLOWER_BASIC_AUTH": "admin:s3cret",
        "USHER_FLOWER_PORT": str(port),
    }
    flower = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "flower"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api/workers"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                anonymous = httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "Flower did not answer"
                time.sleep(0.3)
        assert anonymous.status_code == 401
        listed: dict[str, object] = {}
        while worker.name not in "".join(listed):
            # Flower started together with the worker lists it only after a refresh. A
            # refresh asks every worker over the broker: on a loaded machine one can take
            # longer than the client's timeout, and the next try is the answer.
            assert time.monotonic() < deadline + 60, listed
            try:
                listed = httpx.get(
                    url, params={"refresh": 1}, auth=("admin", "s3cret"), timeout=10
                ).json()
            except httpx.TransportError:
                continue
            time.sleep(0.5)
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(timeout=15)


def test_flower_refuses_to_start_without_auth(settings: config.Settings) -> None:
    env = environment(settings)
    env.pop("USHER_FLOWER_BASIC_AUTH", None)
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "flower"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "USHER_FLOWER_BASIC_AUTH" in done.stderr
