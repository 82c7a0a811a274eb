"""``usher webhooks``: the packs' webhooks, where they are and how they authenticate."""

from __future__ import annotations

import click

from app.cli.common import Runtime, emit_json, pass_runtime, table


@click.group("webhooks")
def webhooks_group() -> None:
    """The packs' webhooks (POST /hooks/<ref>, each authenticated by its own secret)."""


@webhooks_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def webhooks_list(rt: Runtime, as_json: bool) -> None:
    """Every webhook: its URL path, trigger, auth (the secret's name, never its value),
    delivery header and the requests it took and refused."""
    rows = rt.api.call("webhooks")["items"]
    if as_json:
        emit_json(rows)
        return
    table(
        ["ref", "path", "trigger", "auth", "secret", "delivery header", "taken", "refused"],
        [
            [
                r["ref"],
                f"/hooks/{r['ref']}",
                r["trigger"],
                f"{r['kind']} {r['header']}",
                r["secret"],
                r["delivery_header"],
                r["accepted"],
                r["refused"],
            ]
            for r in rows
        ],
    )


GROUPS = [webhooks_group]
