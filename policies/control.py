"""Live control of an action's lines: pause, resume, change the limit; takes effect at once."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from app import queries, sql
from app.config import Settings
from policies import levels, limits, lines, pools, requests


def _action_id(session: Session, ref: str) -> int:
    """Lock the action's row against other live changes (see ``lock_action``), after its
    level group's lock: a pack load takes the group's lock, then writes the action's row."""
    levels.lock(session, [pools.group_of_action(session, ref)])
    found = session.execute(sql.query("lock_action"), {"ref": ref}).scalar_one_or_none()
    if found is None:
        raise queries.unknown_action(session, ref)
    levels.confirm(session, [pools.group_of_action(session, ref)])
    return int(found)


def readmit(session: Session, settings: Settings, action_id: int) -> list[lines.Grant]:
    """Lock each line of the action in turn and grant what now fits.

    In partition-key order, sorted as batch intake sorts the lines it locks: two
    transactions that lock several lines of one action take them in the same order, so
    they never deadlock.
    """
    grants: list[lines.Grant] = []
    rows = session.execute(sql.query("action_lines"), {"a": action_id}).all()
    for line in sorted(rows, key=lambda r: r.partition_key):
        grants += lines.requeue_due(session, lines.lock_line(session, settings, line.id)).grants
    return grants


def readmit_refs(session: Session, settings: Settings, refs: list[str]) -> list[lines.Grant]:
    """``readmit`` of several actions in action-id order, as batch intake locks lines; their
    level groups first, in ascending order."""
    levels.lock(session, [pools.group_of_action(session, ref) for ref in refs])
    action_ids = sorted({_action_id(session, ref) for ref in refs})
    return [g for action_id in action_ids for g in readmit(session, settings, action_id)]


def set_paused(session: Session, settings: Settings, ref: str, paused: bool) -> list[lines.Grant]:
    """Pause (nothing granted; running work finishes) or resume (grants at once)."""
    action_id = _action_id(session, ref)
    session.execute(sql.query("set_paused"), {"paused": paused, "id": action_id})
    return [] if paused else readmit(session, settings, action_id)


def update_policy(
    session: Session, settings: Settings, ref: str, changes: Any
) -> list[lines.Grant]:
    """Change the action's limits live. Raising the limit grants at once; lowering it lets
    running work finish and grants nothing until the line is under the new limit. A later
    `usher packs load` of the pack sets the policy from the files again."""
    changes = requests.parse(requests.PolicyChange, changes).changes()
    action_id = _action_id(session, ref)
    if "total_concurrency" in changes:  # the level's own limit: what grants read
        pools.set_total(session, ref, changes["total_concurrency"])
    session.execute(
        sql.query("merge_action_policy"), {"changes": json.dumps(changes), "id": action_id}
    )
    limits.store(session, action_id=action_id)
    return readmit(session, settings, action_id)
