"""``GET /api/v1/events`` (on ``web.api.bp``): events newest first with their enforcements.
Imported by ``web.api`` after the schedules' routes (the order of the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from app import queries
from web import schemas, unit_of_work
from web.api import bp


@bp.get(
    "/events",
    summary="Events, newest first, with their enforcements (`?trigger=` exactly), by cursor",
    responses={200: schemas.Events},
)
def list_events(query: schemas.EventsQuery) -> Any:
    with unit_of_work() as session:
        items, following = queries.events(session, query.trigger, query.limit, query.before)
    return {"items": items, "next": following}
