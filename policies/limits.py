"""Which limits apply to a line: action policy > pack policy > global default.

This is the one place of that rule. ``resolve`` applies it for Python; ``store`` writes its
result on the action for the workers' one-statement finish (``usher_finish``), wherever a
policy is written: a pack load, a live change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from app import sql
from app.config import Settings
from policies import policy


@dataclass(frozen=True)
class Limits:
    concurrency: int
    max_queue_length: int
    queue_timeout_s: int
    partition_by: tuple[str, ...] = ()
    rate: tuple[policy.Window, ...] = ()
    # Levels above the line (policies.levels): the action's total across its partitions,
    # and the pools it takes a slot of, as named in its policy.
    total: int | None = None
    pools: tuple[str, ...] = ()
    # The settings' limit, for the other lines of a level group whose action sets none.
    default_concurrency: int = field(default=10, compare=False)
    # What a request does when it would not be granted at once (policies.busy), and whether
    # one equal to a waiting one's returns that one.
    when_busy: str = "queue"
    coalesce: bool = False

    @property
    def leveled(self) -> bool:
        return self.total is not None or bool(self.pools)


def _pick(action_policy: policy.Stored, pack_policy: policy.Stored, key: str) -> Any:
    """``key`` of the action's policy, else of the pack's; None when neither sets it."""
    for block in (policy.parse(action_policy), policy.parse(pack_policy)):
        value = getattr(block, key)
        if value is not None:
            return value
    return None


def resolve(action_policy: policy.Stored, pack_policy: policy.Stored, settings: Settings) -> Limits:
    """Each limit from the action's policy, else the pack's, else the settings' default."""

    def pick(key: str, default: int) -> int:
        value = _pick(action_policy, pack_policy, key)
        return default if value is None else int(value)

    return Limits(
        rate=_pick(action_policy, pack_policy, "windows") or (),
        concurrency=pick("concurrency", settings.default_max_concurrent),
        max_queue_length=pick("max_queue_length", settings.default_max_queue_length),
        queue_timeout_s=pick("queue_timeout_s", settings.default_queue_timeout_s),
        partition_by=tuple(_pick(action_policy, pack_policy, "partition_by") or ()),
        total=_pick(action_policy, pack_policy, "total_concurrency"),
        pools=tuple(_pick(action_policy, pack_policy, "pools") or ()),
        default_concurrency=settings.default_max_concurrent,
        when_busy=_pick(action_policy, pack_policy, "when_busy") or "queue",
        coalesce=bool(_pick(action_policy, pack_policy, "coalesce")),
    )


def resolve_windows(
    action_policy: policy.Stored, pack_policy: policy.Stored
) -> tuple[policy.Window, ...]:
    """The rate-limit windows of a line (none: no rate limit)."""
    return tuple(_pick(action_policy, pack_policy, "windows") or ())


def resolve_levels(
    action_policy: policy.Stored, pack_policy: policy.Stored
) -> tuple[int | None, list[str]]:
    """The action's total_concurrency (None: no total) and the pools it names."""
    return (
        _pick(action_policy, pack_policy, "total_concurrency"),
        list(_pick(action_policy, pack_policy, "pools") or ()),
    )


def store(session: Session, pack_id: int | None = None, action_id: int | None = None) -> None:
    """Write ``resolve``'s concurrency (NULL: the settings' default) and whether a rate limit
    applies on the actions of a pack, or on one action, from their stored policies. The
    caller has just written those policies, in the same transaction."""
    rows = session.execute(
        sql.query("action_policies"), {"pack_id": pack_id, "action_id": action_id}
    ).all()
    concurrency = [_pick(r.action_policy, r.pack_policy, "concurrency") for r in rows]
    session.execute(
        sql.query("store_resolved_limits"),
        {
            "ids": [r.id for r in rows],
            "concurrency": [None if c is None else int(c) for c in concurrency],
            "rate_limited": [bool(_pick(r.action_policy, r.pack_policy, "windows")) for r in rows],
        },
    )


def partition_key(partition_by: tuple[str, ...], parameters: dict[str, Any]) -> str:
    """The line an execution waits in: '' when unpartitioned, else e.g. 'host=db1'.

    Strings appear as they are, other values as JSON; ``,``, ``=`` and ``%`` are
    percent-encoded so that two different sets of values never share a line.
    """
    if not partition_by:
        return ""

    def shown(value: Any) -> str:
        raw = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        return raw.replace("%", "%25").replace(",", "%2C").replace("=", "%3D")

    return ",".join(f"{name}={shown(parameters.get(name))}" for name in partition_by)
