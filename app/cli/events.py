"""``usher events`` and ``usher dlq``: what rules react to, and what failed for good."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import Any

import click

from app import bounds
from app.cli.common import (
    Runtime,
    console,
    emit_json,
    err_console,
    int_range,
    pass_runtime,
    table,
)


@click.group("events")
def events_group() -> None:
    """Events: what rules react to."""


@events_group.command("send")
@click.argument("trigger")
@click.option("--payload", default="{}", help="the event's payload, a JSON object")
@click.option(
    "--timeout",
    type=float,
    default=30,
    show_default=True,
    help="seconds to wait for a worker to process it (0: do not wait)",
)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def events_send(rt: Runtime, trigger: str, payload: str, timeout: float, as_json: bool) -> None:
    """Emit an event; prints the enforcements it caused (rule, status, execution)."""
    try:
        document = json.loads(payload)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--payload") from None
    event_id = rt.api.call("send_event", {"trigger": trigger, "payload": document})["event_id"]
    deadline = time.monotonic() + timeout
    with console.status(f"event {event_id}: waiting for a worker to process it"):
        while True:
            state = rt.api.call("event", event_id=event_id)
            done = bool(state["processed"])
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    found = state["enforcements"]
    if as_json:
        emit_json({"event_id": event_id, "processed": done, "enforcements": found})
        return
    if not done:
        err_console.print(
            f"event {event_id} is stored; no worker processed it within {timeout:g}s "
            "(is `usher worker` running?)"
        )
        return
    if not found:
        console.print(f"event {event_id}: no rule matched")
        return
    table(
        ["id", "rule", "status", "execution", "reason"],
        [[f["id"], f["rule"], f["status"], f["execution_id"], f["reason"]] for f in found],
        f"event {event_id}",
    )


@events_group.command("list")
@click.option("--trigger", help="only the events of exactly this trigger")
@click.option(
    "--limit",
    type=int_range(bounds.EVENTS_PAGE),
    default=bounds.EVENTS_PAGE_DEFAULT,
    show_default=True,
)
@click.option("--before", type=click.IntRange(1), help="older than this event id (a page's next)")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def events_list(
    rt: Runtime, trigger: str | None, limit: int, before: int | None, as_json: bool
) -> None:
    """Events, newest first, with what their rules did and whether they were processed."""
    page = rt.api.call("events", params={"trigger": trigger, "limit": limit, "before": before})
    items, following = page["items"], page["next"]
    if as_json:
        emit_json({"items": items, "next": following})
        return
    table(
        ["id", "received", "trigger", "enforcements", "state"],
        [[e["id"], e["received_at"], e["trigger"], summary(e), e["state"]] for e in items],
    )
    if following is not None:
        console.print(f"older: --before {following}", highlight=False)


def summary(event: dict[str, Any]) -> str:
    """What the event's enforcements did, e.g. '2 executed, 1 rejected'."""
    counts = Counter(f["status"] for f in event["enforcements"])
    if not counts:
        return "no rule matched" if event["state"] == "processed" else ""
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


@events_group.command("replay")
@click.argument("event_id", type=click.IntRange(1))
@pass_runtime
def events_replay(rt: Runtime, event_id: int) -> None:
    """Process an event that failed for good again, with its tries back."""
    rt.api.call("replay_event", event_id=event_id)
    console.print(f"event {event_id} sent to be processed again")


@click.group("dlq")
def dlq_group() -> None:
    """The dead-letter queue: executions that failed for good."""


@dlq_group.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def dlq_list(rt: Runtime, limit: int, as_json: bool) -> None:
    """Newest first, with the last error."""
    rows = rt.api.call("dlq", params={"limit": limit})["items"]
    if as_json:
        emit_json(rows)
        return
    table(
        ["id", "action", "attempt", "finished", "error"],
        [
            [r["id"], r["action_ref"], r["attempt"], r["finished_at"], (r["error"] or "")[:100]]
            for r in rows
        ],
        "dead-letter queue",
    )


@dlq_group.command("replay")
@click.argument("execution_id", type=int, required=False)
@click.option("--all", "replay_all", is_flag=True, help="replay every item")
@pass_runtime
def dlq_replay(rt: Runtime, execution_id: int | None, replay_all: bool) -> None:
    """Enqueue a dead execution again (at the tail of its line), or --all of them."""
    if (execution_id is None) != replay_all:
        raise click.UsageError("give an execution ID or --all")
    ids = _dead_ids(rt) if replay_all else [execution_id]
    for dead_id in ids:
        replayed = rt.api.call("replay_dead", execution_id=dead_id)
        console.print(f"execution {dead_id} replayed as {replayed['id']}")
    if not ids:
        console.print("the dead-letter queue is empty")


def _dead_ids(rt: Runtime) -> list[int]:
    """Every dead execution's id, oldest first (the order a replay keeps), page by page."""
    found: list[int] = []
    before = None
    while True:
        page = rt.api.call("dlq", params={"limit": 1000, "before": before})
        found += [item["id"] for item in page["items"]]
        before = page["next"]
        if before is None:
            return found[::-1]


@dlq_group.command("purge")
@click.option("--yes", is_flag=True, help="do not ask")
@pass_runtime
def dlq_purge(rt: Runtime, yes: bool) -> None:
    """Empty the dead-letter queue (the executions and their history are kept)."""
    if not yes and sys.stdin.isatty():
        click.confirm("remove every item from the dead-letter queue?", abort=True)
    purged = rt.api.call("purge_dlq")["purged"]
    console.print(f"purged {purged} item(s)")


COMMANDS = [events_group, dlq_group]
