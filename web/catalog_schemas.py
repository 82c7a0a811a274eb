"""The catalog's answers, path and query of the API (``/api/v1/packs``, ``/api/v1/rules``,
an action's resolved policy), as pydantic models like those of ``web.schemas``: the OpenAPI
document is generated from them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from policies import requests
from web import schemas


class Pack(BaseModel):
    name: str
    description: str
    actions: int
    rules: int
    schedules: int
    webhooks: int
    updated_at: datetime = Field(description="when it was last loaded")


class Packs(BaseModel):
    items: list[Pack]


class RulePath(BaseModel):
    # Like an action's ref: any other ref is unknown (404 unknown_rule).
    ref: str = Field(
        description="<pack>.<rule>",
        json_schema_extra={"pattern": rf"^{schemas.NAME}\.{schemas.NAME}$"},
    )


class RulesQuery(schemas.Query):
    trigger: Annotated[str, Field(description="exactly this trigger"), schemas.Blank] = (
        requests.absent()
    )


class Rule(BaseModel):
    ref: str
    pack: str
    name: str
    description: str
    trigger: str
    criteria: dict[str, Any] = Field(description="dotted payload path -> test")
    action: str
    parameters: dict[str, Any] = Field(description="templates over `event`")
    priority: int
    enabled: bool = Field(
        description="a disabled rule's events get skipped enforcements; a pack load sets it "
        "from the file again"
    )
    updated_at: datetime
    recent_enforcements: dict[str, int] = Field(
        description="status -> count among the newest 10,000 enforcements"
    )
    last_enforced_at: datetime | None = Field(description="its newest of those; null: none")


class Rules(BaseModel):
    items: list[Rule]


class Retry(BaseModel):
    max_retries: int
    strategy: str
    initial_delay_ms: int
    max_delay_ms: int
    jitter: bool
    hold_slot: bool


class Window(BaseModel):
    count: int
    per_s: float


class ResolvedPolicy(BaseModel):
    """What applies: each key from the action's policy, else its pack's, else the settings."""

    concurrency: int
    max_queue_length: int
    queue_timeout_s: int
    partition_by: list[str]
    rate_limit: list[Window] = Field(description="its windows; empty: no rate limit")
    total_concurrency: int | None = Field(description="over all its partitions; null: none")
    pools: list[str]
    when_busy: str
    coalesce: bool
    retry: Retry


class ActionDetail(schemas.ActionDetail):
    resolved: ResolvedPolicy
