"""Plain Celery's side of ``usher bench``: N ``send_task`` of the task of
``app.cli.bench.plain`` (which appends one line per completion to a file), timed from the
first request to the last completion on the same workers as Usher."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.progress import Progress

from app.cli.bench import measures
from app.cli.bench.measures import RssSampler
from app.cli.bench.report import Figures

PLAIN_QUEUE = "usher.bench.plain"
PLAIN_MODULE = "app.cli.bench.plain"
# The task's name in PLAIN_MODULE, which is not imported here: only the workers register it.
PLAIN_TASK = "usher.bench.plain"


def plain_queues(count: int) -> list[str]:
    """Plain Celery's queues: one, or one per action (routed the way Usher routes)."""
    return [PLAIN_QUEUE] if count == 1 else [f"{PLAIN_QUEUE}.{i}" for i in range(count)]


def run_plain(
    app: Any,
    path: Path,
    n: int,
    progress: Progress,
    rss: RssSampler,
    queues: list[str],
    batch: int,
) -> tuple[Figures, list[float]]:
    """(the figures, completions per second) of ``n`` plain tasks; the progress of the
    requests advances every ``batch``."""
    task = progress.add_task("celery: requests", total=n)
    start = time.time()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task(
                PLAIN_TASK,
                args=[i, str(path)],
                queue=queues[i % len(queues)],
                producer=producer,
            )
            if i % batch == 0:
                progress.advance(task, batch)
    intake_s = time.time() - start
    progress.remove_task(task)

    def done() -> int:
        return len(path.read_text().splitlines()) if path.exists() else 0

    measures.wait(done, n, "celery: run", progress, rss)
    stamps = [float(line.split()[1]) for line in path.read_text().splitlines()]
    seconds = max(stamps) - start
    figures = Figures(
        "plain celery", n, round(seconds, 2), round(n / seconds, 1), round(n / intake_s, 1)
    )
    return figures, measures.per_second(stamps, start)
