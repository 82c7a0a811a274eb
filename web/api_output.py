"""``GET /api/v1/executions/<id>/output`` (on ``web.api.bp``): an attempt's live output, for
any token. Imported once, at the end of ``web.api``; the rows are written by the worker
(``tasks.output``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from app import output
from web import schemas, unit_of_work
from web.api import READ_ONE, bp


class OutputQuery(schemas.Query):
    attempt: Annotated[
        int | None,
        Field(ge=1, le=10_000, description="which attempt (default: the latest)"),
        schemas.Digits,
        schemas.Blank,
    ] = None


class Output(BaseModel):
    execution_id: int
    attempt: int
    stdout: str = Field(description="secrets masked; at most USHER_OUTPUT_MAX_BYTES, then a mark")
    stderr: str
    status: schemas.Status
    finished: bool = Field(
        description="false while this attempt's output can still grow (at most 1 s behind)"
    )


@bp.get(
    "/executions/<int:execution_id>/output",
    summary="An attempt's stdout and stderr so far (shell, http), while it runs and after",
    responses={200: Output, **READ_ONE},
)
def execution_output(path: schemas.ExecutionPath, query: OutputQuery) -> Any:
    with unit_of_work() as session:
        return output.read(session, path.execution_id, query.attempt)
