"""The rules page: the packs (what each holds), then every rule with its trigger, action,
state and recent enforcements; enabling and disabling a rule (as
``POST /api/v1/rules/<ref>/enable|disable`` do), for admin sessions."""

from __future__ import annotations

from typing import Any

from flask import flash, render_template, request, url_for

from policies import catalog, rules
from web import unit_of_work
from web.dashboard import base


@base.bp.get("/rules")
def rules_page() -> Any:
    trigger = request.args.get("trigger") or None
    with unit_of_work() as db_session:
        packs = catalog.packs(db_session)
        listing = rules.listing(db_session, trigger=trigger)
    return render_template(
        "dashboard/rules.html",
        packs=packs,
        rules=listing,
        trigger=trigger,
        recent=rules.RECENT_ENFORCEMENTS,
    )


def _switch(ref: str, enabled: bool) -> Any:
    with unit_of_work() as db_session:
        rules.set_enabled(db_session, ref, enabled)
    said = "enabled" if enabled else "disabled: its events get skipped enforcements"
    flash(f"Rule {ref} {said} (until its pack is loaded again).", "info")
    return base.back(url_for("dashboard.rules_page"))


@base.bp.post("/rules/<path:ref>/enable")
def enable_rule(ref: str) -> Any:
    return _switch(ref, True)


@base.bp.post("/rules/<path:ref>/disable")
def disable_rule(ref: str) -> Any:
    return _switch(ref, False)
