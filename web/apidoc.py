"""The OpenAPI document of ``/api/v1``: flask-openapi3 generates it from the models the
views declare (``web.schemas``, ``policies.requests``); docs/api.md is generated from it."""

from __future__ import annotations

from typing import Any, NoReturn

from flask_openapi3 import Info, OpenAPI, Server
from pydantic import ValidationError

from policies import requests
from web import api, schemas


def _refuse(error: ValidationError) -> NoReturn:
    """A request that fails its model: our 400 ``invalid_request``, not the library's body."""
    raise requests.problem(error)


def application(import_name: str) -> OpenAPI:
    """A Flask app that takes the API's blueprint and serves its document (no UI pages)."""
    return OpenAPI(
        import_name,
        info=Info(
            title="Usher API",
            version="1",
            description="Bearer token auth: reads need any valid token, writes an admin one.",
        ),
        servers=[Server(url="/")],
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        validation_error_status=400,
        validation_error_model=schemas.Error,
        validation_error_callback=_refuse,
        doc_ui=False,
    )


def document() -> dict[str, Any]:
    """The document as ``GET /api/v1/openapi.json`` serves it."""
    app = application(__name__)
    app.register_api(api.bp)
    return app.api_doc


def markdown(document: dict[str, Any]) -> str:
    """docs/api.md (a test keeps the file up to date)."""
    lines = [
        "# REST API",
        "",
        "Generated from `GET /api/v1/openapi.json` by `python -m web.apidoc > docs/api.md`;",
        "a test fails when this file and the document differ. The document is generated from",
        "the request models of `policies/requests.py` and the answers of `web/schemas.py`.",
        "",
        "Auth: `Authorization: Bearer <token>`. Reads need any valid token (`usher tokens create",
        "NAME --read-only`), every `POST` an admin token (`USHER_API_TOKEN` or `usher tokens",
        "create NAME`): 401 without a valid token, 403 with a read-only one. Errors are",
        '`{"error": {"code": "...", "message": "..."}}` with a 4xx status (503 while Postgres',
        "is unreachable). `GET /healthz`, `GET /metrics` and the OpenAPI document are open.",
        "`POST /hooks/<ref>`, a pack's webhook, is not part of this API: it takes no bearer",
        "token, the webhook's own secret authenticates it ([triggers](triggers.md#webhooks)).",
        "",
        "Limits, on every route:",
        "",
        "- A body over `USHER_MAX_BODY_BYTES` (default 1 MiB) gets `413`",
        '  `{"error": {"code": "payload_too_large", ...}}`, decided from its `Content-Length`',
        "  before it is read (`usher web`'s waitress refuses it before the app sees it, with the",
        "  same JSON, as soon as it has the headers, or a chunked body as it passes the limit,",
        "  and closes the connection).",
        "- JSON nested deeper than 64 levels gets `400` `invalid_request`; so does a body or",
        "  query value that does not fit its model (the message names the field, e.g.",
        "  `priority: Input should be less than or equal to 1000`).",
        "- After `USHER_AUTH_FAILURES_PER_MINUTE` (default 20) refused bearer tokens or dashboard",
        "  logins from one client address within a minute, every API call and login from that",
        '  address gets `429` `{"error": {"code": "too_many_auth_failures", ...}}` with',
        "  `Retry-After` until the minute is over. Only refusals count, and a request without an",
        "  `Authorization` header is no attempt. Each web process counts for itself; behind a",
        "  proxy every client has the proxy's address.",
        "- A request to an action whose line already holds `max_queue_length` waiting gets `429`",
        '  `{"error": {"code": "queue_full", "message": ..., "retry_after_s": N}}` with',
        "  `Retry-After: N`: whole seconds (at least 1, at most 3600) until a place should free,",
        "  from the line's pace (when its head should be granted: its running executions' ends",
        "  at the mean of its last runs, or its full rate-limit window's end); 5 for a line with",
        "  no pace yet. A refused batch item carries `retry_after_s` in its `error`.",
        "- In `GET /api/v1/executions` a `parameters` or `result` over 4 KiB of JSON is shown as",
        '  `{"_truncated": true, "bytes": N}` and a long `error` as its start; `GET',
        "  /api/v1/executions/{id}` shows them whole.",
        "",
        "| method | path | what it does | answers |",
        "| --- | --- | --- | --- |",
    ]
    for path, operations in document["paths"].items():
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
    print(markdown(document()), end="")
