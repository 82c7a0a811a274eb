"""Python entry points for the demo pack (examples/packs/demo): a flaky and a broken step,
and the notifier its rule on usher.execution runs for a dead execution."""

from __future__ import annotations

import logging
import random
from typing import Any

from tasks.runners.base import RunnerError

log = logging.getLogger(__name__)


def flaky_sync(source: str, failure_rate: float = 0.5) -> dict[str, Any]:
    """Fails transiently about ``failure_rate`` of the time; retries with backoff get it through."""
    if random.random() < failure_rate:
        raise ConnectionError(f"{source}: upstream unavailable (try again)")
    return {"synced": source}


def validate_order(order_id: int, amount: float) -> dict[str, Any]:
    """Refuses negative amounts for good: the execution goes to the dead-letter queue."""
    if amount < 0:
        raise RunnerError(f"order {order_id}: negative amount {amount}", permanent=True)
    return {"order": order_id, "accepted": True}


def notify(execution_id: int, action: str, error: str | None = None) -> dict[str, Any]:
    """The demo's notification sink: one warning line in the worker's log."""
    message = f"execution {execution_id} of {action} ended dead: {error or 'no error recorded'}"
    log.warning("NOTIFY %s (`usher executions show %s`)", message, execution_id)
    return {"notified": message}
