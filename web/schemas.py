"""The API's answers and its path and query parameters as pydantic models (the request
bodies are ``policies.requests``). The OpenAPI document is generated from them; views return
the plain dicts of ``app.queries`` and ``policies``, and schemathesis checks every answer
against the document, so a field added there and not here fails a test, not a request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError, PydanticUseDefault

import web
from app import bounds
from app.models import Status
from policies import pack_schema, requests

# --- errors -----------------------------------------------------------------------------------


RETRY_AFTER = (
    "queue_full only: whole seconds until a place in the line should free, from its pace "
    "(the answer's Retry-After)"
)


class ErrorBody(BaseModel):
    code: str = Field(description="stable, e.g. unknown_action, queue_full, invalid_request")
    message: str
    retry_after_s: int | None = Field(default=None, ge=1, description=RETRY_AFTER)


class Error(BaseModel):
    """Every error: a 4xx status (503 while Postgres is unreachable) and this body."""

    error: ErrorBody


def error(description: str, **headers: str) -> dict[str, Any]:
    """An error answer of the document: the Error body, with what the status means here."""
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "integer"}}
            for name, text in headers.items()
        }
    return answer


def replayed(model: type[BaseModel]) -> dict[str, Any]:
    """The 200 of a request whose Idempotency-Key was seen before: the first answer again."""
    return {
        "description": "The Idempotency-Key was seen before: the first request's answer; "
        "nothing was created",
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
    }


def replayed_or_coalesced(model: type[BaseModel]) -> dict[str, Any]:
    """The 200 of an execution request that created nothing: its Idempotency-Key was seen
    before (the first answer again), or it coalesced into an equal waiting execution."""
    return replayed(model) | {
        "description": "Nothing was created: the Idempotency-Key was seen before (the first "
        "request's answer), or the request coalesced into an equal waiting execution "
        "(`coalesced`: that execution's answer)"
    }


THROTTLED = "Too many failed authentications from this address this minute"
# Every operation's (the blueprint's): what auth, the body limits and the throttle answer.
ERRORS: dict[Any, Any] = {
    400: error("Malformed: a body that is no JSON object or nests past 64, a bad field or value"),
    401: error("No valid bearer token"),
    413: error("The body is larger than USHER_MAX_BODY_BYTES (refused before it is read)"),
    429: error(THROTTLED, **{"Retry-After": "seconds until the minute is over"}),
}
WRITE: dict[Any, Any] = {403: error("A read-only token")}
NOT_FOUND: dict[Any, Any] = {404: error("Unknown")}

# --- path and query parameters ----------------------------------------------------------------


NAME = pack_schema.NAME_PATTERN.removeprefix("^").removesuffix("$")


class ActionPath(BaseModel):
    # The pattern says what a ref looks like; it is not checked here, since any other ref is
    # unknown (404 unknown_action), as a ref nobody loaded is.
    ref: str = Field(
        description="<pack>.<action>", json_schema_extra={"pattern": rf"^{NAME}\.{NAME}$"}
    )


# Likewise ids: what the document shows is what ids are; any other one is unknown (404).
Id = Annotated[int, Field(json_schema_extra={"minimum": 1, "maximum": 2**62})]


class ExecutionPath(BaseModel):
    execution_id: Id


class EventPath(BaseModel):
    event_id: Id


def _blank(value: Any) -> Any:
    if value == "":
        raise PydanticUseDefault()  # ?limit= is no limit given
    return value


def _digits(value: Any) -> Any:
    """ASCII digits only: ``int()`` (and pydantic) would also take '٣', '1_000' and ' 5'."""
    if isinstance(value, str):
        parsed = web.parse_int(value)
        if parsed is None:
            raise PydanticCustomError("int_parsing", "Input should be an integer in ASCII digits")
        return parsed
    return value


Blank = BeforeValidator(_blank)
Digits = BeforeValidator(_digits)
Cursor = Annotated[int, Field(ge=1, le=2**62, description="the `next` of a page"), Digits]
_SCHEMAS: dict[Any, dict[str, Any]] = {}


class Query(BaseModel, json_schema_extra=requests.no_null_defaults):
    """A query string's model. flask-openapi3 reads its JSON schema on every request (to tell
    a list from a value), and pydantic builds it anew on each call (~1 ms): built once here."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in _SCHEMAS:
            _SCHEMAS[key] = super().model_json_schema(*args, **kwargs)
        return _SCHEMAS[key]


class ExecutionsQuery(Query):
    """Besides these, up to 5 ``param.<name>=<value>`` filters (``app.search``)."""

    action: Annotated[str, Blank] = requests.absent()
    status: Annotated[Status, Blank] = requests.absent()
    limit: Annotated[int, Field(ge=1, le=1000), Digits, Blank] = 50
    before: Annotated[Cursor, Blank] = requests.absent()
    since: Annotated[datetime, Field(description="enqueued at or after (ISO 8601)"), Blank] = (
        requests.absent()
    )
    until: Annotated[datetime, Field(description="enqueued before (ISO 8601)"), Blank] = (
        requests.absent()
    )
    rule: Annotated[
        str, Field(max_length=300, description="requested by this rule (`rule:<ref>`)"), Blank
    ] = requests.absent()
    requested_by: Annotated[
        str, Field(max_length=300, description="exactly this requester"), Blank
    ] = requests.absent()


class DlqQuery(Query):
    limit: Annotated[int, Field(ge=1, le=1000), Digits, Blank] = 100
    before: Annotated[Cursor, Blank] = requests.absent()


class EventQuery(Query):
    wait: Annotated[
        int, Field(ge=0, le=30, description="seconds to wait for the enforcements"), Digits, Blank
    ] = 0


# --- answers ----------------------------------------------------------------------------------


class Line(BaseModel):
    """One line's counters: an action's, or one partition's."""

    action_ref: str
    queue_length: int
    active_count: int
    max_concurrent: int
    total_enqueued: int
    total_completed: int
    total_failed: int
    total_cancelled: int
    total_expired: int
    oldest_enqueued_at: datetime | None
    last_updated: datetime | None
    paused: bool = Field(
        description="nothing is granted while paused; waiting work keeps its place"
    )


class Partition(Line):
    partition: str = Field(description="e.g. host=db1")
    max_queue_length: int
    oldest_wait_s: float | None


class LevelUse(BaseModel):
    """A level above the action's lines: how many hold one of its slots, of how many."""

    limit: int = Field(description="in force now: a live change's, else the pack files'")
    active: int
    live: bool = Field(description="a live change set the limit (until the pack is loaded again)")


class PoolUse(LevelUse):
    ref: str = Field(description="<pack>.<pool>")


class QueueStats(Line):
    """The action's counters over all its lines."""

    partitions: list[Partition] = Field(
        default_factory=list, description="each line, when the action is partitioned"
    )
    total: LevelUse | None = Field(
        description="its total_concurrency over all its partitions; null: none"
    )
    pools: list[PoolUse] = Field(description="the pools it takes a slot of")


class Controlled(QueueStats):
    """The action's counters after a live control."""

    granted: int = Field(description="executions the change started at once")


class Action(BaseModel):
    ref: str
    name: str
    pack: str
    description: str
    runner: str
    timeout_s: int | None
    policy: dict[str, Any]
    pack_policy: dict[str, Any]
    queue_stats: QueueStats


class Actions(BaseModel):
    items: list[Action]


class ActionDetail(Action):
    parameters: dict[str, Any] = Field(description="the JSON Schema of its parameters")
    live_policy: dict[str, Any] = Field(
        description="the keys of policy a live change set, until the pack is loaded again"
    )
    paused: bool


Value = Annotated[Any, Field(description='over 4 KiB in a list: {"_truncated": true, "bytes": N}')]


class Execution(BaseModel):
    id: int
    action_ref: str
    status: Status
    parameters: Value
    priority: int
    seq: int | None = Field(description="its place in its line's FIFO order; null while delayed")
    attempt: int
    enqueued_at: datetime
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    result: Value
    error: str | None
    partition_key: str
    not_before: datetime | None = Field(description="a retry waits until then")
    replay_of: int | None
    run_at: datetime | None = Field(description="a delayed run joins its line then")
    requested_by: str | None = Field(
        description="`rule:<ref>`, `schedule:<ref>`, the token's name or `cli:<user>`"
    )
    cancelled_by: str | None = Field(description="who cancelled it, if it was cancelled")
    rerun_of: int | None = Field(description="the execution this re-run repeats")


class Attempt(BaseModel):
    attempt: int
    outcome: str | None
    queued_at: datetime | None
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    error: str | None


class ExecutionHistory(Execution):
    attempts: list[Attempt]
    event_id: int | None = Field(None, description="the event a rule made it for")
    rule: str | None = Field(None, description="the rule (or schedule) that made it")
    schedule: str | None = Field(None, description="the schedule whose tick made it")
    fire_at: str | None = Field(None, description="that tick's time (ISO 8601)")


class ExecutionDetail(ExecutionHistory):
    position: int | None = Field(description="1 = next, while queued (null while delayed)")
    eta: datetime | None = Field(
        description="while queued, from the line's recent pace (null while delayed: run_at)"
    )
    pace_per_s: float | None


class Executions(BaseModel):
    items: list[Execution]
    next: int | None = Field(description="pass it as `before` for the next page")


Waiting = Literal["queued", "scheduled", "delayed"]
RunAt = Annotated[datetime, Field(description="only when delayed: it joins its line then")]


Coalesced = Annotated[
    bool,
    Field(
        description="only when true: an equal waiting execution's answer (the action "
        "coalesces); nothing was created"
    ),
]


class Submitted(BaseModel, json_schema_extra=requests.no_null_defaults):
    id: int
    status: Waiting
    position: int | None = Field(description="1 = next, while queued; null while delayed")
    seq: Annotated[
        int,
        Field(
            description="its place in its line's order, which grants follow (none while delayed)"
        ),
    ] = requests.absent()
    run_at: RunAt = requests.absent()
    coalesced: Coalesced = False


class Rerun(Submitted):
    rerun_of: int = Field(description="the execution it repeats")


class Accepted(BaseModel, json_schema_extra=requests.no_null_defaults):
    index: int = Field(description="the item's place in the request")
    id: int
    status: Waiting
    seq: int | None = Field(description="null while delayed: it takes its seq when it joins")
    run_at: RunAt = requests.absent()
    replayed: bool = Field(
        default=False,
        description="only when true: its key was seen before, this is the first answer and "
        "nothing was created",
    )
    coalesced: Coalesced = False


class ItemError(BaseModel):
    """Why the item was refused: what the single request would answer."""

    status: int = Field(ge=400, le=499)
    code: str
    message: str
    retry_after_s: int | None = Field(default=None, ge=1, description=RETRY_AFTER)


class Refused(BaseModel):
    index: int
    error: ItemError


class BatchResult(BaseModel):
    items: list[Accepted | Refused] = Field(description="in request order")
    accepted: int
    refused: int


class Enforcement(BaseModel):
    id: int
    rule: str
    status: Literal["executed", "rejected", "skipped"]
    execution_id: int | None
    reason: str | None
    created_at: datetime


class EventState(BaseModel):
    event_id: int
    processed: bool
    failed: bool = Field(description="its processing failed for good")
    failures: int = Field(description="tries that did not finish")
    error: str | None
    enforcements: list[Enforcement]


class EventIds(BaseModel):
    event_ids: list[int] = Field(description="in request order")
    count: int
    replayed: list[int] = Field(
        default_factory=list,
        description="the indexes of items whose key was seen before: their first event's id",
    )


class DeadExecution(BaseModel):
    id: int
    action_ref: str
    parameters: Value
    priority: int
    attempt: int
    error: str | None
    enqueued_at: datetime
    finished_at: datetime | None
    replay_of: int | None


class Dlq(BaseModel):
    items: list[DeadExecution]
    total: int
    next: int | None


class Replayed(BaseModel):
    replayed: int = Field(description="the dead execution")
    id: int = Field(description="the new one")


class Purged(BaseModel):
    purged: int


# --- the events list (GET /api/v1/events) -----------------------------------------------------


class EventsQuery(Query):
    trigger: Annotated[str, Field(description="exactly this trigger"), Blank] = requests.absent()
    limit: Annotated[int, Field(**bounds.EVENTS_PAGE.field()), Digits, Blank] = (
        bounds.EVENTS_PAGE_DEFAULT
    )
    before: Annotated[Cursor, Blank] = requests.absent()


class ListedEvent(BaseModel):
    id: int
    trigger: str
    payload: Value
    received_at: datetime
    state: Literal["processed", "failed", "pending"] = Field(
        description="failed: for good, after USHER_EVENT_MAX_FAILURES tries (replayable)"
    )
    processed_at: datetime | None
    failed_at: datetime | None
    failures: int = Field(description="tries that did not finish")
    error: str | None
    enforcements: list[Enforcement] = Field(description="what each matching rule did")


class Events(BaseModel):
    items: list[ListedEvent] = Field(description="newest first")
    next: int | None = Field(description="pass it as `before` for the next page; null: no more")
