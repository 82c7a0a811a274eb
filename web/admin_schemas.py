"""The answers of the routes ``usher`` needs beside the others (``web.api_admin``): the lines
as ``usher queues`` shows them, webhooks, tokens, a pack upload; as pydantic models like
those of ``web.schemas``, from which the OpenAPI document is generated."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from web import schemas


class QueueLine(schemas.Line):
    """One line (an action's, or one partition's), and the levels above it the action takes."""

    partition: str | None = Field(description="e.g. host=db1; null: the action has one line")
    max_queue_length: int
    oldest_wait_s: float | None
    total: schemas.LevelUse | None
    pools: list[schemas.PoolUse]


class ActionLevels(BaseModel):
    total: schemas.LevelUse | None = Field(description="its total_concurrency; null: none")
    pools: list[schemas.PoolUse]


class Queues(BaseModel):
    items: list[QueueLine]
    levels: dict[str, ActionLevels] = Field(
        description="action ref -> the levels above its lines, for the actions that take one"
    )


class Webhook(BaseModel):
    ref: str
    pack: str
    name: str
    description: str
    trigger: str
    kind: str = Field(description="hmac_sha256 or token")
    secret: str = Field(description="the secret's name (USHER_SECRET_<NAME>), never its value")
    header: str
    prefix: str | None
    delivery_header: str | None
    accepted: int = Field(description="requests taken (duplicates included)")
    refused: int


class Webhooks(BaseModel):
    items: list[Webhook]


class Token(BaseModel):
    name: str
    read_only: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class Tokens(BaseModel):
    items: list[Token] = Field(description="by name; no token's value, nor its hash")


class TokenPath(BaseModel):
    name: str = Field(json_schema_extra={"minLength": 1, "maxLength": 200})


class MadeToken(BaseModel):
    name: str
    read_only: bool
    token: str = Field(description="the token: shown in this answer only, never again")


class Revoked(BaseModel):
    name: str
    revoked: bool


class LoadedPack(BaseModel):
    pack: str
    actions: list[str]


class Loaded(BaseModel):
    items: list[LoadedPack]
    granted: int = Field(description="executions started at once by changed limits")
