"""Pools and totals as the operator sees and changes them (docs/policies.md, "Pools and
totals: inspecting and changing them").

A live change writes the level's ``live_max`` under its group's lock, then grants what the new
limit lets through, across the whole group (``levels.admit_group``): a raised limit grants
at once, a lowered one lets running work finish. A load of the pack that declares the level
writes it from the files again. Functions take a session and never commit; publish the
grants after commit. The statements are in ``app/sql/pools.sql``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app import sql
from app.config import Settings
from app.errors import InvalidRequest, NotFound
from policies import levels, lines, requests


def listing(session: Session, ref: str | None = None) -> list[dict[str, Any]]:
    """Every pool in ref order (or the one named): ref, pack, limit (``live``: a live change's,
    until the pack is loaded again; ``pack_limit``: the files'), active, waiting, actions."""
    rows = session.execute(sql.query("pools_listing"), {"ref": ref}).mappings()
    return [
        {
            "ref": r["ref"],
            "pack": r["pack"],
            "limit": r["level_limit"],
            "pack_limit": r["pack_limit"],
            "live": r["live"],
            "active": r["active"],
            "waiting": int(r["waiting"]),
            "actions": list(r["actions"]),
        }
        for r in rows
    ]


def show(session: Session, ref: str) -> dict[str, Any]:
    found = listing(session, ref)
    if not found:
        raise _unknown(session, ref)
    return found[0]


def _unknown(session: Session, ref: str) -> NotFound:
    known = [p["ref"] for p in listing(session)]
    hint = f"the pools are {', '.join(known)}" if known else "no pack declares a pool"
    return NotFound(f"no pool named {ref!r}; {hint} (pack.yaml: pools: {{name: limit}})")


def set_limit(session: Session, settings: Settings, ref: str, limit: Any) -> list[lines.Grant]:
    """Change a pool's limit live; the grants it lets through, to publish after commit."""
    limit = requests.parse(requests.PoolChange, {"limit": limit}).limit
    group = _level(session, levels.POOL, ref)[1]
    levels.lock(session, [group])
    level_id, now = _level(session, levels.POOL, ref)  # under the lock: is it still the group?
    if level_id is None:
        raise _unknown(session, ref)
    # Only this group's transactions update its levels, and none holds a line of it now.
    session.execute(sql.query("set_level_live_max"), {"id": level_id, "limit": limit})
    # A load that made an action take the pool just now (it held the row): its group is only
    # tried, as a line moved by a load is (Contention: retry).
    now = _level(session, levels.POOL, ref)[1]
    if now != group:
        levels.confirm(session, [now])
    return admit(session, settings, now)


def set_total(session: Session, action_ref: str, limit: int) -> None:
    """Change an action's ``total_concurrency`` live (``control.update_policy``, which holds
    the action's group lock and re-admits its lines next)."""
    level_id, _ = _level(session, levels.TOTAL, action_ref)
    if level_id is None:
        raise InvalidRequest(
            f"{action_ref} has no total_concurrency in its pack files: a live change can only "
            "change one it has (set it in the files and run `usher packs load`)"
        )
    session.execute(sql.query("set_level_live_max"), {"id": level_id, "limit": limit})


def admit(session: Session, settings: Settings, group: int | None) -> list[lines.Grant]:
    """What fits now across the group; the caller holds its lock."""
    if group is None:
        return []
    done = levels.admit_group(session, group, settings.default_max_concurrent)
    return [lines.Grant(g.execution_id, g.attempt, g.action_ref, g.timeout_s) for g in done.grants]


def group_of_action(session: Session, ref: str) -> int | None:
    group = session.execute(sql.query("action_group_by_ref"), {"ref": ref}).scalar()
    return None if group is None else int(group)


def _level(session: Session, kind: str, ref: str) -> tuple[int | None, int | None]:
    row = session.execute(sql.query("level_group_by_ref"), {"kind": kind, "ref": ref}).one_or_none()
    if row is None:
        return None, None
    return int(row.id), None if row.level_group is None else int(row.level_group)


def usage(session: Session, action_ref: str | None = None) -> dict[str, dict[str, Any]]:
    """Per action (or the one named) that takes a level: ``total`` (``{limit, active}`` or
    None) and ``pools`` (``[{ref, limit, active}]``), with ``live`` marking a live limit."""
    found: dict[str, dict[str, Any]] = {}
    for r in session.execute(sql.query("levels_of_actions"), {"ref": action_ref}):
        use = found.setdefault(r.action_ref, {"total": None, "pools": []})
        held = {"limit": r.level_limit, "active": r.active, "live": r.live}
        if r.kind == levels.TOTAL:
            use["total"] = held
        else:
            use["pools"].append({"ref": r.ref, **held})
    return found


def held_by(found: dict[str, dict[str, Any]], action_ref: str) -> dict[str, Any]:
    """One action's entry of ``usage``: no total and no pools when it takes none."""
    return found.get(action_ref) or {"total": None, "pools": []}
