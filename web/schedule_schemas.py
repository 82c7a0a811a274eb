"""The schedules' answers and path of the API (``/api/v1/schedules``), as pydantic models
like those of ``web.schemas``: the OpenAPI document is generated from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from web import schemas


class SchedulePath(BaseModel):
    # Like an action's ref: any other ref is unknown (404).
    ref: str = Field(
        description="<pack>.<schedule>",
        json_schema_extra={"pattern": rf"^{schemas.NAME}\.{schemas.NAME}$"},
    )


class Schedule(BaseModel):
    ref: str
    pack: str
    name: str
    description: str
    spec: str = Field(
        description="e.g. `cron 0 3 * * *`, `every 30s`, `at 2026-07-01T09:00:00+02:00`"
    )
    cron: str | None
    every_s: float | None
    at: datetime | None
    timezone: str = Field(description="IANA name; cron and a one-off's local time are in it")
    action: str | None = Field(description="the action each tick runs, or")
    trigger: str | None = Field(description="the trigger of the event each tick emits")
    parameters: dict[str, Any] = Field(
        description="templates over `schedule.ref`, `schedule.fire_at`"
    )
    missed: Literal["skip", "run_once"] = Field(description="late ticks after a downtime")
    enabled: bool
    paused: bool
    paused_at: datetime | None
    next_fire_at: datetime | None = Field(description="the next tick; null: none left")
    last_fire_at: datetime | None = Field(description="the latest tick fired")


class Schedules(BaseModel):
    items: list[Schedule]
