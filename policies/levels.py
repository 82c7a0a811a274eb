"""Levels above the line: an action's ``total_concurrency`` across its partitions, and pools
shared by actions of any pack (docs/architecture.md, "Levels: totals and pools").

Actions that share a level form a *level group*; everything that changes a line of a group
takes the group's lock (an advisory lock) before the line's, and a grant in a group is
chosen across all its lines by ``admit_group``. ``store`` writes the levels, which action
takes which, and the groups, at every pack load. Functions take a session and never
commit. The statements are in ``app/sql/levels.sql``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app import sql
from app.errors import Contention, InvalidPack
from policies import limits, policy, ratelimit

TOTAL = "total"
POOL = "pool"


def lock(session: Session, groups: Iterable[int | None]) -> None:
    """Take these groups' locks, in ascending order (before any line's lock)."""
    for group in sorted({g for g in groups if g is not None}):
        session.execute(sql.query("lock_group"), {"group": group})


def confirm(session: Session, groups: Iterable[int | None]) -> None:
    """Under the lines' locks: the groups they are in now are held. A group taken already
    answers at once; one a pack load has just moved the line into is only tried, since a
    wait now, holding a line, could close a cycle: Contention (retry) if another holds it."""
    for group in sorted({g for g in groups if g is not None}):
        if not session.execute(sql.query("try_lock_group"), {"group": group}).scalar_one():
            raise Contention(
                f"a pack load moved this line into level group {group} just now; retry"
            )


def group_of_line(session: Session, queue_id: int) -> int | None:
    group = session.execute(sql.query("group_of_line"), {"queue_id": queue_id}).scalar()
    return None if group is None else int(group)


def group_of_execution(session: Session, execution_id: int) -> int | None:
    group = session.execute(sql.query("group_of_execution"), {"id": execution_id}).scalar()
    return None if group is None else int(group)


def groups_of_actions(session: Session, action_ids: Sequence[int]) -> list[int]:
    rows = session.execute(sql.query("groups_of_actions"), {"actions": list(action_ids)})
    return [int(g) for g in rows.scalars()]


@dataclass(frozen=True)
class Granted:
    execution_id: int
    attempt: int
    action_ref: str
    timeout_s: int | None


@dataclass(frozen=True)
class GroupAdmitted:
    grants: list[Granted]
    # The earliest time a full rate-limit window of a line of the group frees a grant.
    wake_at: datetime | None = None
    woken: tuple[int, ...] = ()  # the lines to wake then


def admit_group(session: Session, group: int, default_limit: int) -> GroupAdmitted:
    """Grant every slot free at every level, one grant at a time, in the group's order:
    round robin across the partitions of an action (the line whose last grant is oldest),
    oldest request first across actions (a pool). The caller holds the group's lock."""
    grants: list[Granted] = []
    blocked: set[int] = set()  # rate-limited lines whose window is full
    wake_at: datetime | None = None
    while True:
        candidates = [
            c
            for c in session.execute(
                sql.query("group_candidates"), {"group": group, "default": default_limit}
            ).all()
            if c.queue_id not in blocked
        ]
        pick = _next(candidates)
        if pick is None:
            break
        windows = (
            limits.resolve_windows(pick.action_policy, pick.pack_policy)
            if pick.rate_limited
            else ()
        )
        if windows:
            room, frees_at = ratelimit.capacity(session, pick.queue_id, windows)
            if room == 0:
                blocked.add(pick.queue_id)
                if frees_at is not None and (wake_at is None or frees_at < wake_at):
                    wake_at = frees_at
                continue
        row = session.execute(
            sql.query("admit"), {"queue_id": pick.queue_id, "limit": pick.line_limit, "cap": 1}
        ).one_or_none()
        if row is None:  # the head left since the candidates were read: read them again
            continue
        session.execute(
            sql.query("take_levels"),
            {"id": row.execution_id, "levels": list(pick.levels), "queue_id": pick.queue_id},
        )
        ratelimit.record(session, pick.queue_id, windows, [row.execution_id])
        grants.append(Granted(row.execution_id, row.attempt, pick.ref, pick.timeout_s))
    return GroupAdmitted(grants, wake_at, tuple(sorted(blocked)) if wake_at else ())


def _next(candidates: list[Any]) -> Any | None:
    """The next line to grant in: each action's line by round robin (never granted first,
    then the oldest last grant, then the older head), then across actions the oldest head."""
    best_of_action: dict[int, Any] = {}
    for c in candidates:
        best = best_of_action.get(c.action_id)
        if best is None or _turn(c) < _turn(best):
            best_of_action[c.action_id] = c
    if not best_of_action:
        return None
    return min(best_of_action.values(), key=lambda c: (c.head_at, c.head_id))


def _turn(c: Any) -> tuple[bool, Any, Any, int]:
    return (c.last_granted_at is not None, c.last_granted_at or c.head_at, c.head_at, c.head_id)


# --- what a pack load writes ----------------------------------------------------------------


def pool_ref(pack: str, name: str) -> str:
    """A pool as an action's policy names it: its own pack's by name, another's as pack.pool."""
    return name if "." in name else f"{pack}.{name}"


def named_pools(pack: str, action_policy: policy.Stored, pack_policy: policy.Stored) -> list[str]:
    """The full refs of the pools an action takes (its policy, else its pack's)."""
    names = limits.resolve_levels(action_policy, pack_policy)[1]
    return [pool_ref(pack, name) for name in names]


def prepare(session: Session, packs: Sequence[str], pools: Sequence[str]) -> None:
    """Before a pack load writes anything: lock every group it may change."""
    rows = session.execute(
        sql.query("groups_touched_by_load"), {"packs": list(packs), "pools": list(pools)}
    )
    lock(session, [int(g) for g in rows.scalars()])


def store(session: Session, stored: Sequence[tuple[int, PackLevels]]) -> None:
    """The loaded packs' pools, their actions' totals and which levels each action takes,
    as their files say: every pack's levels first, since an action may take the pool of a
    pack loaded with it. Call ``regroup`` next."""
    rows: list[dict[str, Any]] = []
    for pack_id, load in stored:
        levels = [{"kind": POOL, "ref": ref, "max": m} for ref, m in load.pools_by_ref.items()]
        levels += [{"kind": TOTAL, "ref": ref, "max": t} for ref, t, _ in load.actions if t]
        session.execute(
            sql.query("store_pack_levels"), {"pack_id": pack_id, "levels": sql.jsonb(levels)}
        )
        rows += [{"action": ref, "kind": TOTAL, "level": ref} for ref, t, _ in load.actions if t]
        rows += [
            {"action": ref, "kind": POOL, "level": pool}
            for ref, _, named in load.actions
            for pool in named
        ]
    if rows:
        session.execute(sql.query("store_action_levels"), {"rows": sql.jsonb(rows)})


def regroup(session: Session) -> None:
    """Each action's group: the smallest level id of its connected component of actions and
    levels. The lines of an action whose group changed are locked (one order), then told."""
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def find(node: tuple[str, int]) -> tuple[str, int]:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    edges = session.execute(sql.query("all_action_levels")).all()
    for edge in edges:
        a, b = find(("a", edge.action_id)), find(("l", edge.level_id))
        if a != b:
            parent[a] = b
    smallest: dict[tuple[str, int], int] = {}
    for edge in edges:
        root = find(("l", edge.level_id))
        smallest[root] = min(smallest.get(root, edge.level_id), edge.level_id)
    of_action = {edge.action_id: smallest[find(("a", edge.action_id))] for edge in edges}
    groups = [{"id": a, "level_group": g} for a, g in sorted(of_action.items())]
    lock(session, [g["level_group"] for g in groups])
    changed = list(
        session.execute(sql.query("store_action_groups"), {"groups": sql.jsonb(groups)}).scalars()
    )
    if changed:
        session.execute(sql.query("lock_lines_of_actions"), {"actions": changed}).all()
        session.execute(sql.query("copy_groups_to_lines"), {"actions": changed})


@dataclass(frozen=True)
class PackLevels:
    """What one pack's files say about levels: its pools, and per action (ref, total, the
    full refs of the pools it takes)."""

    pack: str
    pools: dict[str, int]
    actions: list[tuple[str, int | None, list[str]]]

    @property
    def pools_by_ref(self) -> dict[str, int]:
        return {pool_ref(self.pack, name): limit for name, limit in self.pools.items()}

    @property
    def pool_refs(self) -> list[str]:
        return list(self.pools_by_ref)


def of_pack(
    pack: str,
    pools: dict[str, int],
    pack_policy: policy.Stored,
    actions: Iterable[tuple[str, policy.Stored]],
) -> PackLevels:
    named = []
    for ref, action_policy in actions:
        total, names = limits.resolve_levels(action_policy, pack_policy)
        named.append((ref, total, [pool_ref(pack, name) for name in names]))
    return PackLevels(pack, dict(pools), named)


def check(session: Session, loads: Sequence[PackLevels]) -> str | None:
    """The first problem of these loads, or None: an action naming a pool no pack declares,
    or a pool removed while an action of another pack still takes it."""
    declared = {ref for load in loads for ref in load.pool_refs}
    named = {pool for load in loads for _, _, pools in load.actions for pool in pools}
    unknown = named - declared
    if unknown:
        found = session.execute(sql.query("known_pools"), {"refs": sorted(unknown)}).scalars()
        unknown -= set(found)
    for load in loads:
        for ref, _, pools in load.actions:
            for pool in pools:
                if pool in unknown:
                    return (
                        f"action {ref}: policy.pools names {pool}, which no pack declares "
                        f"(declare it in pack.yaml: pools: {{{pool.split('.')[-1]}: 2}})"
                    )
    return None


def check_removed(session: Session, pack_id: int, load: PackLevels, loading: set[str]) -> None:
    """Refuse to remove a pool another pack's action (not reloaded with it) still takes."""
    for row in session.execute(
        sql.query("pool_users_elsewhere"), {"pack_id": pack_id, "keep": load.pool_refs}
    ):
        if row.action.split(".")[0] not in loading:
            raise InvalidPack(
                f"pack {load.pack}: pool {row.pool} is gone from pack.yaml but action "
                f"{row.action} still takes it; remove it from that action's policy.pools first"
            )
