"""The dead-letter queue's routes of ``/api/v1`` (on ``web.api.bp``): list, replay one,
purge. Imported once by ``web.api``."""

from __future__ import annotations

from typing import Any

from flask import current_app

import web
from app import celery as usher_celery
from policies import dlq
from web import schemas, settings, unit_of_work
from web.api import WRITE_ONE, bp


@bp.get("/dlq", summary="The dead-letter queue, newest first", responses={200: schemas.Dlq})
def list_dlq(query: schemas.DlqQuery) -> Any:
    with unit_of_work() as session:
        items = dlq.items(session, query.limit, query.before)
        total = dlq.count(session)
    return {
        "items": items,
        "total": total,
        "next": items[-1]["id"] if len(items) == query.limit else None,
    }


@bp.post(
    "/dlq/<int:execution_id>/replay",
    summary="Enqueue a dead execution again (a new execution, `replay_of` set)",
    responses={
        200: schemas.Replayed,
        **WRITE_ONE,
        409: schemas.error("Not in the dead-letter queue"),
    },
)
def replay_dlq(path: schemas.ExecutionPath) -> Any:
    with unit_of_work() as session:
        enqueued = dlq.replay(session, settings(), path.execution_id, web.actor())
    usher_celery.after_intake(current_app.config["USHER_CELERY"], enqueued)
    return {"replayed": path.execution_id, "id": enqueued.execution_id}


@bp.post(
    "/dlq/purge",
    summary="Empty the dead-letter queue",
    responses={200: schemas.Purged, **schemas.WRITE},
)
def purge_dlq() -> Any:
    with unit_of_work() as session:
        return {"purged": dlq.purge(session)}
