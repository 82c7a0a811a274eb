"""``usher schedules``: the packs' schedules, when they fire next, pausing and resuming."""

from __future__ import annotations

from typing import Any

import click

from app.cli.common import Runtime, console, emit_json, pass_runtime, table


@click.group("schedules")
def schedules_group() -> None:
    """The packs' schedules (fired by `usher beat`, each tick once)."""


def state(schedule: dict[str, Any]) -> str:
    if not schedule["enabled"]:
        return "disabled"
    return "paused" if schedule["paused"] else "enabled"


@schedules_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def schedules_list(rt: Runtime, as_json: bool) -> None:
    """Every schedule: its timing, timezone, next and last tick, state and what it fires."""
    rows = rt.api.call("schedules")["items"]
    if as_json:
        emit_json(rows)
        return
    table(
        ["ref", "spec", "timezone", "next fire", "last fire", "state", "fires"],
        [
            [
                r["ref"],
                r["spec"],
                r["timezone"],
                r["next_fire_at"] if r["enabled"] and not r["paused"] else None,
                r["last_fire_at"],
                state(r),
                r["action"] or f"event {r['trigger']}",
            ]
            for r in rows
        ],
    )


@schedules_group.command("pause")
@click.argument("ref")
@pass_runtime
def schedules_pause(rt: Runtime, ref: str) -> None:
    """No tick fires until it is resumed."""
    _set_paused(rt, ref, True)


@schedules_group.command("resume")
@click.argument("ref")
@pass_runtime
def schedules_resume(rt: Runtime, ref: str) -> None:
    """Fire again from the next tick (the ticks of the pause are not run)."""
    _set_paused(rt, ref, False)


def _set_paused(rt: Runtime, ref: str, paused: bool) -> None:
    schedule = rt.api.call("pause_schedule" if paused else "resume_schedule", ref=ref)
    following = f", next fire {schedule['next_fire_at']}" if not paused else ""
    console.print(f"{ref}: {state(schedule)}{following}", soft_wrap=True)


GROUPS = [schedules_group]
