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
