"""What ``usher bench`` measures a run with: percentiles, completions over time, the
hand-offs Postgres recorded, and the worker processes' memory and everyone's CPU from /proc;
and the progress shown while a run is waited for."""

from __future__ import annotations

import bisect
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from app.cli import processes
from app.cli.bench import statements


def percentile(values: list[float], q: int) -> float | None:
    """The ``q``-th percentile (inclusive method); a lone value is its own, none gives None."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def per_second(stamps: list[float], start: float, step: float = 0.5) -> list[float]:
    """Completions per second in buckets of ``step`` seconds from ``start``."""
    if not stamps:
        return []
    buckets = [0] * (int((max(stamps) - start) / step) + 1)
    for stamp in stamps:
        buckets[max(int((stamp - start) / step), 0)] += 1
    return [count / step for count in buckets]


def handoffs(engine: Engine, refs: list[str]) -> tuple[list[float], list[float]]:
    """(completion -> next start, completion -> next grant) in ms, for every execution that a
    completion of its own line granted (the grant is in the release's transaction, so the
    releasing completion is the line's last ``finished_at`` at or before ``scheduled_at``)."""
    with engine.connect() as conn:
        rows = conn.execute(statements.query("run_stamps"), {"refs": refs}).all()
    finishes: dict[int, list[Any]] = {}
    for r in rows:
        if r.finished_at is not None:
            finishes.setdefault(r.queue_id, []).append(r.finished_at)
    for stamps in finishes.values():
        stamps.sort()
    to_start, to_grant = [], []
    for r in rows:
        if r.started_at is None or r.scheduled_at is None:
            continue
        line = finishes.get(r.queue_id, [])
        i = bisect.bisect_right(line, r.scheduled_at)
        if not i or line[i - 1] < r.enqueued_at:
            continue  # granted at its request, not by a completion
        to_start.append((r.started_at - line[i - 1]).total_seconds() * 1000)
        to_grant.append((r.scheduled_at - line[i - 1]).total_seconds() * 1000)
    return to_start, to_grant


class RssSampler:
    """Peak resident memory of the workers' main and pool processes, read from /proc."""

    def __init__(self, pool: processes.Pool) -> None:
        self.pool = pool
        self.peak: dict[str, float] = {"worker main": 0.0, "pool process": 0.0}
        self.start: dict[str, float] = {}

    def sample(self) -> None:
        for worker in self.pool.workers:
            self._note("worker main", worker.process.pid)
            for child in worker.child_pids():
                self._note("pool process", child)
        if not self.start:
            # Idle workers, before any backlog: what the peak is compared with.
            self.start = {f"{role} at start": value for role, value in self.peak.items()}

    def _note(self, role: str, pid: int) -> None:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                self.peak[role] = max(self.peak[role], int(line.split()[1]) / 1024)


# Server processes by command name, and the part of the system they are.
SERVERS = {"postgres": "postgres", "beam.smp": "broker", "redis-server": "broker"}


class CpuMeter:
    """CPU seconds used by each part of the system (from /proc), to split a run's cost.

    Postgres and the broker are counted whole (every process of their user), so nothing
    else may use them during the run for the split to be exact.
    """

    def __init__(self, pool: processes.Pool, others: dict[int, str] | None = None) -> None:
        self.pool = pool
        self.others = others or {}  # pid -> part: that process and its children
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> dict[int, tuple[str, float]]:
        """{pid: (part, CPU seconds so far)} for every process of a part."""
        found: dict[int, tuple[str, float]] = {}
        workers = {w.process.pid: "worker main" for w in self.pool.workers}
        for worker in self.pool.workers:
            workers.update(dict.fromkeys(worker.child_pids(), "pool processes"))
        workers[os.getpid()] = "benchmark client"
        for pid, role in self.others.items():
            workers[pid] = role
            workers.update(dict.fromkeys(processes.children(pid), role))
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            part = workers.get(int(entry.name)) or SERVERS.get(comm)
            if part:
                # utime and stime, the 14th and 15th fields of /proc/<pid>/stat
                found[int(entry.name)] = (part, (int(fields[11]) + int(fields[12])) / self.tick)
        return found

    @staticmethod
    def per_execution_ms(
        before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], n: int
    ) -> dict[str, float]:
        """Each part's CPU between two readings (a process that exited in between is lost)."""
        used: dict[str, float] = {}
        for pid, (part, seconds) in after.items():
            used[part] = used.get(part, 0.0) + seconds - before.get(pid, (part, 0.0))[1]
        return {part: round(used[part] * 1000 / n, 3) for part in sorted(used)}


def progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def wait(done: Callable[[], int], n: int, label: str, progress: Progress, rss: RssSampler) -> None:
    """Until ``done()`` counts ``n``, showing it and sampling the workers' memory."""
    task = progress.add_task(label, total=n)
    while (count := done()) < n:
        progress.update(task, completed=count)
        rss.sample()
        time.sleep(0.25)
    progress.remove_task(task)
