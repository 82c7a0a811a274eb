"""``usher pools``: the pools the packs declare, how full they are, and their live limits."""

from __future__ import annotations

from typing import Any

import click

from app import bounds
from app.cli.common import Runtime, console, emit_json, int_range, pass_runtime, table


@click.group("pools")
def pools_group() -> None:
    """Pools: limits shared by the actions that name them (pools: in pack.yaml)."""


def limit_text(level: dict[str, Any]) -> str:
    """A level's limit as tables show it; a live one says so, and what the files say."""
    if not level["live"]:
        return str(level["limit"])
    files = f", files {level['pack_limit']}" if "pack_limit" in level else ""
    return f"{level['limit']} (live{files})"


@pools_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def pools_list(rt: Runtime, as_json: bool) -> None:
    """Every pool: its limit (a live one marked), active, waiting across the lines of the
    actions that take it, and those actions."""
    rows = rt.api.call("pools")["items"]
    if as_json:
        emit_json(rows)
        return
    table(
        ["pool", "limit", "active", "queued", "actions"],
        [
            [r["ref"], limit_text(r), r["active"], r["waiting"], ", ".join(r["actions"]) or "-"]
            for r in rows
        ],
    )


@pools_group.command("set")
@click.argument("ref")
@click.option("--limit", type=int_range(bounds.CONCURRENCY), required=True)
@pass_runtime
def pools_set(rt: Runtime, ref: str, limit: int) -> None:
    """Change a pool's limit live, until its pack is loaded again. Raising it grants at once;
    lowering it lets running work finish."""
    pool = rt.api.call("set_pool", {"limit": limit}, ref=ref)
    console.print(
        f"{ref}: limit {limit_text(pool)}, {pool['active']} active, {pool['waiting']} waiting, "
        f"{pool['granted']} granted now",
        soft_wrap=True,
    )


GROUPS = [pools_group]
