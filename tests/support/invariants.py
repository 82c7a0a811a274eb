"""The invariants of DESIGN.md live in ``app.cli.bench.invariants`` (the benchmark checks
them too)."""

from app.cli.bench.invariants import (
    TRIES,
    check_line,
    counter_mismatches,
    fifo_violations,
    max_active,
    queue_ids,
    slot_intervals,
    unfinished,
)

__all__ = [
    "TRIES",
    "check_line",
    "counter_mismatches",
    "fifo_violations",
    "max_active",
    "queue_ids",
    "slot_intervals",
    "unfinished",
]
