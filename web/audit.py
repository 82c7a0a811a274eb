"""One audit row per mutating request (POST, PUT, PATCH, DELETE) of the API, the dashboard
and the webhooks, written after the answer is made, refused requests too (``app.audit``).

The actor is whoever the request authenticated as (``web.actor``): the bearer token's name
(``g.identity``, set by the API's check), the dashboard session's (``g.user``), the webhook
(``webhook:<ref>``), else ``anonymous``. The verb is the route's endpoint, the target its
path; the outcome the status and, for a refusal, the error's code. No body is looked at.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g, request
from werkzeug.wrappers import Response

import web
from app import audit

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUDITED = frozenset({"api", "dashboard", "hooks"})


def register(flask_app: Flask) -> None:
    flask_app.after_request(_record)


def outcome(response: Response) -> str:
    """``202``, or ``403 forbidden``: the status, and a refusal's code (its JSON's, else the
    status's name); a dashboard form refused by a policy answers a redirect with a message,
    ``303 already_finished``."""
    status = response.status_code
    if status < 400:
        return f"{status} {g.refused}" if g.get("refused") else str(status)
    code: Any = None
    if response.is_json:
        body = response.get_json(silent=True)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = body["error"].get("code")
    if not isinstance(code, str):
        code = response.status.partition(" ")[2].lower().replace(" ", "_") or "error"
    return f"{status} {code}"


def _record(response: Response) -> Response:
    if request.method not in MUTATING or request.blueprint not in AUDITED:
        return response
    if g.get("audited"):
        return response  # recorded with what it did, in its group commit (web.groups)
    audit.record_now(
        current_app.config["USHER_ENGINE"],
        web.actor(),
        request.endpoint or request.method,
        request.path,
        outcome(response),
        {"method": request.method, "status": response.status_code},
    )
    return response
