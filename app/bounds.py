"""The bounds of every limit Usher takes, written once: a pack's policy (its JSON Schema and
``policies.policy.Policy``), the settings' defaults, an API request and the command line all
read them from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

N = TypeVar("N", int, float)


@dataclass(frozen=True)
class Range(Generic[N]):
    """``low <= value <= high`` (``low < value`` when ``open_low``)."""

    low: N
    high: N
    open_low: bool = False

    def schema(self, kind: str = "integer") -> dict[str, Any]:
        """As JSON Schema."""
        low = "exclusiveMinimum" if self.open_low else "minimum"
        return {"type": kind, low: self.low, "maximum": self.high}

    def field(self) -> dict[str, Any]:
        """As the keyword arguments of pydantic's ``Field``."""
        return {"gt" if self.open_low else "ge": self.low, "le": self.high}


CONCURRENCY = Range(1, 10_000)
# Pools a pack declares, and pools one action takes a slot of.
POOLS_PER_PACK = Range(0, 100)
POOLS_PER_ACTION = Range(0, 8)
QUEUE_LENGTH = Range(1, 10_000_000)
TIMEOUT_S = Range(1, 604_800)  # a queue timeout, an action's run timeout: a week at most
RATE_COUNT = Range(1, 1_000_000)
RATE_PER_S = Range(0.0, 86_400.0, open_low=True)
RATE_WINDOWS = Range(1, 5)
MAX_RETRIES = Range(0, 100)
INITIAL_DELAY_MS = Range(10, 10_000)
MAX_DELAY_MS = Range(100, 300_000)
PRIORITY = Range(-1000, 1000)
# A delayed run (delay_s, or run_at from now): at most 30 days ahead.
DELAY_S = Range(0.0, 2_592_000.0)
# An idempotency key: 1..200 printable ASCII characters; how long a key is remembered.
IDEMPOTENCY_KEY_LENGTH = Range(1, 200)
IDEMPOTENCY_TTL_S = Range(1, 2_592_000)
# A page of the events list (GET /api/v1/events, usher events list): its size and default.
EVENTS_PAGE = Range(1, 500)
EVENTS_PAGE_DEFAULT = 50
