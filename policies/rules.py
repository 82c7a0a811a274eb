"""The packs' rules as operators see them (listed with their recent enforcements) and their
enabled switch.

A switch is a plain UPDATE of the rule: events that match a disabled rule get ``skipped``
enforcements (``policies.events``), and the statement trigger on ``rules`` turns execution
events on or off when the rule listens on ``usher.execution``. It holds until the rule's pack
is loaded again, which sets ``enabled`` from the file (as a load resets a live limit).
"""

from __future__ import annotations

import difflib
from typing import Any

from sqlalchemy.orm import Session

from app import queries, sql
from app.errors import UnknownRule
from policies import packs

# The enforcement counts of a listing are over this many of the newest enforcements.
RECENT_ENFORCEMENTS = 10_000


def listing(
    session: Session, trigger: str | None = None, ref: str | None = None
) -> list[dict[str, Any]]:
    """Every rule (of ``trigger``, or the one ``ref``) in ref order, with ``recent_enforcements``
    (status -> count among the newest ``RECENT_ENFORCEMENTS``) and ``last_enforced_at``."""
    rows = session.execute(
        sql.query("catalog_rules"),
        {"trigger": trigger, "ref": ref, "recent": RECENT_ENFORCEMENTS},
    ).mappings()
    return [queries.iso_row(row) for row in rows]


def show(session: Session, ref: str) -> dict[str, Any]:
    found = listing(session, ref=ref)
    if not found:
        raise unknown_rule(session, ref)
    return found[0]


def unknown_rule(session: Session, ref: str) -> UnknownRule:
    """The refusal of a rule that does not exist, naming the close ones."""
    refs = list(session.execute(sql.query("rule_refs")).scalars())
    close = difflib.get_close_matches(ref, refs, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `usher rules list`"
    return UnknownRule(f"no rule named {ref!r}; {hint}")


def set_enabled(session: Session, ref: str, enabled: bool) -> dict[str, Any]:
    """Enable or disable a rule until its pack is loaded again; returns the rule. The caller
    commits."""
    row = session.execute(sql.query("rule_for_switch"), {"ref": ref}).one_or_none()
    if row is None:
        raise unknown_rule(session, ref)
    flips = row.trigger == packs.EXECUTION_TRIGGER and (enabled or row.others) != row.emitting
    if flips:
        # The lock the trigger's ALTER TABLE takes, first (as a pack load does): it waits for
        # the writers of executions in flight before this holds the rule's row.
        session.execute(sql.query("lock_executions_for_trigger"))
    session.execute(sql.query("switch_rule"), {"id": row.id, "enabled": enabled})
    return show(session, ref)
