"""``usher audit``: who did what, newest first (``GET /api/v1/audit``)."""

from __future__ import annotations

import click

from app.cli.common import Runtime, emit_json, pass_runtime, table


@click.group("audit")
def audit_group() -> None:
    """The audit: every mutation (API, dashboard, webhooks, CLI), refused ones too."""


@audit_group.command("list")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--before", type=click.IntRange(1), default=None, help="the next page's cursor")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def audit_list(rt: Runtime, limit: int, before: int | None, as_json: bool) -> None:
    """Newest first: time, actor, verb, target, outcome."""
    page = rt.api.call("audit", params={"limit": limit, "before": before})
    rows, following = page["items"], page["next"]
    if as_json:
        emit_json({"items": rows, "next": following})
        return
    table(
        ["id", "at", "actor", "verb", "target", "outcome"],
        [[r["id"], r["at"], r["actor"], r["verb"], r["target"], r["outcome"]] for r in rows],
        "audit",
    )


GROUPS = [audit_group]
