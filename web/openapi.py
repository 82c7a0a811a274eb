"""The OpenAPI 3.1 document of ``/api/v1``; a test keeps it equal to the URL map."""

from __future__ import annotations

from typing import Any

from app.models import STATUSES
from policies import intake


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _json(
        _ref("Error"), "The request is malformed (a body: not a JSON object, or nested past 64)"
    ),
    "401": _json(_ref("Error"), "No valid bearer token"),
    "413": _json(
        _ref("Error"), "The body is larger than USHER_MAX_BODY_BYTES (refused before it is read)"
    ),
    "429": _json(
        _ref("Error"),
        "Too many failed authentications from this address this minute (Retry-After)",
    ),
}
WRITE_ERRORS = {**ERRORS, "403": _json(_ref("Error"), "A read-only token")}
NOT_FOUND = {"404": _json(_ref("Error"), "Unknown")}
INT_ID = {"type": "integer", "minimum": 1, "maximum": 2**62}
COUNTERS = (
    "queue_length",
    "active_count",
    "max_concurrent",
    "total_enqueued",
    "total_completed",
    "total_failed",
    "total_cancelled",
    "total_expired",
)

QUEUE_STATS = {
    "type": "object",
    "required": ["action_ref", *COUNTERS],
    "properties": {
        "action_ref": {"type": "string"},
        **{c: {"type": "integer"} for c in COUNTERS},
        "oldest_enqueued_at": {"type": ["string", "null"], "format": "date-time"},
        "last_updated": {"type": ["string", "null"], "format": "date-time"},
        "partitions": {"type": "array", "items": {"type": "object"}},
    },
}
EXECUTION = {
    "type": "object",
    "required": [
        "id",
        "action_ref",
        "status",
        "parameters",
        "priority",
        "seq",
        "attempt",
        "enqueued_at",
        "scheduled_at",
        "started_at",
        "finished_at",
        "worker",
        "result",
        "error",
    ],
    "properties": {
        "id": {"type": "integer"},
        "action_ref": {"type": "string"},
        "status": {"enum": list(STATUSES)},
        "parameters": {"type": "object"},
        "priority": {"type": "integer"},
        "seq": {"type": "integer"},
        "attempt": {"type": "integer"},
        "position": {"type": ["integer", "null"]},
        "eta": {"type": ["string", "null"], "format": "date-time"},
        "pace_per_s": {"type": ["number", "null"]},
        "enqueued_at": {"type": "string", "format": "date-time"},
        "scheduled_at": {"type": ["string", "null"]},
        "started_at": {"type": ["string", "null"]},
        "finished_at": {"type": ["string", "null"]},
        "not_before": {"type": ["string", "null"]},
        "worker": {"type": ["string", "null"]},
        "result": {},
        "error": {"type": ["string", "null"]},
        "replay_of": {"type": ["integer", "null"]},
        "attempts": {"type": "array", "items": {"type": "object"}},
    },
}
ENFORCEMENTS = {
    "type": "object",
    "required": ["event_id", "processed", "enforcements"],
    "properties": {
        "event_id": {"type": "integer"},
        "processed": {"type": "boolean"},
        "failed": {"type": "boolean", "description": "its processing failed for good"},
        "failures": {"type": "integer", "description": "tries that did not finish"},
        "error": {"type": ["string", "null"]},
        "enforcements": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "rule": {"type": "string"},
                    "status": {"enum": ["executed", "rejected", "skipped"]},
                    "execution_id": {"type": ["integer", "null"]},
                    "reason": {"type": ["string", "null"]},
                },
            },
        },
    },
}
EXECUTION_REQUEST = {
    "type": "object",
    "required": ["action"],
    "properties": {
        "action": {"type": "string"},
        "parameters": {"type": "object"},
        "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
    },
}
BATCH_ITEM = {
    "type": "object",
    "required": ["index"],
    "properties": {
        "index": {"type": "integer", "description": "the item's place in the request"},
        "id": {"type": "integer"},
        "status": {"enum": ["queued", "scheduled"]},
        "seq": {"type": "integer", "description": "its place in its line's FIFO order"},
        "error": {
            "type": "object",
            "required": ["status", "code", "message"],
            "description": "why the item was refused: the status the single request would get",
            "properties": {
                "status": {"enum": [400, 404, 422, 429]},
                "code": {"type": "string"},
                "message": {"type": "string"},
            },
        },
    },
}
EVENT = {
    "type": "object",
    "required": ["trigger"],
    "properties": {
        "trigger": {"type": "string", "minLength": 1, "maxLength": 200},
        "payload": {},
    },
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


ACTION_REF = {
    "name": "ref",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$"},
}
EXECUTION_ID = {"name": "execution_id", "in": "path", "required": True, "schema": INT_ID}
LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
}
BEFORE = {
    "name": "before",
    "in": "query",
    "description": "cursor: the `next` of a page",
    "schema": INT_ID,
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Usher API",
            "version": "1",
            "description": "Bearer token auth: reads need any valid token, writes an admin one.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "QueueStats": QUEUE_STATS,
                "Execution": EXECUTION,
                "Enforcements": ENFORCEMENTS,
            },
        },
        "paths": {
            "/api/v1/actions": {
                "get": {
                    "summary": "Every action with its queue stats",
                    "responses": {"200": _json({"type": "object"}), **ERRORS},
                }
            },
            "/api/v1/actions/{ref}": {
                "get": {
                    "summary": "One action: runner, parameters schema, policy, queue stats",
                    "parameters": [ACTION_REF],
                    "responses": {"200": _json({"type": "object"}), **ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/actions/{ref}/queue-stats": {
                "get": {
                    "summary": "The line's counters (and each partition's)",
                    "parameters": [ACTION_REF],
                    "responses": {"200": _json(_ref("QueueStats")), **ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/actions/{ref}/pause": {
                "post": {
                    "summary": "Pause the action's lines: nothing granted, waiting keeps its place",
                    "parameters": [ACTION_REF],
                    "responses": {"200": _json(_ref("QueueStats")), **WRITE_ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/actions/{ref}/resume": {
                "post": {
                    "summary": "Resume the action's lines; what fits is granted at once",
                    "parameters": [ACTION_REF],
                    "responses": {"200": _json(_ref("QueueStats")), **WRITE_ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/actions/{ref}/policy": {
                "patch": {
                    "summary": "Change concurrency, max_queue_length or queue_timeout_s live",
                    "parameters": [ACTION_REF],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "minProperties": 1,
                                    "additionalProperties": False,
                                    "properties": {
                                        "concurrency": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": 10_000,
                                        },
                                        "max_queue_length": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": 10_000_000,
                                        },
                                        "queue_timeout_s": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": 604_800,
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "responses": {"200": _json(_ref("QueueStats")), **WRITE_ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/executions": {
                "get": {
                    "summary": "Executions, newest first, by cursor",
                    "parameters": [
                        {"name": "action", "in": "query", "schema": {"type": "string"}},
                        {"name": "status", "in": "query", "schema": {"enum": list(STATUSES)}},
                        LIMIT,
                        BEFORE,
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["items", "next"],
                                "properties": {
                                    "items": {"type": "array", "items": _ref("Execution")},
                                    "next": {"type": ["integer", "null"]},
                                },
                            }
                        ),
                        **ERRORS,
                    },
                },
                "post": {
                    "summary": "Request an execution",
                    "requestBody": _body(EXECUTION_REQUEST),
                    "responses": {
                        "202": _json(
                            {
                                "type": "object",
                                "required": ["id", "status", "position"],
                                "properties": {
                                    "id": {"type": "integer"},
                                    "status": {"enum": ["queued", "scheduled"]},
                                    "position": {"type": ["integer", "null"]},
                                    "eta": {"type": ["string", "null"], "format": "date-time"},
                                    "pace_per_s": {"type": ["number", "null"]},
                                },
                            },
                            "Accepted",
                        ),
                        **WRITE_ERRORS,
                        **NOT_FOUND,
                        "422": _json(_ref("Error"), "The parameters fail the action's schema"),
                        "429": _json(
                            _ref("Error"),
                            "The line is full, or too many failed authentications (Retry-After)",
                        ),
                    },
                },
            },
            "/api/v1/executions/batch": {
                "post": {
                    "summary": "Request up to 1000 executions; each accepted or refused on its own",
                    "requestBody": _body(
                        {
                            "type": "object",
                            "required": ["items"],
                            "properties": {
                                "items": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": intake.MAX_BATCH,
                                    "items": EXECUTION_REQUEST,
                                }
                            },
                        }
                    ),
                    "responses": {
                        "202": _json(
                            {
                                "type": "object",
                                "required": ["items", "accepted", "refused"],
                                "properties": {
                                    "items": {"type": "array", "items": BATCH_ITEM},
                                    "accepted": {"type": "integer"},
                                    "refused": {"type": "integer"},
                                },
                            },
                            "Every item's id or error, in request order",
                        ),
                        **WRITE_ERRORS,
                    },
                }
            },
            "/api/v1/executions/{execution_id}": {
                "get": {
                    "summary": "One execution with its attempt history and place in line",
                    "parameters": [EXECUTION_ID],
                    "responses": {"200": _json(_ref("Execution")), **ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/executions/{execution_id}/cancel": {
                "post": {
                    "summary": "Cancel a queued, scheduled, running or retrying execution",
                    "parameters": [EXECUTION_ID],
                    "responses": {
                        "200": _json(_ref("Execution")),
                        **WRITE_ERRORS,
                        **NOT_FOUND,
                        "409": _json(_ref("Error"), "Already finished"),
                    },
                }
            },
            "/api/v1/events": {
                "post": {
                    "summary": "Store an event; a worker matches rules (`?wait=S` waits up to S s)",
                    "parameters": [
                        {
                            "name": "wait",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 30},
                        }
                    ],
                    "requestBody": _body(EVENT),
                    "responses": {"202": _json(_ref("Enforcements"), "Accepted"), **WRITE_ERRORS},
                }
            },
            "/api/v1/events/batch": {
                "post": {
                    "summary": "Store up to 1000 events at once (all or none); one worker message",
                    "requestBody": _body(
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {
                                "events": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": intake.MAX_BATCH,
                                    "items": EVENT,
                                }
                            },
                        }
                    ),
                    "responses": {
                        "202": _json(
                            {
                                "type": "object",
                                "required": ["event_ids", "count"],
                                "properties": {
                                    "event_ids": {"type": "array", "items": {"type": "integer"}},
                                    "count": {"type": "integer"},
                                },
                            },
                            "Stored; ids in request order",
                        ),
                        **WRITE_ERRORS,
                    },
                }
            },
            "/api/v1/events/{event_id}": {
                "get": {
                    "summary": "An event and its enforcements",
                    "parameters": [
                        {"name": "event_id", "in": "path", "required": True, "schema": INT_ID}
                    ],
                    "responses": {"200": _json(_ref("Enforcements")), **ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/events/{event_id}/replay": {
                "post": {
                    "summary": "Process an event that failed for good again, its tries given back",
                    "parameters": [
                        {"name": "event_id", "in": "path", "required": True, "schema": INT_ID}
                    ],
                    "responses": {
                        "200": _json(_ref("Enforcements")),
                        **WRITE_ERRORS,
                        **NOT_FOUND,
                        "409": _json(_ref("Error"), "The event has not failed"),
                    },
                }
            },
            "/api/v1/dlq": {
                "get": {
                    "summary": "The dead-letter queue, newest first",
                    "parameters": [LIMIT, BEFORE],
                    "responses": {
                        "200": _json({"type": "object", "required": ["items", "total", "next"]}),
                        **ERRORS,
                    },
                }
            },
            "/api/v1/dlq/{execution_id}/replay": {
                "post": {
                    "summary": "Enqueue a dead execution again (a new execution, `replay_of` set)",
                    "parameters": [EXECUTION_ID],
                    "responses": {
                        "200": _json({"type": "object"}),
                        **WRITE_ERRORS,
                        **NOT_FOUND,
                        "409": _json(_ref("Error"), "Not in the dead-letter queue"),
                    },
                }
            },
            "/api/v1/dlq/purge": {
                "post": {
                    "summary": "Empty the dead-letter queue",
                    "responses": {"200": _json({"type": "object"}), **WRITE_ERRORS},
                }
            },
        },
    }


def markdown() -> str:
    """docs/api.md, generated from the document (a test keeps the file up to date)."""
    doc = document()
    lines = [
        "# REST API",
        "",
        "Generated from `GET /api/v1/openapi.json` by `python -m web.openapi > docs/api.md`;",
        "a test fails when this file and the document differ.",
        "",
        "Auth: `Authorization: Bearer <token>`. Reads need any valid token (`usher tokens create",
        "NAME --read-only`), every `POST` an admin token (`USHER_API_TOKEN` or `usher tokens",
        "create NAME`): 401 without a valid token, 403 with a read-only one. Errors are",
        '`{"error": {"code": "...", "message": "..."}}` with a 4xx status (503 while Postgres',
        "is unreachable). `GET /healthz`, `GET /metrics` and the OpenAPI document are open.",
        "",
        "Limits, on every route:",
        "",
        "- A body over `USHER_MAX_BODY_BYTES` (default 1 MiB) gets `413`",
        '  `{"error": {"code": "payload_too_large", ...}}`, decided from its `Content-Length`',
        "  before it is read (`usher web`'s waitress refuses it before the app sees it, with the",
        "  same JSON, as soon as it has the headers, or a chunked body as it passes the limit,",
        "  and closes the connection).",
        "- JSON nested deeper than 64 levels gets `400` `invalid_request`.",
        "- After `USHER_AUTH_FAILURES_PER_MINUTE` (default 20) refused bearer tokens or dashboard",
        "  logins from one client address within a minute, every API call and login from that",
        '  address gets `429` `{"error": {"code": "too_many_auth_failures", ...}}` with',
        "  `Retry-After` until the minute is over. Only refusals count, and a request without an",
        "  `Authorization` header is no attempt. Each web process counts for itself; behind a",
        "  proxy every client has the proxy's address.",
        "- In `GET /api/v1/executions` a `parameters` or `result` over 4 KiB of JSON is shown as",
        '  `{"_truncated": true, "bytes": N}` and a long `error` as its start; `GET',
        "  /api/v1/executions/{id}` shows them whole.",
        "",
        "| method | path | what it does | answers |",
        "| --- | --- | --- | --- |",
    ]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            answers = ", ".join(sorted(operation["responses"]))
            lines.append(f"| {method.upper()} | `{path}` | {operation['summary']} | {answers} |")
    lines += [
        "",
        "Lists are newest first and paged by cursor: pass the page's `next` as `before`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
