"""The dashboard tests' data: actions in the states an operator meets, as workers, the
sweeper and the event processor leave them. No worker runs: a test claims and releases an
execution itself, which is what a worker would do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, text

from app import config, db
from policies import admission, control, events, lines, recovery
from policies import packs as app_packs
from tests.support import flow, packs

WORKER = "worker-1@ops-host"
# What an operator meets in a dead-letter queue: refs, parameters and errors of real length.
LEDGER = "billing.reconcile_customer_ledger_entries"
LEDGER_ERROR = (
    "psycopg.errors.SerializationFailure: could not serialize access due to concurrent "
    'update of row (1234,56) in relation "ledger_entries" while reconciling customer '
    "c-000417 against ledger eu-west-1/primary; the transaction was rolled back after "
    "3 tries, retry the reconciliation once the nightly settlement run has finished"
)
# A fixed backoff, long enough to see on the timeline.
BACKOFF_MS = 500


@dataclass(frozen=True)
class Seeded:
    deploy: list[int]
    dead: list[int]
    retrying: int
    retried: int  # succeeded on its second attempt, with a big result
    ledger_dead: int


def status(engine: Engine, execution_id: int) -> tuple[str, int]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, attempt FROM executions WHERE id = :id"), {"id": execution_id}
        ).one()
    return str(row.status), int(row.attempt)


def run(
    engine: Engine,
    settings: config.Settings,
    execution_id: int,
    outcome: str = "succeeded",
    error: str | None = None,
    transient: bool = True,
    result: Any = None,
) -> str | None:
    """What a worker does with a scheduled execution: claim it, then release it."""
    _, attempt = status(engine, execution_id)
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, execution_id, attempt, WORKER, settings.lease_s)
    ended = admission.Ended(execution_id, attempt, outcome, result, error, transient)
    with db.unit_of_work(engine) as session:
        released = admission.release(session, settings, ended)
    return released.status


def requeue_due(engine: Engine, settings: config.Settings, execution_id: int) -> bool:
    """What the sweeper does once a retry falls due: put it back in its line (and admit);
    True once the execution holds a slot again."""
    with engine.connect() as conn:
        queue_id = conn.execute(
            text("SELECT queue_id FROM executions WHERE id = :id"), {"id": execution_id}
        ).scalar_one()
    with db.unit_of_work(engine) as session:
        lines.requeue_due(session, lines.lock_line(session, settings, queue_id))
    return status(engine, execution_id)[0] == "scheduled"


def retry_then(
    engine: Engine, settings: config.Settings, execution_id: int, **ended: Any
) -> str | None:
    """A transient failure, the backoff, the retry back in line, then ``ended``."""
    assert run(engine, settings, execution_id, "failed", "TimeoutError: ledger") == "retrying"
    flow.wait_until(lambda: requeue_due(engine, settings, execution_id), 5.0, what="the retry")
    return run(engine, settings, execution_id, **ended)


def _rules(root: Path) -> None:
    (root / "rules").mkdir(exist_ok=True)
    rules: list[dict[str, Any]] = [
        {
            "name": "restart_db_on_alert",
            "trigger": "alert",
            "criteria": {"payload.host": {"regex": "^db"}},
            "action": "ops.restart_service",
            "parameters": {"host": "{{ event.payload.host }}"},
        },
        {"name": "page_oncall", "trigger": "alert", "action": "ops.notify", "enabled": False},
        {
            "name": "deploy_on_merge",
            "trigger": "merged",
            "action": "ops.deploy",
            "parameters": {"service": "{{ event.payload.service }}", "version": "main"},
        },
    ]
    for rule in rules:
        (root / "rules" / f"{rule['name']}.yaml").write_text(yaml.safe_dump(rule))


def samples(engine: Engine, minutes: int = 60) -> None:
    """``minutes`` of history, as the sweeper samples it every 15 s, ending with the present."""
    with db.unit_of_work(engine) as session:
        recovery.sample_lines(session)
        session.execute(
            text("""
                INSERT INTO queue_samples (action_id, sampled_at, queue_length, active_count,
                                           oldest_wait_s, completed)
                SELECT a.id, now() - make_interval(secs => 15 * k),
                       greatest(0, round(4 + 3.5 * sin(k / 19.0 + a.id) + 1.5 * sin(k / 5.0)))::int,
                       1, 40 + 30 * sin(k / 31.0 + a.id),
                       greatest(0, (SELECT coalesce(sum(q.total_completed), 0) FROM queues q
                                    WHERE q.action_id = a.id) - k)
                FROM actions a CROSS JOIN generate_series(1, :n) k
            """),
            {"n": minutes * 4 - 1},
        )


def big_result() -> dict[str, Any]:
    """A result of the size a sync job returns: many lines, and one line wider than a page."""
    return {
        "warehouse": "eu-west-1/fulfilment-07",
        "checked": [
            {"sku": f"SKU-{n:06d}", "on_hand": n * 7 % 40, "reserved": n % 5} for n in range(60)
        ],
        "manifest": "s3://inventory-exports/2026/12/01/" + "a1b2c3d4e5f60718" * 12 + ".jsonl.gz",
        "note": "counts differ from the ERP for "
        + ", ".join(f"SKU-{n:06d}" for n in range(0, 60, 4)),
    }


def _load(engine: Engine, directory: Path) -> str:
    retry = {"max_retries": 1, "initial_delay_ms": 10, "jitter": False}
    actions: list[dict[str, Any]] = [
        {
            "name": "deploy",
            "description": "Roll a service out, one deploy at a time.",
            "runner": "noop",
            "timeout_s": 600,
            "parameters": {
                "type": "object",
                "properties": {"service": {"type": "string"}, "version": {"type": "string"}},
            },
            "policy": {"concurrency": 1, "max_queue_length": 3},
        },
        {
            "name": "restart_service",
            "description": "Restart a service; one restart per host at a time.",
            "runner": "noop",
            "parameters": {"type": "object", "properties": {"host": {"type": "string"}}},
            "policy": {"concurrency": 1, "partition_by": ["host"]},
        },
        {"name": "notify", "runner": "noop", "policy": {"concurrency": 3}},
        {
            "name": "validate_order",
            "description": "Validate orders in strict order; bad ones end in the DLQ.",
            "runner": "noop",
            "policy": {"concurrency": 2, "retry": retry},
        },
        {
            "name": "sync_inventory",
            "description": "Compare stock with the ERP; a busy ledger is retried after 500 ms.",
            "runner": "noop",
            "policy": {
                "concurrency": 1,
                "retry": retry | {"strategy": "fixed", "initial_delay_ms": BACKOFF_MS},
            },
        },
    ]
    name = packs.load(
        engine, directory, actions, {"concurrency": 2, "queue_timeout_s": 3600}, name="ops"
    )
    _rules(directory / name)
    with db.unit_of_work(engine) as session:
        app_packs.load(session, directory / name)
    billing = [{"name": LEDGER.split(".")[1], "runner": "noop", "policy": {"concurrency": 4}}]
    packs.load(engine, directory, billing, name=LEDGER.split(".")[0])
    return name


def seed(engine: Engine, settings: config.Settings, directory: Path) -> Seeded:
    """Six actions in states an operator meets: waiting, running, retrying, retried, dead,
    paused; events and their enforcements; an hour of samples."""
    _load(engine, directory)

    def submit(ref: str, parameters: list[dict[str, Any]], priority: int = 0) -> list[int]:
        ref = ref if "." in ref else f"ops.{ref}"
        return flow.submit(engine, settings, None, ref, parameters, priority)

    versions = ["2.4.0", "2.4.1", "2.5.0", "2.5.1"]
    deploy = submit("deploy", [{"service": "api", "version": v} for v in versions])
    run(engine, settings, deploy[0])  # the first deploy is done; the second one is running
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, deploy[1], 1, WORKER, settings.lease_s)
    submit("restart_service", [{"host": h} for h in ["db1", "db1", "db1", "db2", "db2", "web1"]])
    notify = submit("notify", [{"n": n} for n in range(8)])
    for execution_id in notify[:5]:
        run(engine, settings, execution_id)
    # Two orders die: one after a retry, one at once (a permanent error)
    orders = submit("validate_order", [{"order": 101}, {"order": 102}])
    ended = {"outcome": "failed", "error": "TimeoutError: ledger"}
    assert retry_then(engine, settings, orders[0], **ended) == "dead"
    assert run(engine, settings, orders[1], "failed", "ValueError: bad amount", False) == "dead"
    # Then one backs off to retry while a rush order overtakes the line
    orders += submit("validate_order", [{"order": 103}, {"order": 104}])
    orders += submit("validate_order", [{"order": 105, "rush": True}], priority=5)
    assert run(engine, settings, orders[3], "failed", "ConnectionError: db") == "retrying"
    # A sync that succeeds on its second try, after the backoff, with a big result
    synced = submit("sync_inventory", [{"warehouse": "eu-west-1/fulfilment-07"}])[0]
    assert retry_then(engine, settings, synced, result=big_result()) == "succeeded"
    # A reconciliation with parameters and an error of real length dies at once
    ledger = submit(
        LEDGER,
        [
            {
                "customer": "c-000417",
                "ledger": "eu-west-1/primary",
                "window": "2026-11-01T00:00:00Z/2026-12-01T00:00:00Z",
            }
        ],
    )[0]
    assert run(engine, settings, ledger, "failed", LEDGER_ERROR, False) == "dead"
    for trigger, payload in [
        ("alert", {"host": "db1", "severity": "high"}),
        ("alert", {"host": "web1", "severity": "low"}),
        ("merged", {"service": "billing"}),
        ("merged", {"service": "search"}),  # the deploy line is full by now: rejected
    ]:
        with db.unit_of_work(engine) as session:
            events.process(session, settings, events.store(session, trigger, payload))
    with db.unit_of_work(engine) as session:  # an operator holds the notifications
        control.set_paused(session, settings, "ops.notify", True)
    samples(engine)
    return Seeded(
        deploy=deploy,
        dead=[orders[1], orders[0]],
        retrying=orders[3],
        retried=synced,
        ledger_dead=ledger,
    )
