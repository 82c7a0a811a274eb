"""Retry policy: how many attempts, and how long to wait before each (held in Postgres).

Delays for attempt n (n = 1 after the first failure), before the cap ``max_delay_ms``:
fixed ``initial``; linear ``initial * n``; exponential ``initial * 2**(n-1)``. With jitter
the delay is drawn uniformly from [delay/2, delay] ("equal jitter"): retries of many
executions spread out, and none waits less than half the configured delay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from app.config import RetryStrategy, Settings
from policies import policy

NO_RETRY_BLOCK = policy.Retry()


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    strategy: RetryStrategy
    initial_delay_ms: int
    max_delay_ms: int
    jitter: bool
    hold_slot: bool = False

    def delay_ms(self, retry_number: int, rng: random.Random | None = None) -> float:
        """The wait before retry ``retry_number`` (1 for the first retry)."""
        n = max(retry_number, 1)
        if self.strategy is RetryStrategy.fixed:
            delay = float(self.initial_delay_ms)
        elif self.strategy is RetryStrategy.linear:
            delay = float(self.initial_delay_ms * n)
        else:
            delay = float(self.initial_delay_ms) * 2.0 ** min(n - 1, 62)
        delay = min(delay, float(self.max_delay_ms))
        if self.jitter:
            delay = (rng or random).uniform(delay / 2, delay)
        return delay

    def allows_retry(self, attempt: int) -> bool:
        """Whether attempt ``attempt`` (1-based) may be followed by another."""
        return attempt <= self.max_retries


def resolve(
    action_policy: policy.Stored, pack_policy: policy.Stored, settings: Settings
) -> RetryPolicy:
    """Each key from the action's ``retry`` block, else the pack's, else USHER_RETRY_*."""
    blocks = [policy.parse(p).retry or NO_RETRY_BLOCK for p in (action_policy, pack_policy)]

    def pick(key: str, default: Any) -> Any:
        for block in blocks:
            value = getattr(block, key)
            if value is not None:
                return value
        return default

    return RetryPolicy(
        max_retries=pick("max_retries", settings.retry_max_retries),
        strategy=pick("strategy", settings.retry_strategy),
        initial_delay_ms=pick("initial_delay_ms", settings.retry_initial_delay_ms),
        max_delay_ms=pick("max_delay_ms", settings.retry_max_delay_ms),
        jitter=pick("jitter", settings.retry_jitter),
        hold_slot=pick("hold_slot", False),
    )
