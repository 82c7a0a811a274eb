"""``usher up`` as a newcomer runs it: a subprocess in its own session (a shell's job), read
line by line, stopped with a Ctrl-C to its process group as a terminal sends it.

Ctrl-C lets a running execution finish, once; a second ``usher up`` on the same USHER_HOME is
refused and leaves the first one alone (its embedded Postgres included); a restart keeps the
admin token and does not send the demo events again.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app import config, db

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]
GRACE_S = 30  # USHER_SHUTDOWN_GRACE_S's default, which usher up gives the workers
STOP_MARGIN_S = 10  # usher up's STOP_S past the grace, before it kills a worker
READY_S = 120
DASHBOARD = re.compile(r"dashboard\s+(http://\S+)")
TOKEN = re.compile(r"admin token\s+(\S+)")
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Up:
    """A running ``usher up``: its output (stdout and stderr) read on a thread."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "up", *args],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._new.put(raw.decode(errors="replace").rstrip("\n"))
        self._new.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout_s: float = READY_S) -> re.Match[str]:
        for seen in self.lines:
            if found := pattern.search(seen):
                return found
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if found := pattern.search(line):
                return found
        raise AssertionError(f"no {pattern.pattern!r} in the output:\n{self.output()}")

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to the foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def finish(self, timeout_s: float) -> int:
        code = self.process.wait(timeout=timeout_s)
        while (line := self._new.get(timeout=10)) is not None:  # the rest of its output
            self.lines.append(line)
        return code

    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def start_up() -> Iterator[Callable[..., Up]]:
    """Start ``usher up ARGS`` with an environment; what a failing test leaves is stopped."""
    started: list[Up] = []

    def start(env: dict[str, str], *args: str) -> Up:
        up = Up(env, *args)
        started.append(up)
        return up

    yield start
    for up in started:
        if up.process.poll() is None:
            up.process.send_signal(signal.SIGTERM)
            try:
                up.process.wait(timeout=GRACE_S + STOP_MARGIN_S + 20)
            except subprocess.TimeoutExpired:
                os.killpg(up.process.pid, signal.SIGKILL)  # its children get SIGTERM
                up.process.wait(timeout=10)


@pytest.fixture
def own_home() -> Iterator[Path]:
    """A data directory outside pytest's temporary tree, which another pytest session may
    prune (or close to other users) while the embedded Postgres under it runs."""
    home = Path(tempfile.mkdtemp(prefix="usher-test-up-"))
    yield home
    db.stop_embedded(home)  # if a failed test left it running
    shutil.rmtree(home, ignore_errors=True)


# The demo's own events: the heartbeat schedule and every execution's end make more.
OUTSIDE_EVENTS = (
    "SELECT count(*) FROM events WHERE trigger NOT IN ('usher.schedule', 'usher.execution')"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def up_env(home: Path, database_url: str | None, broker_url: str | None) -> dict[str, str]:
    """Only these USHER_* settings: a fresh data directory, this test's database (None: the
    embedded Postgres under ``home``) and broker (None: the file broker under ``home``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USHER_")}
    env.update(USHER_HOME=str(home), USHER_WEB_HOST="127.0.0.1", USHER_WEB_PORT=str(free_port()))
    if database_url:
        env["USHER_DATABASE_URL"] = database_url
    if broker_url:
        env["USHER_BROKER_URL"] = broker_url
    return env


def get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with DIRECT.open(request, timeout=10) as response:
        return int(response.status)


def submit(base: str, token: str, action: str, parameters: dict[str, Any]) -> int:
    request = urllib.request.Request(
        f"{base}api/v1/executions",
        data=json.dumps({"action": action, "parameters": parameters}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with DIRECT.open(request, timeout=10) as response:
        return int(json.load(response)["id"])


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        time.sleep(0.2)


# The demo's work is done: every event matched, every execution it made finished.
SETTLED = """
SELECT NOT EXISTS (SELECT FROM events WHERE processed_at IS NULL AND failed_at IS NULL)
   AND NOT EXISTS (
       SELECT FROM executions WHERE status IN ('queued', 'scheduled', 'running', 'retrying'))
"""


def test_ctrl_c_lets_a_running_execution_finish_once(
    settings: config.Settings, engine: Engine, start_up: Callable[..., Up]
) -> None:
    # Given usher up --demo on a fresh data directory, its demo work done
    up = start_up(up_env(settings.home, settings.database_url, settings.broker_url), "--demo")
    base = up.wait_for(DASHBOARD)[1]
    token = up.wait_for(TOKEN)[1]
    assert get(base) == 200  # the frame comes once the server answers
    wait_until(lambda: scalar(engine, SETTLED), 90, "the demo's events and executions finish")
    # ... and a 20 s execution running
    execution = submit(base, token, "demo.slow_report", {"seconds": 20})
    status = "SELECT status FROM executions WHERE id = :id"
    wait_until(lambda: scalar(engine, status, id=execution) == "running", 30, "it runs")

    # When Ctrl-C
    began = time.monotonic()
    up.ctrl_c()
    code = up.finish(timeout_s=GRACE_S + STOP_MARGIN_S + 20)
    took = time.monotonic() - began

    # Then it finished once, nothing was left to run again, and usher up exited cleanly
    assert code == 0, up.output()
    assert took < GRACE_S + STOP_MARGIN_S, up.output()
    row = "SELECT status || ' ' || attempt FROM executions WHERE id = :id"
    assert scalar(engine, row, id=execution) == "succeeded 1"
    attempts = (
        "SELECT string_agg(attempt || ' ' || outcome, ',') FROM attempts WHERE execution_id = :id"
    )
    assert scalar(engine, attempts, id=execution) == "1 succeeded"
    # Granted but not started (the demo's 30 s heartbeat may fire just before beat stops)
    # is no harm: it runs at the next start. A running one left would run twice.
    left = "SELECT string_agg(id || ' ' || status, ', ') FROM executions WHERE status = 'running'"
    assert scalar(engine, left) is None
    # ... and the console stayed quiet: the grace said once, no banner, no tracebacks
    console = up.output()
    assert "Traceback" not in console and "celery" not in console.lower(), console
    assert console.count("get up to 30s to finish") == 1, console
    assert len(up.lines) < 20, console
    worker_log = (settings.home / "logs" / "worker1.log").read_text()
    assert worker_log.count("Warm shutdown") == 1
    assert worker_log.count("finishing running executions") == 1


def test_a_second_up_on_the_same_home_is_refused_and_leaves_the_first_alone(
    own_home: Path, broker_url: str | None, start_up: Callable[..., Up]
) -> None:
    # Given usher up --demo on the embedded Postgres under its USHER_HOME (the one a second
    # usher up would join, and stop on its way out)
    home = own_home
    env = up_env(home, None, broker_url)
    first = start_up(env, "--demo")
    base = first.wait_for(DASHBOARD)[1]
    token = first.wait_for(TOKEN)[1]
    kept = {name: (home / name).read_text() for name in ("admin-token", "demo-sent")}
    engine = db.engine_for(db.embedded_url(home))  # joins the running server
    events = OUTSIDE_EVENTS
    assert scalar(engine, events) == 11

    # When a second one starts on the same directory
    began = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "app.cli", "up", "--demo"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    took = time.monotonic() - began

    # Then it is refused at once, in one line naming the holder
    assert second.returncode != 0
    assert took < 10
    assert second.stdout == ""
    message = second.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"pid {first.process.pid}" in message and f":{env['USHER_WEB_PORT']}/" in message
    # ... and the first one runs on untouched: its Postgres, its token, no demo sent again
    assert get(f"{base}healthz") == 200
    assert get(f"{base}api/v1/executions?limit=1", token) == 200
    assert {name: (home / name).read_text() for name in kept} == kept
    assert scalar(engine, events) == 11
    engine.dispose()
    first.ctrl_c()
    assert first.finish(timeout_s=GRACE_S + STOP_MARGIN_S + 20) == 0, first.output()
    assert not (home / "pg" / "postmaster.pid").exists()  # the first one stops its Postgres


def test_a_restart_keeps_the_token_and_sends_the_demo_once(
    settings: config.Settings, engine: Engine, start_up: Callable[..., Up]
) -> None:
    env = up_env(settings.home, settings.database_url, settings.broker_url)
    events = OUTSIDE_EVENTS

    def one_run(*args: str) -> tuple[str, str]:
        up = start_up(env, *args)
        base, token = up.wait_for(DASHBOARD)[1], up.wait_for(TOKEN)[1]
        assert get(f"{base}api/v1/executions?limit=1", token) == 200
        up.ctrl_c()
        assert up.finish(timeout_s=GRACE_S + STOP_MARGIN_S + 20) == 0, up.output()
        return token, up.output()

    # Given a first run
    token, _ = one_run("--demo")
    assert scalar(engine, events) == 11
    assert (settings.home / "admin-token").stat().st_mode & 0o777 == 0o600

    # When it runs again on the same directory
    again, output = one_run("--demo")

    # Then the same token works, and the demo events were not sent twice
    assert again == token
    assert "the one kept in" in output
    assert scalar(engine, events) == 11
    assert "--again" in output
    # ... unless asked
    one_run("--demo", "--again")
    assert scalar(engine, events) == 22
