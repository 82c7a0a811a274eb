"""A plain Celery task with no Usher around it: the baseline ``usher bench`` compares with."""

from __future__ import annotations

import time

from celery import shared_task

PLAIN = "usher.bench.plain"


@shared_task(name=PLAIN, acks_late=True, ignore_result=True)
def plain(index: int, path: str) -> None:
    # One O_APPEND write per task: the cheapest completion record that survives processes.
    with open(path, "a") as out:
        out.write(f"{index} {time.time()}\n")
