"""The ``usher`` command: the composition root that wires settings, Postgres, Celery and web.

The commands that run processes and benchmarks live in ``app.cli_serve``; what all commands
share (the runtime, tables, JSON) in ``app.cli_common``.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from app import celery as usher_celery
from app import cli_admin, cli_serve, db, packs, queries
from app.cli_common import (
    FINAL,
    Runtime,
    console,
    emit_json,
    err_console,
    pass_runtime,
    table,
)
from app.errors import UsherError
from app.models import STATUSES


@click.group()
@click.version_option(package_name="usher")
def main() -> None:
    """Usher: automation actions on Celery under strict FIFO lines and global limits."""


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@pass_runtime
def db_upgrade(rt: Runtime) -> None:
    """Apply every migration (the only way the schema is made)."""
    assert rt.settings.database_url
    db.upgrade(rt.settings.database_url)
    console.print("[green]database is at the latest schema[/green]")


@main.group("packs")
def packs_group() -> None:
    """Packs of actions and their policies."""


@packs_group.command("load")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_runtime
def packs_load(rt: Runtime, path: Path, as_json: bool) -> None:
    """Register or update the pack(s) at PATH: a pack directory or a directory of packs.
    Changed limits take effect at once: every line of the loaded actions is re-admitted."""
    from policies import control

    with db.unit_of_work(rt.engine) as session:
        specs = packs.load(session, path)
        refs = [f"{s.name}.{a['name']}" for s in specs for a in s.actions]
        grants = control.readmit_refs(session, rt.settings, refs)
    usher_celery.publish(rt.celery, grants)
    loaded = [{"pack": s.name, "actions": [a["name"] for a in s.actions]} for s in specs]
    if as_json:
        emit_json(loaded)
        return
    table(["pack", "actions"], [[p["pack"], ", ".join(p["actions"])] for p in loaded], "loaded")


def parse_parameters(pairs: tuple[str, ...]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="PARAMETERS")
        try:
            parameters[key] = json.loads(raw)
        except json.JSONDecodeError:
            parameters[key] = raw
    return parameters


@main.command("run")
@click.argument("action_ref")
@click.argument("parameters", nargs=-1)
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--wait", is_flag=True, help="wait for the final status and print the result")
@click.option("--timeout", type=float, default=None, help="give up waiting after this many seconds")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def run_action(
    rt: Runtime,
    action_ref: str,
    parameters: tuple[str, ...],
    priority: int,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Request an execution of ACTION_REF with key=value parameters (values may be JSON)."""
    from policies import admission

    with db.unit_of_work(rt.engine) as session:
        enqueued = admission.enqueue(
            session, rt.settings, action_ref, parse_parameters(parameters), priority
        )
    usher_celery.publish(rt.celery, enqueued.grants)
    if not wait:
        if as_json:
            emit_json({"id": enqueued.execution_id, "seq": enqueued.seq})
        else:
            click.echo(enqueued.execution_id)
        return
    result = wait_for(rt, enqueued.execution_id, timeout)
    if as_json:
        emit_json(result)
    else:
        console.print(f"execution {result['id']}: [bold]{result['status']}[/bold]")
        if result.get("result") is not None:
            console.print_json(json.dumps(result["result"], default=str))
        if result.get("error"):
            err_console.print(f"[red]{result['error']}[/red]")
    if result["status"] != "succeeded":
        sys.exit(1)


def wait_for(rt: Runtime, execution_id: int, timeout: float | None) -> dict[str, Any]:
    """Poll until the execution ends, showing where it stands: position and ETA while it
    waits, then the running time. In a terminal the line updates in place; piped, each
    change is printed once."""
    from policies import eta

    deadline = None if timeout is None else time.monotonic() + timeout
    live = console.is_terminal
    shown = ""
    with console.status(f"execution {execution_id}: waiting") if live else nullcontext() as spot:
        while True:
            with db.unit_of_work(rt.engine) as session:
                row = queries.execution(session, execution_id)
                where = eta.estimate(session, execution_id)
            if row["status"] in FINAL:
                return row
            text = _standing(execution_id, row, where)
            if spot is not None:
                spot.update(text)
            elif text.split(" (")[0] != shown.split(" (")[0]:
                click.echo(text)
            shown = text
            if deadline is not None and time.monotonic() > deadline:
                raise UsherError(f"execution {execution_id} is still {row['status']}; gave up")
            time.sleep(0.2)


def _standing(execution_id: int, row: dict[str, Any], where: dict[str, Any]) -> str:
    if row["status"] == "queued" and where["position"]:
        when = (
            f"ETA {datetime.fromisoformat(where['eta']).astimezone():%H:%M:%S}"
            if where["eta"]
            else "no ETA yet"
        )
        return f"execution {execution_id}: queued, position {where['position']} ({when})"
    if row["status"] == "running" and row["started_at"]:
        started = datetime.fromisoformat(row["started_at"])
        running = (datetime.now(UTC) - started).total_seconds()
        return f"execution {execution_id}: running on {row['worker']} ({running:.0f}s)"
    return f"execution {execution_id}: {row['status']}"


@main.command("queues")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def queues_cmd(rt: Runtime, as_json: bool) -> None:
    """One row per action line (and partition): waiting, active/limit, totals, oldest wait."""
    from policies import stats

    with db.unit_of_work(rt.engine) as session:
        rows = stats.lines(session, rt.settings)
    if as_json:
        emit_json(rows)
        return
    table(
        [
            "action",
            "partition",
            "queued",
            "active",
            "enqueued",
            "completed",
            "failed",
            "cancelled",
            "expired",
            "oldest wait",
        ],
        [
            [
                r["action_ref"],
                r["partition"],
                r["queue_length"],
                f"{r['active_count']}/{r['max_concurrent']}",
                r["total_enqueued"],
                r["total_completed"],
                r["total_failed"],
                r["total_cancelled"],
                r["total_expired"],
                f"{r['oldest_wait_s']:.1f}s" if r["oldest_wait_s"] is not None else "-",
            ]
            for r in rows
        ],
    )


@main.group("executions")
def executions_group() -> None:
    """Inspect and cancel executions."""


@executions_group.command("list")
@click.option("--action", default=None)
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def executions_list(
    rt: Runtime, action: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """Newest first."""
    with db.unit_of_work(rt.engine) as session:
        rows = queries.executions(session, action=action, status=status, limit=limit)
    if as_json:
        emit_json(rows)
        return
    table(
        ["id", "action", "status", "seq", "attempt", "enqueued", "finished", "worker"],
        [
            [
                r["id"],
                r["action_ref"],
                r["status"],
                r["seq"],
                r["attempt"],
                r["enqueued_at"],
                r["finished_at"],
                r["worker"],
            ]
            for r in rows
        ],
    )


@executions_group.command("show")
@click.argument("execution_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def executions_show(rt: Runtime, execution_id: int, as_json: bool) -> None:
    """Everything about one execution, with its place in line and ETA while it waits."""
    from policies import eta

    with db.unit_of_work(rt.engine) as session:
        row = queries.execution(session, execution_id)
        row.update(eta.estimate(session, execution_id))
    if as_json:
        emit_json(row)
        return
    out = Table(show_header=False, box=None)
    out.add_column(style="bold")
    out.add_column()
    for key, value in row.items():
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        out.add_row(key, "" if shown is None else str(shown))
    console.print(out)


@executions_group.command("cancel")
@click.argument("execution_id", type=int)
@pass_runtime
def executions_cancel(rt: Runtime, execution_id: int) -> None:
    """Cancel a queued, scheduled or running execution (a running one is terminated)."""
    from policies import admission

    with db.unit_of_work(rt.engine) as session:
        cancelled = admission.cancel(session, rt.settings, execution_id)
        attempt = queries.execution(session, execution_id)["attempt"]
    usher_celery.terminate(rt.celery, execution_id, attempt, cancelled.previous_status)
    usher_celery.publish(rt.celery, cancelled.grants)
    console.print(f"execution {execution_id}: cancelled (was {cancelled.previous_status})")


@main.group("events")
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
    from policies import events

    try:
        document = json.loads(payload)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--payload") from None
    with db.unit_of_work(rt.engine) as session:
        event_id = events.store(session, trigger, document, rt.settings.max_payload_bytes)
    usher_celery.send_event(rt.celery, event_id)
    deadline = time.monotonic() + timeout
    with console.status(f"event {event_id}: waiting for a worker to process it"):
        while True:
            with db.unit_of_work(rt.engine) as session:
                done = events.processed(session, event_id)
                found = events.enforcements(session, event_id)
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
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


@events_group.command("replay")
@click.argument("event_id", type=click.IntRange(1))
@pass_runtime
def events_replay(rt: Runtime, event_id: int) -> None:
    """Process an event that failed for good again, with its tries back."""
    from policies import events

    with db.unit_of_work(rt.engine) as session:
        events.replay(session, event_id)
    usher_celery.send_event(rt.celery, event_id)
    console.print(f"event {event_id} sent to be processed again")


@main.group("dlq")
def dlq_group() -> None:
    """The dead-letter queue: executions that failed for good."""


@dlq_group.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def dlq_list(rt: Runtime, limit: int, as_json: bool) -> None:
    """Newest first, with the last error."""
    from policies import dlq

    with db.unit_of_work(rt.engine) as session:
        rows = dlq.items(session, limit)
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
    from policies import dlq

    if (execution_id is None) != replay_all:
        raise click.UsageError("give an execution ID or --all")
    with db.unit_of_work(rt.engine) as session:
        ids = dlq.dead_ids(session) if replay_all else [execution_id]
    for dead_id in ids:
        assert dead_id is not None
        with db.unit_of_work(rt.engine) as session:
            enqueued = dlq.replay(session, rt.settings, dead_id)
        usher_celery.publish(rt.celery, enqueued.grants)
        console.print(f"execution {dead_id} replayed as {enqueued.execution_id}")
    if not ids:
        console.print("the dead-letter queue is empty")


@dlq_group.command("purge")
@click.option("--yes", is_flag=True, help="do not ask")
@pass_runtime
def dlq_purge(rt: Runtime, yes: bool) -> None:
    """Empty the dead-letter queue (the executions and their history are kept)."""
    from policies import dlq

    if not yes and sys.stdin.isatty():
        click.confirm("remove every item from the dead-letter queue?", abort=True)
    with db.unit_of_work(rt.engine) as session:
        purged = dlq.purge(session)
    console.print(f"purged {purged} item(s)")


for command in [*cli_serve.COMMANDS, *cli_admin.GROUPS]:
    main.add_command(command)


def entry() -> None:
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except UsherError as error:
        err_console.print(f"[red]error:[/red] {error.message}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    entry()
