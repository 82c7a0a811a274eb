"""``usher run``, ``usher queues`` and ``usher executions``: requesting work and watching it."""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from app import bounds, search
from app.cli import pools as cli_pools
from app.cli.common import (
    Duration,
    Runtime,
    console,
    emit_json,
    err_console,
    int_range,
    pass_runtime,
    table,
)
from app.errors import UsherError
from app.models import FINISHED, STATUSES


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


@click.command("run")
@click.argument("action_ref")
@click.argument("parameters", nargs=-1)
@click.option(
    "--priority",
    type=int_range(bounds.PRIORITY),
    default=0,
    show_default=True,
    help="higher runs first within the line (the API's bounds)",
)
@click.option(
    "--at",
    "run_at",
    type=str,
    default=None,
    help="run at this ISO 8601 time (local time without an offset): delayed until then",
)
@click.option(
    "--in",
    "delay_s",
    type=Duration(),
    default=None,
    help="run after this long (90s, 10m, 2h, 1d): delayed until then",
)
@click.option("--wait", is_flag=True, help="wait for the final status and print the result")
@click.option("--timeout", type=float, default=None, help="give up waiting after this many seconds")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def run_action(
    rt: Runtime,
    action_ref: str,
    parameters: tuple[str, ...],
    priority: int,
    run_at: str | None,
    delay_s: float | None,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Request an execution of ACTION_REF with key=value parameters (values may be JSON),
    now or later (--at, --in)."""
    if run_at is not None and delay_s is not None:
        raise click.UsageError("give --at or --in, not both")
    request: dict[str, Any] = {
        "action": action_ref,
        "parameters": parse_parameters(parameters),
        "priority": priority,
    }
    if run_at is not None:
        request["run_at"] = _time(run_at).isoformat()
    if delay_s is not None:
        request["delay_s"] = delay_s
    submitted = rt.api.call("submit", request)
    if not wait:
        if as_json:
            emit_json(submitted)
        elif submitted.get("run_at") is not None:
            click.echo(submitted["id"])
            err_console.print(f"delayed until {_local(submitted['run_at'])}")
        else:
            click.echo(submitted["id"])
        return
    result = wait_for(rt, submitted["id"], timeout)
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


def _time(text: str) -> datetime:
    """An ``--at`` time: ISO 8601, local time when it names no offset."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 time such as 2026-12-24T18:00:00+01:00",
            param_hint="--at",
        ) from None
    return when if when.tzinfo is not None else when.astimezone()


def _local(when: datetime | str) -> str:
    at = datetime.fromisoformat(when) if isinstance(when, str) else when
    return f"{at.astimezone():%Y-%m-%d %H:%M:%S %Z}"


def wait_for(rt: Runtime, execution_id: int, timeout: float | None) -> dict[str, Any]:
    """Poll until the execution ends, showing where it stands: position and ETA while it
    waits, then the running time. In a terminal the line updates in place; piped, each
    change is printed once."""
    deadline = None if timeout is None else time.monotonic() + timeout
    live = console.is_terminal
    shown = ""
    with console.status(f"execution {execution_id}: waiting") if live else nullcontext() as spot:
        while True:
            row = rt.api.call("execution", execution_id=execution_id)
            if row["status"] in FINISHED:
                return row
            text = _standing(execution_id, row)
            if spot is not None:
                spot.update(text)
            elif text.split(" (")[0] != shown.split(" (")[0]:
                click.echo(text)
            shown = text
            if deadline is not None and time.monotonic() > deadline:
                raise StillWaiting(f"execution {execution_id} is still {row['status']}; gave up")
            time.sleep(0.2)


class StillWaiting(UsherError):
    """``run --wait --timeout`` gave up: exit code 2, as for no answer (1 is for an end other
    than succeeded)."""

    code = "still_waiting"
    exit_code = 2


def _standing(execution_id: int, row: dict[str, Any]) -> str:
    """Where an execution stands, from its answer (with its place in line and ETA)."""
    if row["status"] == "delayed" and row.get("run_at"):
        return f"execution {execution_id}: delayed until {_local(row['run_at'])}"
    if row["status"] == "queued" and row.get("position"):
        if row.get("paused"):
            when = "the line is paused: `usher actions resume` to go on"
        elif row.get("eta"):
            when = f"ETA {datetime.fromisoformat(row['eta']).astimezone():%H:%M:%S}"
        else:
            when = "no ETA yet"
        return f"execution {execution_id}: queued, position {row['position']} ({when})"
    if row["status"] == "running" and row["started_at"]:
        started = datetime.fromisoformat(row["started_at"])
        running = (datetime.now(UTC) - started).total_seconds()
        return f"execution {execution_id}: running on {row['worker']} ({running:.0f}s)"
    return f"execution {execution_id}: {row['status']}"


@click.command("queues")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def queues_cmd(rt: Runtime, as_json: bool) -> None:
    """One row per action line (and partition): waiting, active/limit, totals, oldest wait;
    then the levels above the lines: each action's total and pools, active/limit."""
    answer = rt.api.call("queues")
    rows, held = answer["items"], answer["levels"]
    if as_json:
        emit_json(rows)
        return
    table(
        [
            "action",
            "partition",
            "state",
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
                "paused" if r["paused"] else "open",
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
    if held:
        levels_table(held)


def levels_table(held: dict[str, Any]) -> None:
    """Each action's total (over all its partitions) and pools: active/limit."""
    rows = []
    for ref, use in held.items():
        levels = [("total", use["total"])] if use["total"] else []
        levels += [(f"pool {p['ref']}", p) for p in use["pools"]]
        rows += [[ref, name, f"{x['active']}/{cli_pools.limit_text(x)}"] for name, x in levels]
    table(["action", "level", "active"], rows, "levels above the lines")


@click.group("executions")
def executions_group() -> None:
    """Inspect and cancel executions."""


@executions_group.command("list")
@click.option("--action", default=None)
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--param", "params", multiple=True, help="NAME=VALUE, a parameter equal to it")
@click.option("--since", default=None, help="enqueued at or after (ISO 8601)")
@click.option("--until", default=None, help="enqueued before (ISO 8601)")
@click.option("--rule", default=None, help="requested by this rule")
@click.option("--requested-by", default=None)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def executions_list(
    rt: Runtime,
    action: str | None,
    status: str | None,
    limit: int,
    params: tuple[str, ...],
    since: str | None,
    until: str | None,
    rule: str | None,
    requested_by: str | None,
    as_json: bool,
) -> None:
    """Newest first; filters as the API's (``app.search``)."""
    query: list[tuple[str, Any]] = [
        ("action", action),
        ("status", status),
        ("limit", limit),
        ("since", _time(since).isoformat() if since else None),
        ("until", _time(until).isoformat() if until else None),
        ("rule", rule),
        ("requested_by", requested_by),
    ]
    for pair in params:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        query.append((search.PREFIX + name, value))
    rows = rt.api.call("executions", params=query)["items"]
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
    row = rt.api.call("execution", execution_id=execution_id)
    if as_json:
        emit_json(row)
        return
    out = Table(show_header=False, box=None)
    out.add_column(style="bold")
    out.add_column()
    if row["status"] == "delayed" and row.get("run_at"):
        row["position"] = f"delayed until {_local(row['run_at'])}"
    for key, value in row.items():
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        out.add_row(key, "" if shown is None else str(shown))
    console.print(out)


@executions_group.command("cancel")
@click.argument("execution_id", type=int)
@pass_runtime
def executions_cancel(rt: Runtime, execution_id: int) -> None:
    """Cancel a queued, scheduled or running execution (a running one is terminated)."""
    was = rt.api.call("execution", execution_id=execution_id)["status"]
    rt.api.call("cancel", execution_id=execution_id)
    console.print(f"execution {execution_id}: cancelled (was {was})")


@executions_group.command("tail")
@click.argument("execution_id", type=int)
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 60),
    default=0.5,
    show_default=True,
    help="seconds between looks",
)
@pass_runtime
def executions_tail(rt: Runtime, execution_id: int, interval: float) -> None:
    """Print an execution's output as it arrives (stdout here, stderr on stderr), attempt
    by attempt, until it is final; exit code 0 if it succeeded, 1 otherwise."""
    attempt, shown = 0, {"stdout": 0, "stderr": 0}
    while True:
        now = rt.api.call("output", execution_id=execution_id)
        if now["attempt"] != attempt and attempt:
            # The attempt before may have written its last piece since the last look.
            before = rt.api.call("output", params={"attempt": attempt}, execution_id=execution_id)
            _print_new(before, shown)
            err_console.print(f"--- attempt {now['attempt']} ---")
            shown = {"stdout": 0, "stderr": 0}
        attempt = now["attempt"]
        _print_new(now, shown)
        if now["finished"]:
            break
        time.sleep(interval)
    if now["status"] != "succeeded":
        err_console.print(f"execution {execution_id}: {now['status']}")
        sys.exit(1)


def _print_new(read: dict[str, Any], shown: dict[str, int]) -> None:
    for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
        text = read[name]
        if len(text) > shown[name]:
            stream.write(text[shown[name] :])
            stream.flush()
            shown[name] = len(text)


COMMANDS = [run_action, queues_cmd, executions_group]

# ``usher executions rerun``: its own module, on this group.
from app.cli import reruns  # noqa: E402, F401
