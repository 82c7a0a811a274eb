"""The bulk controls of ``/api/v1`` (on ``web.api.bp``): cancelling a line's waiting
executions in one transaction. Imported once, at the end of ``web.api``."""

from __future__ import annotations

from typing import Any

from flask import current_app
from pydantic import BaseModel, Field

import web
from app import celery as usher_celery
from policies import cancels
from web import schemas, settings, unit_of_work
from web.api import bp


class CancelWaitingQuery(BaseModel):
    partition: str | None = Field(
        default=None,
        description="the line's partition key; without it, every line of the action",
        json_schema_extra={"maxLength": 1000},
    )


class CancelledWaiting(BaseModel):
    """What a bulk cancel ended: the queued executions of the line, oldest first."""

    action: str = Field(description="<pack>.<action>")
    partition: str | None = Field(description="the line asked for; null: every line")
    cancelled: list[int] = Field(description="the ids of the executions cancelled")


@bp.post(
    "/actions/<path:ref>/cancel-waiting",
    summary="Cancel every queued execution of the action's line (`?partition=`) or lines; "
    "running and delayed ones stay",
    responses={200: CancelledWaiting, **schemas.WRITE, **schemas.NOT_FOUND},
)
def cancel_waiting(path: schemas.ActionPath, query: CancelWaitingQuery) -> Any:
    with unit_of_work() as session:
        done = cancels.cancel_waiting(
            session, settings(), path.ref, query.partition, cancelled_by=web.actor()
        )
    usher_celery.send_events(current_app.config["USHER_CELERY"], list(done.events))
    return {"action": path.ref, "partition": query.partition, "cancelled": done.ids}
