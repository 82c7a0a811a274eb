"""``usher packs list``, ``usher actions list|show`` and ``usher rules``: what is loaded, and
a rule's enabled switch. The ``packs`` and ``actions`` groups are the ones of
``app.cli`` and ``app.cli.admin``; these commands join them."""

from __future__ import annotations

import json
from typing import Any

import click

from app.cli.common import Runtime, console, emit_json, pass_runtime, table

TOTALS = ("total_enqueued", "total_completed", "total_failed", "total_cancelled", "total_expired")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items())) or "-"


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def packs_list(rt: Runtime, as_json: bool) -> None:
    """Every pack: what it holds and when it was last loaded."""
    rows = rt.api.call("packs")["items"]
    if as_json:
        emit_json({"items": rows})
        return
    table(
        ["pack", "description", "actions", "rules", "schedules", "webhooks", "updated"],
        [
            [
                r["name"],
                r["description"],
                r["actions"],
                r["rules"],
                r["schedules"],
                r["webhooks"],
                r["updated_at"],
            ]
            for r in rows
        ],
    )


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def actions_list(rt: Runtime, as_json: bool) -> None:
    """Every action: runner, limit, waiting and active, paused (as GET /api/v1/actions)."""
    items = rt.api.call("actions")["items"]
    if as_json:
        emit_json({"items": items})
        return
    table(
        ["action", "runner", "limit", "queued", "active", "paused", "description"],
        [
            [
                a["ref"],
                a["runner"],
                a["queue_stats"]["max_concurrent"],
                a["queue_stats"]["queue_length"],
                a["queue_stats"]["active_count"],
                "paused" if a["queue_stats"].get("paused") else "",
                a["description"],
            ]
            for a in items
        ],
    )


@click.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def actions_show(rt: Runtime, ref: str, as_json: bool) -> None:
    """One action: runner, its policy as resolved (action > pack > settings), its parameters'
    schema and its counters (as GET /api/v1/actions/REF)."""
    action = rt.api.call("action", ref=ref)
    if as_json:
        emit_json(action)
        return
    policy, line = action["resolved"], action["queue_stats"]
    live = ", ".join(sorted(action["live_policy"]))
    pools = ", ".join(policy["pools"]) or "-"
    windows = [f"{w['count']} per {w['per_s']:g} s" for w in policy["rate_limit"]]
    backoff = policy["retry"]
    rows = [
        ["runner", action["runner"]],
        ["description", action["description"]],
        ["paused", "yes" if action["paused"] else "no"],
        ["concurrency", policy["concurrency"]],
        ["partition_by", ", ".join(policy["partition_by"]) or "-"],
        ["total_concurrency", policy["total_concurrency"] or "-"],
        ["pools", pools],
        ["max_queue_length", policy["max_queue_length"]],
        ["queue_timeout_s", policy["queue_timeout_s"]],
        ["rate_limit", ", ".join(windows) or "-"],
        ["when_busy", policy["when_busy"] + (", coalesce" if policy["coalesce"] else "")],
        [
            "retry",
            f"{backoff['max_retries']} x {backoff['strategy']} "
            f"{backoff['initial_delay_ms']}-{backoff['max_delay_ms']} ms"
            + (", jitter" if backoff["jitter"] else "")
            + (", hold_slot" if backoff["hold_slot"] else ""),
        ],
        ["live change", live or "-"],
        ["timeout_s", action["timeout_s"] or "-"],
        ["queued / active", f"{line['queue_length']} / {line['active_count']}"],
        [
            "totals",
            ", ".join(f"{key.removeprefix('total_')} {line[key]}" for key in TOTALS),
        ],
        ["parameters", json.dumps(action["parameters"], sort_keys=True)],
    ]
    table(["", ""], rows, ref)


@click.group("rules")
def rules_group() -> None:
    """The packs' rules: list, show, enable, disable (until the pack is loaded again)."""


@rules_group.command("list")
@click.option("--trigger", help="only the rules of this trigger")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def rules_list(rt: Runtime, trigger: str | None, as_json: bool) -> None:
    """Every rule: trigger, action, enabled, and its enforcements among the newest 10,000."""
    rows = rt.api.call("rules", params={"trigger": trigger})["items"]
    if as_json:
        emit_json({"items": rows})
        return
    table(
        ["rule", "trigger", "action", "enabled", "recent enforcements", "last"],
        [
            [
                r["ref"],
                r["trigger"],
                r["action"],
                "yes" if r["enabled"] else "no",
                _counts(r["recent_enforcements"]),
                r["last_enforced_at"],
            ]
            for r in rows
        ],
    )


@rules_group.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def rules_show(rt: Runtime, ref: str, as_json: bool) -> None:
    """One rule: trigger, criteria, action, parameters, enabled, recent enforcements."""
    rule = rt.api.call("rule", ref=ref)
    if as_json:
        emit_json(rule)
        return
    _print_rule(rule)


def _print_rule(rule: dict[str, Any]) -> None:
    rows = [
        ["description", rule["description"]],
        ["trigger", rule["trigger"]],
        ["criteria", json.dumps(rule["criteria"], sort_keys=True)],
        ["action", rule["action"]],
        ["parameters", json.dumps(rule["parameters"], sort_keys=True)],
        ["priority", rule["priority"]],
        ["enabled", "yes" if rule["enabled"] else "no"],
        ["recent enforcements", _counts(rule["recent_enforcements"])],
        ["last enforced", rule["last_enforced_at"] or "-"],
    ]
    table(["", ""], rows, rule["ref"])


@rules_group.command("enable")
@click.argument("ref")
@pass_runtime
def rules_enable(rt: Runtime, ref: str) -> None:
    """Enable a rule until its pack is loaded again (then its file says)."""
    _switch(rt, ref, True)


@rules_group.command("disable")
@click.argument("ref")
@pass_runtime
def rules_disable(rt: Runtime, ref: str) -> None:
    """Disable a rule: its events get skipped enforcements, until the pack is loaded again."""
    _switch(rt, ref, False)


def _switch(rt: Runtime, ref: str, enabled: bool) -> None:
    rule = rt.api.call("enable_rule" if enabled else "disable_rule", ref=ref)
    state = "enabled" if rule["enabled"] else "disabled (its events are skipped)"
    console.print(f"{ref}: {state} until its pack is loaded again", soft_wrap=True)


PACKS = [packs_list]
ACTIONS = [actions_list, actions_show]
GROUPS = [rules_group]
