"""The audit's models (``GET /api/v1/audit``): its query and its page."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from policies import requests
from web.schemas import Blank, Cursor, Digits, Query

PAGE_MAX = 500
PAGE_DEFAULT = 50


class AuditQuery(Query):
    limit: Annotated[int, Field(ge=1, le=PAGE_MAX, description="rows per page"), Digits, Blank] = (
        PAGE_DEFAULT
    )
    before: Annotated[Cursor, Blank] = requests.absent()


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str = Field(
        description="a token's name, `webhook:<ref>`, `cli:<os user>` or `anonymous`"
    )
    verb: str = Field(description="the route's endpoint (`api.cancel_execution`) or command")
    target: str = Field(description="the path, or the object a command changed")
    outcome: str = Field(
        description="the status and a refusal's code (`403 forbidden`), or "
        "`ok` / `refused: ...` for a command"
    )
    detail: Any = Field(description="small and bounded: the method and status; never a body")


class Audit(BaseModel):
    items: list[AuditEntry]
    next: int | None = Field(description="pass it as `before` for the next page")
