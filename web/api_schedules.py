"""The schedules' routes of ``/api/v1`` (on ``web.api.bp``): list, pause, resume. Imported
once by ``web.api``."""

from __future__ import annotations

from typing import Any

from policies import schedules
from web import schedule_schemas, unit_of_work
from web.api import WRITE_ONE, bp


@bp.get(
    "/schedules",
    summary="Every schedule: its timing, next and last tick, state",
    responses={200: schedule_schemas.Schedules},
)
def list_schedules() -> Any:
    with unit_of_work() as session:
        return {"items": schedules.listing(session)}


@bp.post(
    "/schedules/<path:ref>/pause",
    summary="Pause a schedule: no tick fires until it is resumed",
    responses={200: schedule_schemas.Schedule, **WRITE_ONE},
)
def pause_schedule(path: schedule_schemas.SchedulePath) -> Any:
    with unit_of_work() as session:
        return schedules.set_paused(session, path.ref, True)


@bp.post(
    "/schedules/<path:ref>/resume",
    summary="Resume a schedule from its next tick (the paused ones do not run)",
    responses={200: schedule_schemas.Schedule, **WRITE_ONE},
)
def resume_schedule(path: schedule_schemas.SchedulePath) -> Any:
    with unit_of_work() as session:
        return schedules.set_paused(session, path.ref, False)
