"""Which limits apply to a line: action policy > pack policy > global default."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from policies import policy


@dataclass(frozen=True)
class Limits:
    concurrency: int
    max_queue_length: int
    queue_timeout_s: int
    partition_by: tuple[str, ...] = ()
    rate: tuple[policy.Window, ...] = ()


def resolve(action_policy: policy.Stored, pack_policy: policy.Stored, settings: Settings) -> Limits:
    """Each limit from the action's policy, else the pack's, else the settings' default."""
    own, pack = policy.parse(action_policy), policy.parse(pack_policy)

    def pick(key: str, default: int) -> int:
        for block in (own, pack):
            value = getattr(block, key)
            if value is not None:
                return int(value)
        return default

    partition_by = own.partition_by if own.partition_by is not None else pack.partition_by
    windows = own.windows if own.windows is not None else pack.windows
    return Limits(
        rate=windows or (),
        concurrency=pick("concurrency", settings.default_max_concurrent),
        max_queue_length=pick("max_queue_length", settings.default_max_queue_length),
        queue_timeout_s=pick("queue_timeout_s", settings.default_queue_timeout_s),
        partition_by=tuple(partition_by or ()),
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
