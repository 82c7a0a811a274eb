"""The pools page: each pool's limit (a live one marked), slots held, waiting work and the
actions that take it, with a form that changes the limit live (as
``PATCH /api/v1/pools/<ref>`` does). An action's own total and pools are on its page."""

from __future__ import annotations

from typing import Any

from flask import current_app, flash, render_template, request, url_for

import web
from app import bounds
from app import celery as usher_celery
from policies import pools
from web import settings, unit_of_work
from web.dashboard import base


@base.bp.get("/pools")
def pools_page() -> Any:
    with unit_of_work() as db_session:
        listing = pools.listing(db_session)
    return render_template("dashboard/pools.html", pools=listing, bound=bounds.CONCURRENCY)


@base.bp.post("/pools/<path:ref>/limit")
def set_pool_limit(ref: str) -> Any:
    given = request.form.get("limit", "")
    limit = web.parse_int(given.strip())
    with unit_of_work() as db_session:
        # Not a number: the same refusal as the API's (requests.PoolChange names the field).
        grants = pools.set_limit(db_session, settings(), ref, given if limit is None else limit)
    usher_celery.publish(current_app.config["USHER_CELERY"], grants)
    flash(
        f"Pool {ref}: limit {limit} until its pack is loaded again; {len(grants)} granted now.",
        "info",
    )
    return base.back(url_for("dashboard.pools_page"))
