"""The Flask app factory: the REST API, the dashboard, /metrics and /healthz."""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import flask
from celery import Celery
from flask import Flask, current_app, g, jsonify, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from app import celery as usher_celery
from app import config, db, tokens
from app.errors import DatabaseUnavailable, InvalidRequest, QueueFull, TooLarge, UsherError
from policies import parameters

log = logging.getLogger(__name__)
INTEGER = re.compile(r"-?[0-9]{1,19}")


def parse_int(raw: str) -> int | None:
    """An integer in at most 19 ASCII digits; None for anything else (``int()`` would also
    take other scripts' digits, underscores and spaces)."""
    return int(raw) if INTEGER.fullmatch(raw) else None


def settings() -> config.Settings:
    """The settings of the app serving this request."""
    value: config.Settings = current_app.config["USHER_SETTINGS"]
    return value


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """A unit of work on the database of the app serving this request."""
    with db.unit_of_work(current_app.config["USHER_ENGINE"]) as session:
        yield session


def create_app(settings: config.Settings | None = None, celery_app: Celery | None = None) -> Flask:
    settings = settings or config.load()
    from web import api, apidoc, audit, dashboard, hooks
    from web import metrics as prometheus

    flask_app = apidoc.application(__name__)
    flask_app.request_class = Request
    if settings.trusted_proxies:
        # The client's address from X-Forwarded-For, as set by that many proxies in front:
        # without it, every client shares the proxy's address (and its throttle).
        flask_app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            flask_app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )
    flask_app.config["USHER_SETTINGS"] = settings
    flask_app.config["USHER_ENGINE"] = db.engine_for(db.database_url(settings))
    flask_app.config["USHER_CELERY"] = celery_app or usher_celery.create(settings)
    flask_app.extensions[api.RECENT_TOKENS] = tokens.Recent(api.TOKEN_CHECK_S)
    flask_app.json.sort_keys = False  # type: ignore[attr-defined]

    flask_app.config.update(
        SECRET_KEY=dashboard.secret_key(settings.home, settings.secret_key),
        SESSION_COOKIE_NAME="usher_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not settings.insecure_cookies,
        PERMANENT_SESSION_LIFETIME=dashboard.SESSION_LIFETIME,
        # A CSRF token lives as long as the session: a dashboard left open keeps working.
        WTF_CSRF_TIME_LIMIT=None,
        # Chunked bodies have no Content-Length: reading one stops at the limit.
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
    )
    # Registered before CSRFProtect and the limiter: their checks read the form.
    flask_app.before_request(_refuse_big_bodies)
    csrf = CSRFProtect(flask_app)
    csrf.exempt(api.bp)  # bearer tokens, no cookies: nothing for a forged form to ride on
    _throttle(flask_app, settings)
    hooks.register(flask_app)  # POST /hooks/<ref>: a webhook's own secret, no bearer token
    flask_app.register_api(api.bp)
    flask_app.register_blueprint(dashboard.bp)
    audit.register(flask_app)  # one audit row per mutating request, refused ones too

    @flask_app.get("/healthz", doc_ui=False)  # open, like /metrics: not in the API document
    def healthz() -> Any:
        return {"status": "ok"}

    engine = flask_app.config["USHER_ENGINE"]
    scrapes = prometheus.Cache(
        lambda: prometheus.render(engine, settings.default_max_concurrent), settings.metrics_cache_s
    )

    @flask_app.get("/metrics", doc_ui=False)
    def metrics() -> Any:
        return scrapes.get(), 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}

    @flask_app.errorhandler(UsherError)
    def usher_error(error: UsherError) -> Any:
        body = error_body(error)
        if isinstance(error, QueueFull):
            return jsonify(error=body), error.status, {"Retry-After": str(error.retry_after_s)}
        return jsonify(error=body), error.status

    @flask_app.errorhandler(DataError)
    def unstorable(error: DataError) -> Any:
        # e.g. a NUL character in a path or query value: Postgres refuses it, so do we.
        return usher_error(InvalidRequest("the request holds a value Postgres cannot store"))

    @flask_app.errorhandler(OperationalError)
    def database_down(error: OperationalError) -> Any:
        if flask_app.config["PROPAGATE_EXCEPTIONS"]:
            raise error  # the CLI's own app (local_app): its one line names the reason
        return usher_error(DatabaseUnavailable())

    @flask_app.errorhandler(RateLimitExceeded)
    def throttled(error: RateLimitExceeded) -> Any:
        body = jsonify(error={"code": "too_many_auth_failures", "message": throttle_message()})
        return body, 429, {"Retry-After": str(retry_after_s())}

    @flask_app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        code = (error.name or "error").lower().replace(" ", "_")
        return jsonify(error={"code": code, "message": error.description}), error.code

    @flask_app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge) -> Any:
        length = request.content_length
        if length is not None and length <= settings.max_body_bytes:
            return http_error(error)  # a form field over Flask's own limit
        return _too_large(settings.max_body_bytes)

    return flask_app


def local_app(settings: config.Settings, celery_app: Celery, actor: str) -> Flask:
    """The app ``usher`` calls in its own process when no ``--url`` is given: the same API
    with the database's credentials, every request made as the admin ``actor`` (who the
    command's audit rows and executions name). Only this process's code can reach it."""
    from web import api

    flask_app = create_app(settings, celery_app)
    flask_app.config[api.LOCAL_ACTOR] = actor
    # What no answer can carry (the database down, a bug) reaches the command as it was.
    flask_app.config["PROPAGATE_EXCEPTIONS"] = True
    return flask_app


def error_body(error: UsherError) -> dict[str, Any]:
    """An error's ``{code, message}``; a full line's also says ``retry_after_s`` (its
    answer's Retry-After), as a refused batch item does."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if isinstance(error, QueueFull):
        body["retry_after_s"] = error.retry_after_s
    return body


def _too_large(limit: int) -> tuple[Response, int]:
    # JSON on every route: the dashboard's UsherError handler would answer a POST with a flash.
    message = f"the body is larger than {limit:,} bytes (the limit is USHER_MAX_BODY_BYTES)"
    return jsonify(error={"code": TooLarge.code, "message": message}), TooLarge.status


def _refuse_big_bodies() -> Any:
    """Answer 413 from the headers alone, before anything reads the body."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    length = request.content_length
    return _too_large(limit) if length is not None and length > limit else None


def read_body() -> bytes:
    """The whole body, or 413. Without a Content-Length (a chunked body; waitress sets one)
    werkzeug cuts the body at MAX_CONTENT_LENGTH without a word, so a body that fills the
    limit is taken for one that goes past it."""
    data = request.get_data(cache=True)
    if request.content_length is None and len(data) >= current_app.config["MAX_CONTENT_LENGTH"]:
        raise RequestEntityTooLarge()
    return data


NOT_AN_OBJECT = "the body must be a JSON object (Content-Type: application/json)"


class Request(flask.Request):
    """Every JSON body read one way: whole (``read_body``), a JSON object, nested at most
    ``parameters.MAX_DEPTH`` deep. Anything else is InvalidRequest (400), also for a caller
    that asks with ``silent`` (flask-openapi3 does): no model sees None or a list."""

    _object: dict[str, Any] | None = None

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if self._object is None:
            self._object = self._json_object()
        return self._object

    def _json_object(self) -> dict[str, Any]:
        if not self.is_json:
            raise InvalidRequest(NOT_AN_OBJECT)
        too_deep = InvalidRequest(f"JSON nested deeper than {parameters.MAX_DEPTH} levels")
        try:
            body = json.loads(read_body())
        except RecursionError:
            raise too_deep from None
        except ValueError:  # also bad UTF-8 (UnicodeDecodeError)
            raise InvalidRequest(NOT_AN_OBJECT) from None
        if not isinstance(body, dict):
            raise InvalidRequest(NOT_AN_OBJECT)
        if parameters.depth(body) > parameters.MAX_DEPTH:
            raise too_deep
        return body


# --- failed authentications, throttled per client address --------------------------------------


def _auth_attempt() -> bool:
    """Requests that present a credential: every API call but its description, and a login."""
    if request.blueprint == "api":
        return request.endpoint != "api.openapi"
    return request.endpoint == "dashboard.login" and request.method == "POST"


def client_key() -> str:
    """The client's address, an IPv6 one as its /64: one host holds a whole /64, and would
    otherwise get a fresh allowance per address."""
    address = request.remote_addr or "?"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _throttle(flask_app: Flask, settings: config.Settings) -> None:
    """Past ``auth_failures_per_minute`` failures from an address, its auth attempts get 429
    until the minute is over. The counts live in this process: each web process has its own."""
    limiter = Limiter(
        client_key,
        app=flask_app,
        application_limits=[f"{settings.auth_failures_per_minute}/minute"],
        application_limits_exempt_when=lambda: not _auth_attempt(),
        application_limits_deduct_when=lambda response: bool(g.get("auth_failed")),
        storage_uri="memory://",
        strategy="fixed-window",
    )
    flask_app.extensions["usher_limiter"] = limiter


def auth_failed() -> None:
    """Count this request as a failed authentication (once its answer is sent) and log it."""
    g.auth_failed = True
    # The path quoted: a decoded newline in it cannot start a forged log line.
    log.warning("failed authentication from %s on %r", request.remote_addr, request.path)


def actor() -> str:
    """Who this request acts as, its audit row's actor and the ``requested_by`` and
    ``cancelled_by`` of what it does: the bearer token's name (``g.identity``), the dashboard
    session's (``g.user``), the webhook (``webhook:<ref>``), else ``anonymous``."""
    identity = g.get("identity")
    if identity is not None:
        return str(identity.name)
    if g.get("user"):
        return str(g.user)
    if request.blueprint == "hooks" and request.view_args:
        return f"webhook:{request.view_args.get('ref')}"
    return "anonymous"


def retry_after_s() -> int:
    """Seconds until the breached window of this request ends."""
    breached = current_app.extensions["usher_limiter"].current_limit
    if breached is None:
        return 60
    return max(1, math.ceil(breached.window[0] - time.time()))


def throttle_message() -> str:
    return (
        f"too many failed authentications from {request.remote_addr}: at most "
        f"{settings().auth_failures_per_minute} a minute (USHER_AUTH_FAILURES_PER_MINUTE); "
        f"retry in {retry_after_s()} s"
    )
