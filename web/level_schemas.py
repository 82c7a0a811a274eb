"""The pools' answers and path of the API (``/api/v1/pools``), as pydantic models like those
of ``web.schemas``: the OpenAPI document is generated from them. An action's own total and
pools are in its queue stats (``schemas.QueueStats``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from web import schemas


class PoolPath(BaseModel):
    # Like an action's ref: any other ref is unknown (404).
    ref: str = Field(
        description="<pack>.<pool>",
        json_schema_extra={"pattern": rf"^{schemas.NAME}\.{schemas.NAME}$"},
    )


class Pool(BaseModel):
    """A pool (``pools:`` in pack.yaml): a limit shared by the actions that name it."""

    ref: str = Field(description="<pack>.<pool>")
    pack: str = Field(description="the pack that declares it")
    limit: int = Field(description="in force now: a live change's, else pack.yaml's")
    pack_limit: int = Field(description="what pack.yaml says")
    live: bool = Field(
        description="a live change (PATCH, usher pools set) set the limit; the next load of "
        "its pack puts pack_limit back"
    )
    active: int = Field(description="executions holding one of its slots")
    waiting: int = Field(description="waiting in the lines of the actions that take it")
    actions: list[str] = Field(description="the actions that take a slot of it")


class PoolChanged(Pool):
    granted: int = Field(description="executions the change started at once")


class Pools(BaseModel):
    items: list[Pool] = Field(description="in ref order")
