"""The execution events a transaction emitted, to publish once it commits.

A final status emits an ``usher.execution`` event from a trigger in Postgres
(``usher_execution_event``), which adds the event's id to the transaction's setting
``usher.emitted``. The statements that end executions on the hot path select that setting
beside their result (``finish``, ``release``), so reading it costs no round trip; the rare
others (a cancel, an expiry) read it with ``read``. An id missed here is not lost: the event
is stored, and the sweeper publishes an unprocessed event.
"""

from __future__ import annotations

from app import db, sql


def parse(setting: str | None) -> tuple[int, ...]:
    """The ids in the setting's text (``"12,13"``; empty or NULL when none)."""
    return tuple(int(part) for part in setting.split(",") if part) if setting else ()


def read(executor: db.Executor) -> tuple[int, ...]:
    """The ids emitted so far in this transaction."""
    (row,) = db.fetch(executor, sql.raw("emitted_events"), {})
    return parse(row.emitted)
