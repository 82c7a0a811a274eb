"""Re-runs on ``/api/v1`` (on ``web.api.bp``): an execution again, its parameters edited.
Imported once, at the end of ``web.api``."""

from __future__ import annotations

from typing import Any

from flask import current_app

import web
from app import celery as usher_celery
from policies import admission, requests, rerun
from web import schemas, settings, unit_of_work
from web.api import bp


@bp.post(
    "/executions/<int:execution_id>/rerun",
    summary="Run an execution again (any state), `parameters` overrides merged in; "
    "a new execution with `rerun_of`",
    responses={
        202: schemas.Rerun,
        **schemas.WRITE,
        **schemas.NOT_FOUND,
        422: schemas.error("The merged parameters fail the action's schema"),
        429: schemas.error(
            "The line is full, or " + schemas.THROTTLED.lower(),
            **{"Retry-After": "seconds: until a place in the line should free, or the minute"},
        ),
    },
)
def rerun_execution(path: schemas.ExecutionPath, body: requests.Rerun) -> Any:
    with unit_of_work() as session:
        enqueued = rerun.rerun(session, settings(), path.execution_id, body.parameters, web.actor())
        place = admission.position(session, enqueued.execution_id)
    usher_celery.after_intake(current_app.config["USHER_CELERY"], enqueued)
    answer: dict[str, Any] = {
        "id": enqueued.execution_id,
        "status": _status(enqueued),
        "position": place,
        "rerun_of": path.execution_id,
    }
    if enqueued.run_at is not None:
        answer["run_at"] = enqueued.run_at.isoformat()
    if enqueued.coalesced:
        answer["coalesced"] = True
    return answer, 202


def _status(enqueued: admission.Enqueued) -> str:
    if enqueued.seq is None:
        return "delayed"
    return "scheduled" if enqueued.granted else "queued"
