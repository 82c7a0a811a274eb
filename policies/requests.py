"""The request bodies Usher takes, as pydantic models: one copy that validates a request
(the API's; and the policies', which take the same shapes from the CLI, rules and batches)
and that the OpenAPI document is generated from. ``parse`` gives a 400 naming the field.

What depends on the installation (a payload's byte cap, an action's parameter schema) is
checked where the settings and the action are known: ``events`` and ``parameters``.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    Field,
    SkipValidation,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from app import bounds
from app.errors import InvalidRequest
from policies import pack_files, parameters, policy

# Items per batch request: enough to amortise the round trips, small enough for one short
# transaction.
MAX_BATCH = 1000
MAX_TRIGGER = 200


def _storable(value: str) -> str:
    if "\x00" in value or not parameters.unicode_ok(value):
        raise PydanticCustomError("unstorable", "the request holds a value Postgres cannot store")
    return value


def _bounded(bound: bounds.Range, description: str) -> Any:
    # strict: a bool or 1.0 is no integer here, as in JSON Schema.
    return Field(strict=True, description=description, **bound.field())


# Checked against the action's own schema (422 invalid_parameters), not here: any JSON passes.
Parameters = Annotated[
    Any, WithJsonSchema({"type": "object", "description": "checked by the action's schema"})
]


def absent() -> Any:
    """The default of a key that may be left out but is never null: None, which pydantic does
    not validate (a null given is refused like any other wrong type), so the field's type
    stays one type and no null shows in the document. Read the attribute as ``T | None``."""
    return Field(default=None)


def no_null_defaults(schema: dict[str, Any]) -> None:
    """A ``json_schema_extra``: an optional key that is never null shows no ``default: null``."""
    for field in schema.get("properties", {}).values():
        if "default" in field and field["default"] is None:
            del field["default"]


def _iso_text(value: Any) -> Any:
    """A time is ISO 8601 text here (pydantic alone would also take a number of seconds)."""
    if not isinstance(value, str | datetime):
        raise PydanticCustomError("datetime_type", "Input should be an ISO 8601 time")
    return value


# A delayed run's time, with its offset (a time without one names no instant).
RunAt = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_text),
    Field(description="ISO 8601 with a timezone: wait as `delayed` until then (30 days at most)"),
]
DelayS = Annotated[
    float,
    Field(
        strict=True,
        allow_inf_nan=False,
        description="seconds from now: wait as `delayed` until then",
        **bounds.DELAY_S.field(),
    ),
]
# What the request does if it would wait: its action's policy.when_busy when left out.
WhenBusy = Annotated[
    policy.WhenBusy,
    Field(
        description="if it would not start at once: queue (wait in line), skip (409 "
        "line_busy), replace (cancel the waiting ones), cancel_running (cancel the running "
        "ones; it runs next); default: the action's policy.when_busy",
    ),
]
# An Idempotency-Key (the header) or a batch item's key: printable ASCII.
Key = Annotated[
    str,
    Field(
        strict=True,
        min_length=bounds.IDEMPOTENCY_KEY_LENGTH.low,
        max_length=bounds.IDEMPOTENCY_KEY_LENGTH.high,
        pattern=r"^[ -~]+$",
        description="the same key again (same action, or trigger) within "
        "USHER_IDEMPOTENCY_TTL_S answers the first request's answer and creates nothing",
    ),
]


class ExecutionRequest(BaseModel, json_schema_extra=no_null_defaults):
    """A request to run an action (now, or at ``run_at`` / after ``delay_s``)."""

    action: Annotated[
        str,
        Field(strict=True, min_length=1, description="an action ref such as 'demo.hello'"),
        AfterValidator(_storable),
    ]
    parameters: Parameters = Field(default_factory=dict)
    priority: Annotated[int, _bounded(bounds.PRIORITY, "higher first within the action's line")] = 0
    run_at: RunAt = absent()
    delay_s: DelayS = absent()
    when_busy: WhenBusy = absent()

    @model_validator(mode="after")
    def _one_timing(self) -> ExecutionRequest:
        if self.run_at is not None and self.delay_s is not None:
            raise PydanticCustomError("timing", "give run_at or delay_s, not both")
        return self


class Rerun(BaseModel, extra="forbid"):
    """A re-run's edits: merged into the original's parameters, key by key."""

    parameters: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the original's top-level parameters"
    )


class ExecutionItem(ExecutionRequest):
    """One item of a batch: a request, and its idempotency key."""

    key: Key = absent()


class ExecutionBatch(BaseModel):
    """Many execution requests at once, each accepted or refused on its own."""

    # Each item is validated where it is enqueued (a bad one is that item's error), so the
    # items stay the JSON values they came as.
    items: Annotated[list[SkipValidation[ExecutionItem]], Field(min_length=1, max_length=MAX_BATCH)]


class IdempotencyHeader(BaseModel):
    """The request headers Usher reads (any other is ignored)."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # flask-openapi3 asks for it on every request it validates (for the fields'
        # types): made once, a copy each time (a tenth of a single request's CPU otherwise).
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in _HEADER_SCHEMAS:
            _HEADER_SCHEMAS[key] = super().model_json_schema(*args, **kwargs)
        return copy.deepcopy(_HEADER_SCHEMAS[key])

    idempotency_key: Key = Field(default=None, alias="Idempotency-Key")  # type: ignore[assignment]


_HEADER_SCHEMAS: dict[Any, dict[str, Any]] = {}


class Event(BaseModel):
    """An event: rules on its trigger match its payload."""

    trigger: Annotated[
        str, Field(strict=True, min_length=1, max_length=MAX_TRIGGER), AfterValidator(_storable)
    ]
    payload: Any = Field(
        default_factory=dict, description="any JSON, at most USHER_MAX_PAYLOAD_BYTES of it"
    )


class EventItem(Event, json_schema_extra=no_null_defaults):
    """One event of a batch, and its idempotency key."""

    key: Key = absent()


class EventBatch(BaseModel):
    """Many events at once, stored all or none."""

    # Each event is validated where it is stored, which names the first bad one (events[i]);
    # the items stay the JSON values they came as.
    events: Annotated[list[SkipValidation[EventItem]], Field(min_length=1, max_length=MAX_BATCH)]


Concurrency = Annotated[int, _bounded(bounds.CONCURRENCY, "at most this many at once")]
QueueLength = Annotated[int, _bounded(bounds.QUEUE_LENGTH, "more waiting: 429")]
QueueTimeout = Annotated[int, _bounded(bounds.TIMEOUT_S, "waiting longer: expired")]
TotalConcurrency = Annotated[
    int, _bounded(bounds.CONCURRENCY, "over all its partitions (only one its files give a total)")
]


def _one_or_more(schema: dict[str, Any]) -> None:
    schema["minProperties"] = 1
    no_null_defaults(schema)  # a key left out is no change


class PolicyChange(BaseModel, extra="forbid", json_schema_extra=_one_or_more):
    """Limits that take effect on the action's lines at once (until its pack is loaded again)."""

    concurrency: Concurrency = absent()
    max_queue_length: QueueLength = absent()
    queue_timeout_s: QueueTimeout = absent()
    total_concurrency: TotalConcurrency = absent()

    @model_validator(mode="after")
    def _some(self) -> PolicyChange:
        if not self.model_fields_set:
            keys = sorted(type(self).model_fields)
            raise PydanticCustomError("missing", "give one or more of {keys}", {"keys": keys})
        return self

    def changes(self) -> dict[str, int]:
        return self.model_dump(include=self.model_fields_set)


class PoolChange(BaseModel, extra="forbid"):
    """A pool's limit, live: granted at once when raised (until its pack is loaded again)."""

    limit: Concurrency


class TokenRequest(BaseModel, extra="forbid"):
    """An API token to make: admin unless ``read_only``."""

    name: Annotated[
        str, Field(strict=True, min_length=1, max_length=200), AfterValidator(_storable)
    ]
    read_only: bool = Field(default=False, strict=True, description="may read, not change")


class PackUpload(BaseModel, extra="forbid"):
    """A pack tree as ``usher packs load`` reads it (``policies.pack_files.bundle``)."""

    files: dict[str, str] = Field(
        description="<pack>/pack.yaml and <pack>/<actions|rules|schedules|webhooks>/<name>"
        ".yaml -> the file's text",
        min_length=1,
        max_length=pack_files.MAX_BUNDLE_FILES,
    )


Model = TypeVar("Model", bound=BaseModel)


def _where(loc: tuple[int | str, ...]) -> str:
    """``events[1]: trigger``: an item's index, then the field in it."""
    where = ""
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        elif where.endswith("]"):
            where += f": {part}"
        else:
            where += f".{part}" if where else part
    return where


def problem(error: ValidationError) -> InvalidRequest:
    """The first thing wrong with a request, as its 400 names it (``priority: Input should be
    less than or equal to 1000``)."""
    first: ErrorDetails = error.errors(include_url=False, include_context=False)[0]
    where = _where(first["loc"])
    return InvalidRequest(f"{where}: {first['msg']}" if where else first["msg"])


def parse(model: type[Model], body: Any) -> Model:
    """``body`` as ``model``, or InvalidRequest naming the first thing wrong."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise problem(error) from None
