"""The events page: a page of events, newest first, with their enforcements."""

from __future__ import annotations

from typing import Any

from flask import render_template

from web import unit_of_work, views_data
from web.dashboard import base


@base.bp.get("/events")
def events_page() -> Any:
    with unit_of_work() as db_session:
        events = views_data.events(db_session, base.EVENTS_PAGE, base.int_arg("before"))
        found = views_data.enforcements(db_session, [e["id"] for e in events])
    following = events[-1]["id"] if len(events) == base.EVENTS_PAGE else None
    return render_template("dashboard/events.html", events=events, found=found, next=following)
