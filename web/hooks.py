"""``POST /hooks/<ref>``: a webhook's deliveries, the only route under /hooks.

No bearer token is asked for or looked at: a request is authenticated by the webhook's own
secret (``policies.webhooks``). Its answers: 202 ``{"event_id"}``, 200 with the first event
for a delivery id seen before, 401 (bad or missing signature), 404 (no such webhook), 413,
415 (not JSON), 400 (nested too deep), 503 (the webhook's secret is not configured here).
A failed signature and an unknown name count towards the client's throttle of failed
authentications, as a bad bearer token does. Every request is logged and counted
(``usher_webhook_requests_total{webhook,outcome}``).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, g, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

import web
from policies import webhooks
from web import groups, settings, unit_of_work

bp = Blueprint("hooks", __name__, url_prefix="/hooks")
log = logging.getLogger(__name__)

# The outcome label of each answer; any other status counts as "other".
OUTCOMES = {
    202: "accepted",
    200: "duplicate",
    400: "invalid",
    401: "unauthorized",
    404: "unknown",
    405: "invalid",
    413: "too_large",
    415: "not_json",
    429: "throttled",
    503: "unavailable",
}


def register(flask_app: Flask) -> None:
    """Mount the blueprint: no CSRF (no cookies are read), the auth-failure throttle."""
    flask_app.extensions["csrf"].exempt(bp)
    limiter = flask_app.extensions["usher_limiter"]
    limiter.limit(
        lambda: f"{settings().auth_failures_per_minute}/minute",
        key_func=web.client_key,
        deduct_when=lambda response: bool(g.get("auth_failed")),
    )(bp)
    flask_app.register_blueprint(bp)


@bp.post("/<path:ref>")
def deliver(ref: str) -> Any:
    with unit_of_work() as session:
        try:
            hook = webhooks.find(session, ref)
        except webhooks.Unknown:
            web.auth_failed()  # guessing names is throttled like guessing tokens
            raise
    g.webhook = hook.ref
    secret = webhooks.secret(hook, settings().secrets_dir)
    raw = web.read_body()
    try:
        webhooks.verify(hook, secret, request.headers, raw)
    except webhooks.BadSignature:
        web.auth_failed()
        raise
    document = webhooks.payload(
        hook, request.headers.items(), webhooks.body(request.content_type, raw)
    )
    delivery = webhooks.delivery_id(hook, request.headers)
    # Stored with the deliveries that arrive meanwhile, in one transaction with their audit
    # rows and counts; its event is sent after that commit (web.groups).
    received = groups.submit(groups.deliveries(), groups.Delivery(hook, delivery, document))
    if isinstance(received, Exception):
        raise received  # a refusal is counted by the hook below, as any other
    g.counted = True
    return {"event_id": received.event_id}, 200 if received.duplicate else 202


@bp.after_request
def account(response: Response) -> Response:
    """Log and count every answer, refusals (413 from the headers alone too) included."""
    outcome = OUTCOMES.get(response.status_code, "other")
    webhook = g.get("webhook", "")
    level = logging.INFO if response.status_code < 300 else logging.WARNING
    # The path quoted: a decoded newline in it cannot start a forged log line.
    log.log(
        level,
        "webhook request %r from %s: %d %s",
        request.path,
        request.remote_addr,
        response.status_code,
        outcome,
    )
    if g.get("counted"):  # by its batch, in the transaction that stored it
        return response
    try:
        with unit_of_work() as session:
            webhooks.count(session, webhook, outcome)
    except SQLAlchemyError as error:
        log.warning("webhook request not counted: %s", type(error).__name__)
    return response
