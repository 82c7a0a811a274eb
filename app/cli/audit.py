"""``usher audit``: who did what, newest first (``app.audit``)."""

from __future__ import annotations

import click

from app import audit, db
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
    with db.unit_of_work(rt.engine) as session:
        rows, following = audit.newest(session, limit, before)
    if as_json:
        emit_json({"items": rows, "next": following})
        return
    table(
        ["id", "at", "actor", "verb", "target", "outcome"],
        [[r["id"], r["at"], r["actor"], r["verb"], r["target"], r["outcome"]] for r in rows],
        "audit",
    )


GROUPS = [audit_group]
