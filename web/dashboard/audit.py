"""The audit page: every mutation, newest first (``app.audit``)."""

from __future__ import annotations

from typing import Any

from flask import render_template

from app import audit
from web import unit_of_work
from web.dashboard import base


@base.bp.get("/audit")
def audit_page() -> Any:
    with unit_of_work() as db_session:
        rows, following = audit.newest(db_session, base.EVENTS_PAGE, base.int_arg("before"))
    return render_template("dashboard/audit.html", rows=rows, next=following)
