"""``GET /metrics``: Prometheus families computed from Postgres at scrape time.

Every value is read from the database, so any web process gives the same numbers. Line
counters come from the queue rows, failure, retry, duration and wait families from the
attempt totals that triggers keep per line and outcome (migration 0005): one row per line,
cheap at any history size. Only the waits of running attempts are read from executions.

A web process serves the text from a ``Cache`` at most ``USHER_METRICS_CACHE_S`` old: scrapers
arriving together share one computation instead of each running the queries.

The text is written here, in the format prometheus_client's ``generate_latest`` writes: at
1,000 actions a scrape holds ~45,000 samples, and the generic writer spent about a second
of CPU (holding the GIL of the process that also serves the dashboard) on them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from importlib import metadata
from typing import Any

from prometheus_client.utils import floatToGoString
from sqlalchemy import Engine

from app import sql

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)
# The bounds as the numbers Postgres compares the running waits with (``metrics_running_waits``),
# written as the bounds are in Python: 0.1 is 0.1, not the float nearest to it.
WAIT_BOUNDS = [Decimal(str(b)) for b in WAIT_BUCKETS]


class Histogram:
    """Per-bucket counts (the last one past every bound) and the sum of the observed values."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = Decimal(0)  # numeric sums from Postgres, added exactly

    def add(self, hist: Sequence[int], total: Any) -> None:
        # hist: the stored per-bucket counts, then +Inf, then attempts without the value
        assert len(hist) == len(self.bounds) + 2, "bucket bounds differ from migration 0005"
        for i, count in enumerate(hist[:-1]):
            self.counts[i] += count
        self.total += total

    def add_bucket(self, bucket: int, n: int, total: Any) -> None:
        """``n`` values of ``usher_bucket``'s 1-based ``bucket``, summing to ``total``; a value
        that is NULL (the bucket after the last) counts past every bound."""
        self.counts[min(bucket, len(self.counts)) - 1] += n
        self.total += total

    @property
    def n(self) -> int:
        return sum(self.counts)


def _number(value: Any) -> str:
    """A sample's value as Go writes it; most values are counts, written without a detour."""
    if type(value) is int and -1_000_000 < value < 1_000_000:
        return f"{value}.0"
    return str(floatToGoString(value))


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class Text:
    """Prometheus text format 0.0.4. Label sets are given already sorted by label name."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def family(self, name: str, kind: str, doc: str) -> None:
        self.parts.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")

    def sample(self, name: str, labels: str, value: Any) -> None:
        self.parts.append(f"{name}{{{labels}}} {_number(value)}\n")

    def histogram(self, name: str, before: str, after: str, histogram: Histogram) -> None:
        """One histogram's samples; ``le`` goes between the labels ``before`` and ``after``."""
        running = 0
        for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
            running += count
            le = floatToGoString(bound)  # as prometheus_client writes it: 1 is "1.0"
            self.parts.append(f'{name}_bucket{{{before}le="{le}"{after}}} {_number(running)}\n')
        labels = (before + after.lstrip(",")).rstrip(",")
        self.sample(f"{name}_bucket", f'{before}le="+Inf"{after}', histogram.n)
        self.sample(f"{name}_count", labels, histogram.n)
        self.sample(f"{name}_sum", labels, float(histogram.total))

    def encoded(self) -> bytes:
        return "".join(self.parts).encode()


def _lines(out: Text, lines: Sequence[Any]) -> None:
    actions = [(f'action="{_label(row.action)}"', row) for row in lines]
    out.family("usher_executions_enqueued_total", "counter", "Executions requested.")
    for action, row in actions:
        out.sample("usher_executions_enqueued_total", action, row.enqueued or 0)
    out.family(
        "usher_executions_finished_total", "counter", "Executions that reached a final status."
    )
    for action, row in actions:
        for status in ("succeeded", "dead", "cancelled", "expired"):
            value = getattr(row, status) or 0
            out.sample("usher_executions_finished_total", f'{action},status="{status}"', value)
    out.family("usher_queue_depth", "gauge", "Executions waiting in line.")
    for action, row in actions:
        out.sample("usher_queue_depth", action, row.depth or 0)
    out.family(
        "usher_active_executions", "gauge", "Executions holding a slot (scheduled or running)."
    )
    for action, row in actions:
        out.sample("usher_active_executions", action, row.active or 0)


def _history(out: Text, totals: Sequence[Any], running: Sequence[Any]) -> None:
    """Failures, retries and the two histograms, summed over each action's lines."""
    failures: dict[tuple[str, str, str], int] = {}
    retries: dict[tuple[str, str], int] = {}
    durations: dict[tuple[str, str], Histogram] = {}
    waits: dict[str, Histogram] = {}
    for row in totals:
        pair = (row.action, row.runner)
        if row.outcome != "succeeded":
            key = (row.action, row.runner, row.outcome)
            failures[key] = failures.get(key, 0) + row.attempts
        retries[pair] = retries.get(pair, 0) + row.retries
        durations.setdefault(pair, Histogram(DURATION_BUCKETS)).add(row.run_hist, row.run_sum)
        waits.setdefault(row.action, Histogram(WAIT_BUCKETS)).add(row.wait_hist, row.wait_sum)
    for row in running:
        waits.setdefault(row.action, Histogram(WAIT_BUCKETS)).add_bucket(
            row.bucket, row.n, row.total
        )
    # As when counted from the history: a series appears once something was observed.
    name = "usher_execution_failures_total"
    out.family(name, "counter", "Failed attempts by error type (the attempt's outcome).")
    for (action, runner, outcome), n in failures.items():
        if n:
            labels = f'action="{_label(action)}",error_type="{outcome}",runner="{_label(runner)}"'
            out.sample(name, labels, n)
    out.family("usher_retries_total", "counter", "Attempts after the first (retries).")
    for (action, runner), n in retries.items():
        if n:
            out.sample(
                "usher_retries_total", f'action="{_label(action)}",runner="{_label(runner)}"', n
            )
    name = "usher_execution_duration_seconds"
    out.family(name, "histogram", "Run time of finished attempts.")
    for (action, runner), histogram in durations.items():
        if histogram.n:
            before, after = f'action="{_label(action)}",', f',runner="{_label(runner)}"'
            out.histogram(name, before, after, histogram)
    name = "usher_queue_wait_seconds"
    out.family(name, "histogram", "From joining the line to starting on a worker.")
    for action, histogram in waits.items():
        if histogram.n:
            out.histogram(name, f'action="{_label(action)}",', "", histogram)


def render(engine: Engine, default_concurrency: int = 10) -> bytes:
    """The whole text; ``default_concurrency``: the limit of a line whose policies set none."""
    with engine.connect() as conn:
        lines = conn.execute(sql.query("metrics_lines")).all()
        totals = conn.execute(sql.query("metrics_totals")).all()
        running = conn.execute(sql.query("metrics_running_waits"), {"bounds": WAIT_BOUNDS}).all()
        dlq = conn.execute(sql.query("metrics_dlq")).scalar_one()
        hooks = conn.execute(sql.query("metrics_webhook_requests")).all()
        levels = conn.execute(sql.query("metrics_levels")).all()
        second = {
            "oldest": conn.execute(sql.query("metrics_oldest_waiting")).all(),
            "limits": conn.execute(sql.query("metrics_concurrency_limits")).all(),
            "rejected": conn.execute(sql.query("metrics_rejected")).all(),
            "events": conn.execute(sql.query("metrics_events")).all(),
            "enforcements": conn.execute(sql.query("metrics_enforcements")).all(),
            "fires": conn.execute(sql.query("metrics_schedule_fires")).all(),
        }
    out = Text()
    _lines(out, lines)
    _history(out, totals, running)
    out.family("usher_dlq_items", "gauge", "Executions in the dead-letter queue.")
    out.parts.append(f"usher_dlq_items {_number(dlq)}\n")
    name = "usher_webhook_requests_total"
    out.family(name, "counter", 'Requests to /hooks by outcome (webhook="": none known).')
    for row in hooks:
        out.sample(name, f'outcome="{row.outcome}",webhook="{_label(row.webhook)}"', row.count)
    _levels(out, levels)
    _second_round(out, second, hooks, default_concurrency)
    return out.encoded()


def _levels(out: Text, levels: Sequence[Any]) -> None:
    """Each total (ref: its action) and pool (ref: <pack>.<pool>): its slots held, its limit."""
    labelled = [(f'kind="{row.kind}",ref="{_label(row.ref)}"', row) for row in levels]
    out.family("usher_level_active", "gauge", "Executions holding a slot of a total or pool.")
    for labels, row in labelled:
        out.sample("usher_level_active", labels, row.active)
    out.family("usher_level_limit", "gauge", "The limit of a total or pool (a live one if set).")
    for labels, row in labelled:
        out.sample("usher_level_limit", labels, row.level_limit)


# Webhook answers that are not refusals; the others count in usher_requests_rejected_total
# as {action="",reason="webhook_<outcome>"}.
WEBHOOK_TAKEN = ("accepted", "duplicate")


def _version() -> str:
    try:
        return metadata.version("usher")
    except metadata.PackageNotFoundError:
        return "unknown"


def _second_round(
    out: Text, rows: dict[str, Sequence[Any]], hooks: Sequence[Any], default_concurrency: int
) -> None:
    out.family("usher_build_info", "gauge", "Always 1; the version of the web process serving.")
    out.sample("usher_build_info", f'version="{_label(_version())}"', 1)
    name = "usher_oldest_waiting_seconds"
    out.family(name, "gauge", "How long the oldest waiting execution has waited (0: none).")
    for row in rows["oldest"]:
        out.sample(name, f'action="{_label(row.action)}"', float(row.seconds))
    name = "usher_concurrency_limit"
    out.family(name, "gauge", "The concurrency limit of each of the action's lines.")
    for row in rows["limits"]:
        value = default_concurrency if row.concurrency is None else row.concurrency
        out.sample(name, f'action="{_label(row.action)}"', value)
    rejected = [(r.action, r.reason, r.n) for r in rows["rejected"]]
    rejected += [
        ("", f"webhook_{r.outcome}", r.count) for r in hooks if r.outcome not in WEBHOOK_TAKEN
    ]
    totals: dict[tuple[str, str], int] = {}
    for action, reason, n in rejected:
        totals[(action, reason)] = totals.get((action, reason), 0) + n
    name = "usher_requests_rejected_total"
    out.family(name, "counter", "Refused requests that Postgres records, by reason.")
    for (action, reason), n in sorted(totals.items()):
        out.sample(name, f'action="{_label(action)}",reason="{_label(reason)}"', n)
    name = "usher_events_total"
    out.family(name, "counter", "Events received (posted, from webhooks, schedules, chains).")
    for row in rows["events"]:
        out.sample(name, f'trigger="{_label(row.trigger)}"', row.n)
    name = "usher_enforcements_total"
    out.family(name, "counter", "Rules matching events: executed, rejected or skipped.")
    for row in rows["enforcements"]:
        out.sample(name, f'rule="{_label(row.rule)}",status="{_label(row.status)}"', row.n)
    name = "usher_schedule_fires_total"
    out.family(name, "counter", "Ticks of each schedule fired.")
    for row in rows["fires"]:
        out.sample(name, f'schedule="{_label(row.schedule)}"', row.n)


class Cache:
    """The last rendered text while it is younger than ``max_age_s``; else one caller renders
    it again while the others wait for, and then share, the new text."""

    def __init__(self, render: Callable[[], bytes], max_age_s: float) -> None:
        self.render = render
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._text: bytes | None = None
        self._at = 0.0

    def get(self) -> bytes:
        with self._lock:
            if self._text is None or time.monotonic() - self._at >= self.max_age_s:
                started = time.monotonic()  # the age counts from when the queries began
                self._text = self.render()
                self._at = started
            return self._text
