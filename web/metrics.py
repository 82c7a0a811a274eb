"""``GET /metrics``: Prometheus families computed from Postgres at scrape time.

Every value is read from the database, so any web process gives the same numbers. Line
counters come from the queue rows (one row per line, cheap at any history size); failure,
retry and duration families come from the attempt history.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)

LINES = """
    SELECT a.ref AS action, sum(q.total_enqueued) AS enqueued,
           sum(q.total_completed) AS succeeded, sum(q.total_failed) AS dead,
           sum(q.total_cancelled) AS cancelled, sum(q.total_expired) AS expired,
           sum(q.queue_length) AS depth, sum(q.active_count) AS active
    FROM actions a LEFT JOIN queues q ON q.action_id = a.id
    GROUP BY a.ref ORDER BY a.ref
"""
FAILURES = """
    SELECT a.ref AS action, a.runner, t.outcome, count(*) AS n
    FROM attempts t JOIN executions e ON e.id = t.execution_id JOIN actions a ON a.id = e.action_id
    GROUP BY a.ref, a.runner, t.outcome
"""
RETRIES = """
    SELECT a.ref AS action, a.runner, count(*) AS n
    FROM attempts t JOIN executions e ON e.id = t.execution_id JOIN actions a ON a.id = e.action_id
    WHERE t.attempt > 1
    GROUP BY a.ref, a.runner
"""


def _histogram_query(source: str, buckets: tuple[float, ...]) -> str:
    """Cumulative bucket counts and the sum per (action, runner) over ``source``'s ``v``."""
    columns = ", ".join(
        f"count(*) FILTER (WHERE v <= {b}) AS le_{i}" for i, b in enumerate(buckets)
    )
    return f"""
        SELECT action, runner, {columns}, count(*) AS n, coalesce(sum(v), 0) AS total
        FROM ({source}) s GROUP BY action, runner
    """


DURATIONS = _histogram_query(
    """SELECT a.ref AS action, a.runner,
              extract(epoch FROM t.finished_at - t.started_at) AS v
       FROM attempts t JOIN executions e ON e.id = t.execution_id
       JOIN actions a ON a.id = e.action_id WHERE t.started_at IS NOT NULL""",
    DURATION_BUCKETS,
)
WAITS = _histogram_query(
    """SELECT a.ref AS action, '' AS runner, extract(epoch FROM w.started_at - w.queued_at) AS v
       FROM (SELECT execution_id, started_at, queued_at FROM attempts
             WHERE started_at IS NOT NULL AND queued_at IS NOT NULL
             UNION ALL
             SELECT id, started_at, queued_at FROM executions
             WHERE status = 'running' AND queued_at IS NOT NULL) w
       JOIN executions e ON e.id = w.execution_id JOIN actions a ON a.id = e.action_id""",
    WAIT_BUCKETS,
)


def _buckets(row: Any, buckets: tuple[float, ...]) -> list[tuple[str, float]]:
    values = [(str(b), float(getattr(row, f"le_{i}"))) for i, b in enumerate(buckets)]
    return [*values, ("+Inf", float(row.n))]


class PostgresCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        with self.engine.connect() as conn:
            lines = conn.execute(text(LINES)).all()
            failures = conn.execute(text(FAILURES)).all()
            retries = conn.execute(text(RETRIES)).all()
            durations = conn.execute(text(DURATIONS)).all()
            waits = conn.execute(text(WAITS)).all()
            dlq = conn.execute(
                text(
                    "SELECT count(*) FROM executions "
                    "WHERE status = 'dead' AND dlq_cleared_at IS NULL"
                )
            ).scalar_one()
        yield from self._lines(lines)
        failed = CounterMetricFamily(
            "usher_execution_failures",
            "Failed attempts by error type (the attempt's outcome).",
            labels=["action", "runner", "error_type"],
        )
        for row in failures:
            if row.outcome != "succeeded":
                failed.add_metric([row.action, row.runner, row.outcome], row.n)
        yield failed
        retried = CounterMetricFamily(
            "usher_retries", "Attempts after the first (retries).", labels=["action", "runner"]
        )
        for row in retries:
            retried.add_metric([row.action, row.runner], row.n)
        yield retried
        duration = HistogramMetricFamily(
            "usher_execution_duration_seconds",
            "Run time of finished attempts.",
            labels=["action", "runner"],
        )
        for row in durations:
            duration.add_metric(
                [row.action, row.runner], _buckets(row, DURATION_BUCKETS), float(row.total)
            )
        yield duration
        wait = HistogramMetricFamily(
            "usher_queue_wait_seconds",
            "From joining the line to starting on a worker.",
            labels=["action"],
        )
        for row in waits:
            wait.add_metric([row.action], _buckets(row, WAIT_BUCKETS), float(row.total))
        yield wait
        yield GaugeMetricFamily(
            "usher_dlq_items", "Executions in the dead-letter queue.", value=dlq
        )

    @staticmethod
    def _lines(lines: Sequence[Any]) -> Iterator[Metric]:
        enqueued = CounterMetricFamily(
            "usher_executions_enqueued", "Executions requested.", labels=["action"]
        )
        finished = CounterMetricFamily(
            "usher_executions_finished",
            "Executions that reached a final status.",
            labels=["action", "status"],
        )
        depth = GaugeMetricFamily(
            "usher_queue_depth", "Executions waiting in line.", labels=["action"]
        )
        active = GaugeMetricFamily(
            "usher_active_executions",
            "Executions holding a slot (scheduled or running).",
            labels=["action"],
        )
        for row in lines:
            enqueued.add_metric([row.action], row.enqueued or 0)
            for status in ("succeeded", "dead", "cancelled", "expired"):
                finished.add_metric([row.action, status], getattr(row, status) or 0)
            depth.add_metric([row.action], row.depth or 0)
            active.add_metric([row.action], row.active or 0)
        yield from (enqueued, finished, depth, active)


def render(engine: Engine) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PostgresCollector(engine))
    return generate_latest(registry)
