"""Display helpers of the dashboard: the templates' filters (``num``, ``duration``, ``when``,
``iso``), the same text in the JSON the pages refresh from, and an execution's timeline."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def num(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def duration(seconds: Any) -> str:
    if seconds is None:
        return "—"
    s = max(float(seconds), 0.0)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 10:
        return f"{s:.1f} s"
    whole = int(s)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def as_datetime(value: Any) -> datetime | None:
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return value if isinstance(value, datetime) else None


def when(value: Any) -> str:
    moment = as_datetime(value)
    return "—" if moment is None else moment.astimezone(UTC).strftime("%b %d %H:%M:%S")


def iso(value: Any) -> str:
    moment = as_datetime(value)
    return "" if moment is None else moment.astimezone(UTC).isoformat(timespec="milliseconds")


def rate(per_min: float | None) -> str:
    if not per_min:
        return "—"
    return f"{per_min:.1f}/min" if per_min < 100 else f"{per_min:,.0f}/min"


def timeline(execution: dict[str, Any], extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Each attempt's way through the line: enqueued → scheduled → started → finished."""
    steps = [dict(a) for a in execution["attempts"]]
    if not any(a["attempt"] == execution["attempt"] for a in steps):
        finished = execution["finished_at"]
        steps.append(
            {
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
        )
    now = datetime.now(UTC)

    def stop_of(step: dict[str, Any]) -> datetime:
        return as_datetime(step["finished_at"]) or now

    start = min(as_datetime(s["queued_at"]) or stop_of(s) for s in steps)
    span = max((max(stop_of(s) for s in steps) - start).total_seconds(), 0.001)
    steps[0].update(scale_start=start, scale_span=span)

    def x(value: Any) -> float:
        moment = as_datetime(value) or now
        return round(max(0.0, min(1000.0, (moment - start).total_seconds() / span * 1000)), 1)

    for step in steps:
        stop = stop_of(step)
        marks = [step["queued_at"], step["scheduled_at"], step["started_at"]]
        edges = [x(m) if m else None for m in marks] + [x(stop)]
        segments = []
        for i, kind in enumerate(("wait", "dispatch", "run")):
            begin = edges[i]
            if begin is None:
                continue
            following = next(e for e in edges[i + 1 :] if e is not None)
            segments.append({"kind": kind, "x": begin, "w": max(following - begin, 2)})
        step["segments"] = segments
        queued, started = as_datetime(step["queued_at"]), as_datetime(step["started_at"])
        left_line = as_datetime(step["scheduled_at"]) or stop
        step["waited_s"] = (left_line - queued).total_seconds() if queued else None
        step["ran_s"] = (stop - started).total_seconds() if started else None
    return steps
