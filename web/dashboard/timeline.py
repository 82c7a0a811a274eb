"""An execution's timeline: each attempt's way on one time axis. A retry first backs off (from
the end of the attempt before it until it falls due), then waits in its line, is scheduled
and runs; the first attempt joins its line when it is enqueued."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from web.formatting import as_datetime, duration

KINDS = (
    ("backoff", "backoff"),
    ("wait", "waiting in line"),
    ("dispatch", "scheduled"),
    ("run", "running"),
)


def _current(execution: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The attempt under way (or the last, when it is not in the history yet)."""
    finished = execution["finished_at"]
    return {
        "attempt": execution["attempt"],
        "outcome": execution["status"],
        "queued_at": extra["queued_at"] or execution["enqueued_at"],
        "scheduled_at": execution["scheduled_at"],
        "started_at": execution["started_at"],
        "finished_at": finished,
        "worker": execution["worker"],
        "error": execution["error"] if finished else None,
        "current": True,
    }


def _segments(marks: list[datetime | None], x: Any) -> list[dict[str, Any]]:
    """From each mark that is passed to the next one: the last mark is where it stops."""
    segments = []
    for i, (kind, label) in enumerate(KINDS):
        begin = marks[i]
        if begin is None:
            continue
        end = next(m for m in marks[i + 1 :] if m is not None)
        left = x(begin)
        segments.append(
            {
                "kind": kind,
                "x": left,
                "w": max(round(x(end) - left, 2), 0.2),
                "title": f"{label} {duration((end - begin).total_seconds())}",
            }
        )
    return segments


def steps(execution: dict[str, Any], extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Each attempt with its segments on a 0-100 axis (``x`` and ``w`` in percent), how long
    it backed off, waited in line and ran. ``scale_start`` and ``scale_span`` on the first."""
    found = [dict(a) for a in execution["attempts"]]
    if not any(a["attempt"] == execution["attempt"] for a in found):
        found.append(_current(execution, extra))
    now = datetime.now(UTC)
    for before, step in zip([None, *found], found, strict=False):
        step["stop"] = as_datetime(step["finished_at"]) or now
        # A retry's queued_at is when its backoff ends: until then it has not joined its line.
        step["due_at"] = as_datetime(step["queued_at"])
        for key in ("queued_at", "scheduled_at", "started_at"):
            moment = as_datetime(step[key])
            step[key] = moment if moment is not None and moment <= step["stop"] else None
        step["backed_off_from"] = as_datetime(before["finished_at"]) if before else None

    start = min(s["backed_off_from"] or s["queued_at"] or s["stop"] for s in found)
    span = max((max(s["stop"] for s in found) - start).total_seconds(), 0.001)
    found[0].update(scale_start=start, scale_span=span)

    def x(moment: datetime) -> float:
        return round(max(0.0, min(100.0, (moment - start).total_seconds() / span * 100)), 2)

    for step in found:
        marks = [step["backed_off_from"], step["queued_at"], step["scheduled_at"]]
        step["segments"] = _segments([*marks, step["started_at"], step["stop"]], x)
        backed_off, due, joined = step["backed_off_from"], step["due_at"], step["queued_at"]
        step["backoff_s"] = (due - backed_off).total_seconds() if backed_off and due else None
        waiting_to_fall_due = due is not None and joined is None and not step["finished_at"]
        step["due_in_s"] = (due - now).total_seconds() if waiting_to_fall_due else None
        left_line = step["scheduled_at"] or step["stop"]
        step["waited_s"] = (left_line - joined).total_seconds() if joined else None
        started = step["started_at"]
        step["ran_s"] = (step["stop"] - started).total_seconds() if started else None
    return found
