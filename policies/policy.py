"""The ``policy:`` block of a pack or an action, typed, and parsed once per distinct text.

``Policy`` accepts and refuses what the pack loader's JSON Schema (``pack_schema.POLICY``,
which names the file and line of a mistake) does: closed objects, the same bounds, JSON
Schema's types (an integer may be written ``2.0``; a boolean is no number, a string no
integer). ``tests/unit/test_policy.py`` keeps the two equal. Every key is optional: what a
policy leaves out comes from the pack's policy, then the settings (``limits.resolve``,
``retry.resolve``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app import bounds
from app.config import RetryStrategy


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A pool of the action's own pack by its name, another pack's as <pack>.<pool>.
POOL_REF_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_][A-Za-z0-9_\-]*)?$"

# What a request does when its line has no free slot (docs/policies.md, "When the line is
# busy"): wait in line, be refused, replace the waiting ones, or cancel the running ones.
WhenBusy = Literal["queue", "skip", "replace", "cancel_running"]
WHEN_BUSY: tuple[str, ...] = get_args(WhenBusy)

# JSON Schema's integer: 2.0 is one, True and "2" are not.
Integer = Annotated[int, BeforeValidator(_integral)]


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("null is not a value here; leave the key out")
        return value


class Window(_Block):
    """At most ``count`` grants in any ``per_s`` seconds, per line."""

    count: Annotated[Integer, Field(**bounds.RATE_COUNT.field())]
    per_s: Annotated[float, Field(**bounds.RATE_PER_S.field())]


class Retry(_Block):
    max_retries: Annotated[Integer, Field(**bounds.MAX_RETRIES.field())] | None = None
    strategy: Annotated[RetryStrategy, Field(strict=False)] | None = None  # from its value
    initial_delay_ms: Annotated[Integer, Field(**bounds.INITIAL_DELAY_MS.field())] | None = None
    max_delay_ms: Annotated[Integer, Field(**bounds.MAX_DELAY_MS.field())] | None = None
    jitter: bool | None = None
    hold_slot: bool | None = None


class Policy(_Block):
    concurrency: Annotated[Integer, Field(**bounds.CONCURRENCY.field())] | None = None
    partition_by: list[str] | None = None
    max_queue_length: Annotated[Integer, Field(**bounds.QUEUE_LENGTH.field())] | None = None
    queue_timeout_s: Annotated[Integer, Field(**bounds.TIMEOUT_S.field())] | None = None
    rate_limit: (
        Window
        | Annotated[
            list[Window],
            Field(min_length=bounds.RATE_WINDOWS.low, max_length=bounds.RATE_WINDOWS.high),
        ]
        | None
    ) = None
    retry: Retry | None = None
    total_concurrency: Annotated[Integer, Field(**bounds.CONCURRENCY.field())] | None = None
    pools: (
        Annotated[
            list[Annotated[str, Field(pattern=POOL_REF_PATTERN)]],
            Field(max_length=bounds.POOLS_PER_ACTION.high),
        ]
        | None
    ) = None
    when_busy: WhenBusy | None = None
    coalesce: bool | None = None

    @field_validator("pools")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a pool is named twice")
        return value

    @property
    def windows(self) -> tuple[Window, ...] | None:
        """The rate-limit windows; None when the policy sets none."""
        if self.rate_limit is None:
            return None
        return tuple(self.rate_limit) if isinstance(self.rate_limit, list) else (self.rate_limit,)


EMPTY = Policy()

# A policy as stored (``actions.policy``, ``packs.policy``): its JSON text, or decoded.
Stored = Policy | Mapping[str, Any] | str | None


def parse(stored: Stored) -> Policy:
    """A stored policy as a ``Policy``, parsed once per distinct JSON text. A key whose value
    is null counts as not set (the loader never stores one)."""
    if isinstance(stored, Policy):
        return stored
    if not stored:
        return EMPTY
    if isinstance(stored, str):
        return _parse(stored)
    return _parse(json.dumps(stored, sort_keys=True, separators=(",", ":")))


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Policy:
    document = json.loads(text)
    if isinstance(document, dict):
        document = {key: value for key, value in document.items() if value is not None}
        if isinstance(document.get("retry"), dict):
            retry = {key: value for key, value in document["retry"].items() if value is not None}
            document["retry"] = retry
    return Policy.model_validate(document)
