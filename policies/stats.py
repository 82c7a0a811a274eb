"""Queue statistics as the API and the CLI show them, with the limit that applies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from app import models, queries
from app.config import Settings
from policies import limits, pools

COUNTERS = models.COUNTERS


def _line(row: dict[str, Any], settings: Settings) -> dict[str, Any]:
    resolved = limits.resolve(row["action_policy"], row["pack_policy"], settings)
    oldest = row["oldest_enqueued_at"]
    return {
        "action_ref": row["action_ref"],
        "partition": row["partition_key"],
        **{key: row[key] for key in COUNTERS},
        "max_concurrent": resolved.concurrency,
        "max_queue_length": resolved.max_queue_length,
        "paused": row["paused"],
        "oldest_enqueued_at": oldest.isoformat() if oldest else None,
        "oldest_wait_s": (datetime.now(UTC) - oldest).total_seconds() if oldest else None,
        "last_updated": row["last_updated"].isoformat() if row["last_updated"] else None,
    }


def lines(session: Session, settings: Settings, ref: str | None = None) -> list[dict[str, Any]]:
    """One entry per line: an action, or one partition of a partitioned action."""
    return [_line(row, settings) for row in queries.queue_rows(session, ref)]


def action_stats(session: Session, settings: Settings, ref: str) -> dict[str, Any]:
    """The action's totals over all its lines; ``partitions`` lists each line when partitioned;
    ``total`` and ``pools``: the levels above its lines it takes (``pools.usage``)."""
    parts = lines(session, settings, ref)
    if not parts:
        raise queries.unknown_action(session, ref)
    return _totals(ref, parts) | pools.held_by(pools.usage(session, ref), ref)


def all_action_stats(session: Session, settings: Settings) -> dict[str, dict[str, Any]]:
    """``action_stats`` of every action (ref -> stats) from one query, in ref order."""
    by_ref: dict[str, list[dict[str, Any]]] = {}
    for part in lines(session, settings):
        by_ref.setdefault(part["action_ref"], []).append(part)
    held = pools.usage(session)
    return {ref: _totals(ref, parts) | pools.held_by(held, ref) for ref, parts in by_ref.items()}


def _totals(ref: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"action_ref": ref}
    for key in COUNTERS:
        total[key] = sum(p[key] for p in parts)
    total["max_concurrent"] = parts[0]["max_concurrent"]
    total["paused"] = parts[0]["paused"]
    olds = [p["oldest_enqueued_at"] for p in parts if p["oldest_enqueued_at"]]
    total["oldest_enqueued_at"] = min(olds) if olds else None
    updated = [p["last_updated"] for p in parts if p["last_updated"]]
    total["last_updated"] = max(updated) if updated else None
    if any(p["partition"] for p in parts):
        total["partitions"] = parts
    return total
