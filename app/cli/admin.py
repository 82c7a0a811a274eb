"""``usher tokens`` and ``usher actions``: API tokens and live control of a running system."""

from __future__ import annotations

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


@click.group("tokens")
def tokens_group() -> None:
    """API tokens (admin, or read-only with --read-only)."""


@tokens_group.command("create")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="may read but not change anything")
@pass_runtime
def tokens_create(rt: Runtime, name: str, read_only: bool) -> None:
    """Create a token and print it once; only its hash is stored."""
    token = rt.api.call("create_token", {"name": name, "read_only": read_only})["token"]
    err_console.print(
        f"token {name!r} ({'read-only' if read_only else 'admin'}); it is shown only now:"
    )
    click.echo(token)


@tokens_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def tokens_list(rt: Runtime, as_json: bool) -> None:
    """Every token: name, kind, created, last used, revoked."""
    rows = rt.api.call("tokens")["items"]
    if as_json:
        emit_json(rows)
        return
    table(
        ["name", "kind", "created", "last used", "revoked"],
        [
            [
                r["name"],
                "read-only" if r["read_only"] else "admin",
                r["created_at"],
                r["last_used_at"],
                r["revoked_at"],
            ]
            for r in rows
        ],
    )


@tokens_group.command("revoke")
@click.argument("name")
@pass_runtime
def tokens_revoke(rt: Runtime, name: str) -> None:
    """Revoke a token: it stops working at once."""
    rt.api.call("revoke_token", name=name)
    console.print(f"token {name!r} revoked")


@click.group("actions")
def actions_group() -> None:
    """Control an action's lines live: pause, resume, limits."""


def _after_control(ref: str, line: dict[str, Any]) -> None:
    """What a control did to the action's lines: the API's answer, the queue stats after."""
    state = "paused (nothing is granted; `usher actions resume` to go on)" if line["paused"] else ""
    console.print(
        f"{ref}: {state + ', ' if state else ''}{line['queue_length']} waiting, "
        f"{line['active_count']}/{line['max_concurrent']} active, {line['granted']} granted now",
        soft_wrap=True,
    )


@actions_group.command("pause")
@click.argument("ref")
@pass_runtime
def actions_pause(rt: Runtime, ref: str) -> None:
    """Grant nothing more; running work finishes, waiting work keeps its place."""
    _set_paused(rt, ref, True)


@actions_group.command("resume")
@click.argument("ref")
@pass_runtime
def actions_resume(rt: Runtime, ref: str) -> None:
    """Resume granting; what fits under the limit starts at once."""
    _set_paused(rt, ref, False)


def _set_paused(rt: Runtime, ref: str, paused: bool) -> None:
    _after_control(ref, rt.api.call("pause" if paused else "resume", ref=ref))


@actions_group.command("set")
@click.argument("ref")
@click.option("--concurrency", type=int_range(bounds.CONCURRENCY))
@click.option("--max-queue-length", type=int_range(bounds.QUEUE_LENGTH))
@click.option("--queue-timeout-s", type=int_range(bounds.TIMEOUT_S))
@click.option(
    "--total-concurrency",
    type=int_range(bounds.CONCURRENCY),
    help="over all its partitions (an action whose files give one)",
)
@pass_runtime
def actions_set(
    rt: Runtime,
    ref: str,
    concurrency: int | None,
    max_queue_length: int | None,
    queue_timeout_s: int | None,
    total_concurrency: int | None,
) -> None:
    """Change limits live (until the pack is loaded again). Raising grants at once."""
    changes = {
        key: value
        for key, value in (
            ("concurrency", concurrency),
            ("max_queue_length", max_queue_length),
            ("queue_timeout_s", queue_timeout_s),
            ("total_concurrency", total_concurrency),
        )
        if value is not None
    }
    _after_control(ref, rt.api.call("policy", changes, ref=ref))


@actions_group.command("cancel-waiting")
@click.argument("ref")
@click.option("--partition", help="the line's partition key; without it, every line")
@pass_runtime
def actions_cancel_waiting(rt: Runtime, ref: str, partition: str | None) -> None:
    """Cancel every queued execution of the action's line (as POST
    /api/v1/actions/REF/cancel-waiting); running and delayed ones stay."""
    done = rt.api.call("cancel_waiting", params={"partition": partition}, ref=ref)
    line = f" [{partition}]" if partition is not None else ""
    console.print(f"{ref}{line}: {len(done['cancelled'])} waiting cancelled", soft_wrap=True)


GROUPS = [tokens_group, actions_group]
