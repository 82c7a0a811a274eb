"""What is loaded, as operators list it: the packs with what they hold, and an action with
its policy as resolved (action > pack > settings) beside its counters."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy.orm import Session

from app import queries, sql
from app.config import Settings
from policies import limits, retry, stats


def packs(session: Session) -> list[dict[str, Any]]:
    """Every pack: name, description, how many actions, rules, schedules and webhooks, when
    it was last loaded."""
    return [queries.iso_row(row) for row in session.execute(sql.query("catalog_packs")).mappings()]


def resolved(action: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The limits and the retry policy that apply to an action (``queries.action_row``'s or
    ``queries.actions``' item): what its policy leaves out, from its pack's, then settings."""
    found = limits.resolve(action["policy"], action["pack_policy"], settings)
    windows = [window.model_dump() for window in found.rate]
    backoff = retry.resolve(action["policy"], action["pack_policy"], settings)
    return {
        "concurrency": found.concurrency,
        "max_queue_length": found.max_queue_length,
        "queue_timeout_s": found.queue_timeout_s,
        "partition_by": list(found.partition_by),
        "rate_limit": windows,
        "total_concurrency": found.total,
        "pools": list(found.pools),
        "when_busy": found.when_busy,
        "coalesce": found.coalesce,
        "retry": asdict(backoff) | {"strategy": backoff.strategy.value},
    }


def action(session: Session, settings: Settings, ref: str) -> dict[str, Any]:
    """One action: its row, its policy as resolved and its queue stats (UnknownAction)."""
    found = queries.action_row(session, ref)
    found["resolved"] = resolved(found, settings)
    found["queue_stats"] = stats.action_stats(session, settings, ref)
    return found
