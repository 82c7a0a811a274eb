"""Start and stop ``usher`` processes: for ``usher up``, ``usher bench`` and the tests."""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app import config

REPO = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def environment(settings: config.Settings) -> dict[str, str]:
    """The settings as USHER_* variables for a child process (nothing inherited beside them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USHER_")}
    env.update(
        USHER_DATABASE_URL=settings.database_url or "",
        USHER_HOME=str(settings.home),
        USHER_LEASE_S=str(settings.lease_s),
        USHER_DEFAULT_MAX_CONCURRENT=str(settings.default_max_concurrent),
        USHER_SWEEP_INTERVAL_S=str(settings.sweep_interval_s),
        USHER_SHUTDOWN_GRACE_S=str(settings.shutdown_grace_s),
        USHER_DURABLE_TRANSITIONS=str(settings.durable_transitions).lower(),
        USHER_EVENT_TIME_LIMIT_S=str(settings.event_time_limit_s),
        USHER_EVENT_MAX_FAILURES=str(settings.event_max_failures),
        USHER_MAX_CHAIN_DEPTH=str(settings.max_chain_depth),
        USHER_OUTPUT_MAX_BYTES=str(settings.output_max_bytes),
        USHER_RETENTION_S=str(settings.retention_s),
        USHER_AUDIT_RETENTION_S=str(settings.audit_retention_s),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    )
    if settings.broker_url:
        env["USHER_BROKER_URL"] = settings.broker_url
    if settings.secrets_dir is not None:
        env["USHER_SECRETS_DIR"] = str(settings.secrets_dir)
    return env


def launch(
    args: list[str], env: dict[str, str], log: Path, wrap: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """``usher ARGS...`` in its own session (so that its whole group can be killed), its
    output to ``log``; ``wrap`` runs it through a command that execs it (``ip netns exec
    NAME``: a test's worker host)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*wrap, sys.executable, "-m", "app.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def child_pids(self) -> list[int]:
        return children(self.process.pid)


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes."""
    out = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


@dataclass
class Pool:
    """Worker processes, each in its own session so teardown can kill the whole group."""

    settings: config.Settings
    log_dir: Path
    workers: list[Worker] = field(default_factory=list)
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)
    wrap: tuple[str, ...] = ()  # as ``launch`` takes it: each process of the pool so

    def start(
        self,
        concurrency: int = 2,
        actions: str = "",
        name: str | None = None,
        ready_s: float = 60,
        extra: tuple[str, ...] = (),
    ) -> Worker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = name or f"w{len(self.workers) + 1}-{uuid.uuid4().hex[:6]}"
        log = self.log_dir / f"{name}.log"
        args = ["worker", "-c", str(concurrency)]
        if actions:
            args += ["--actions", actions]
        args += ["-n", f"{name}@%h", "--without-gossip", "--without-mingle", *extra]
        process = launch(args, environment(self.settings), log, self.wrap)
        worker = Worker(name, process, log)
        self.workers.append(worker)
        deadline = time.monotonic() + ready_s
        while " ready." not in worker.text():
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop_all()
                raise RuntimeError(f"worker {name} did not start:\n{worker.text()[-3000:]}")
            time.sleep(0.2)
        return worker

    def start_beat(self) -> subprocess.Popen[bytes]:
        """``usher beat`` (the sweeper's schedule), stopped by ``stop_all``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        beat = launch(["beat"], environment(self.settings), self.log_dir / "beat.log", self.wrap)
        self.others.append(beat)
        return beat

    def kill(self, worker: Worker) -> None:
        """SIGKILL a whole worker (main process and pool): a host that died."""
        try:
            os.killpg(worker.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.process.wait(timeout=10)
        self.workers.remove(worker)

    def stop_all(self, grace_s: float = 10) -> None:
        for other in self.others:
            try:
                os.killpg(other.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                other.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(other.pid, signal.SIGKILL)
                other.wait(timeout=10)
        self.others.clear()
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for worker in self.workers:
            try:
                worker.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(worker.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            worker.process.wait(timeout=10)
        self.workers.clear()


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``usher ARGS...`` for ``usher up``, its output appended to ``log``.

    In its own session: a Ctrl-C in the terminal reaches ``usher up`` alone, which stops
    each child once and in order (a worker that got the terminal's SIGINT and then a second
    signal would cut its running executions short). On Linux it gets SIGTERM if ``usher up``
    dies, so a killed ``usher up`` leaves no orphans.
    """
    on_parent_death = None
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        on_parent_death = functools.partial(libc.prctl, PR_SET_PDEATHSIG, signal.SIGTERM)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=on_parent_death,
        )


def stop(
    processes: list[subprocess.Popen[bytes]],
    grace_s: float,
    waiting: Callable[[], None] = lambda: None,
) -> list[subprocess.Popen[bytes]]:
    """SIGTERM each process once, wait up to ``grace_s`` (calling ``waiting`` meanwhile),
    then SIGKILL the whole group of any still running; return those that were killed.

    The signal goes to the main process only: a Celery worker's pool processes die of a
    SIGTERM (they reset its handler), taking their running executions with them.
    """
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        waiting()
        time.sleep(0.1)
    killed = [p for p in processes if p.poll() is None]
    for process in killed:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
    return killed


def follow(logs: dict[str, Path], write: Callable[[str], None]) -> threading.Event:
    """Pass the lines appended to ``logs`` from now on to ``write``, each prefixed with its
    name, until the returned event is set (``usher up --verbose``)."""
    done = threading.Event()
    offsets = {name: path.stat().st_size if path.exists() else 0 for name, path in logs.items()}
    partial = dict.fromkeys(logs, b"")

    def tail() -> None:
        while not done.wait(0.2):
            for name, path in logs.items():
                if not path.exists():
                    continue
                with path.open("rb") as log:
                    log.seek(offsets[name])
                    chunk = log.read()
                offsets[name] += len(chunk)
                *lines, partial[name] = (partial[name] + chunk).split(b"\n")
                for line in lines:
                    write(f"{name} | {line.decode(errors='replace')}")

    threading.Thread(target=tail, name="usher-up-follow", daemon=True).start()
    return done
