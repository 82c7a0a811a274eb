"""Which limits apply to a line: action policy > pack policy > global default."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.config import Settings


@dataclass(frozen=True)
class Window:
    """At most ``count`` grants in any ``per_s`` seconds, per line."""

    count: int
    per_s: float


@dataclass(frozen=True)
class Limits:
    concurrency: int
    max_queue_length: int
    queue_timeout_s: int
    partition_by: tuple[str, ...] = ()
    rate: tuple[Window, ...] = ()


def resolve(
    action_policy: dict[str, Any], pack_policy: dict[str, Any], settings: Settings
) -> Limits:
    def pick(key: str, default: int) -> int:
        for policy in (action_policy, pack_policy):
            if policy.get(key) is not None:
                return int(policy[key])
        return default

    partition_by = action_policy.get("partition_by")
    if partition_by is None:
        partition_by = pack_policy.get("partition_by") or []
    rate = action_policy.get("rate_limit")
    if rate is None:
        rate = pack_policy.get("rate_limit")
    windows = rate if isinstance(rate, list) else [rate] if rate else []
    return Limits(
        rate=tuple(Window(int(w["count"]), float(w["per_s"])) for w in windows),
        concurrency=pick("concurrency", settings.default_max_concurrent),
        max_queue_length=pick("max_queue_length", settings.default_max_queue_length),
        queue_timeout_s=pick("queue_timeout_s", settings.default_queue_timeout_s),
        partition_by=tuple(partition_by),
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
