"""The Flask app factory: the REST API, the dashboard, /metrics and /healthz."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from celery import Celery
from flask import Flask, jsonify
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.exc import DataError, OperationalError
from werkzeug.exceptions import HTTPException

from app import celery as usher_celery
from app import config, db
from app.errors import DatabaseUnavailable, InvalidRequest, UsherError


def create_app(settings: config.Settings | None = None, celery_app: Celery | None = None) -> Flask:
    settings = settings or config.load()
    flask_app = Flask(__name__)
    flask_app.config["USHER_SETTINGS"] = settings
    flask_app.config["USHER_ENGINE"] = db.engine_for(db.database_url(settings))
    flask_app.config["USHER_CELERY"] = celery_app or usher_celery.create(settings)
    flask_app.json.sort_keys = False  # type: ignore[attr-defined]

    from web import api, dashboard

    flask_app.config.update(
        SECRET_KEY=dashboard.secret_key(settings.home),
        SESSION_COOKIE_NAME="usher_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=os.environ.get("USHER_SECURE_COOKIES", "").lower() in ("1", "true"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        # A CSRF token lives as long as the session: a dashboard left open keeps working.
        WTF_CSRF_TIME_LIMIT=None,
    )
    csrf = CSRFProtect(flask_app)
    csrf.exempt(api.bp)  # bearer tokens, no cookies: nothing for a forged form to ride on
    flask_app.register_blueprint(api.bp)
    flask_app.register_blueprint(dashboard.bp)

    @flask_app.get("/healthz")
    def healthz() -> Any:
        return {"status": "ok"}

    @flask_app.get("/metrics")
    def metrics() -> Any:
        from web import metrics as prometheus

        body = prometheus.render(flask_app.config["USHER_ENGINE"])
        return body, 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}

    @flask_app.errorhandler(UsherError)
    def usher_error(error: UsherError) -> Any:
        return jsonify(error={"code": error.code, "message": error.message}), error.status

    @flask_app.errorhandler(DataError)
    def unstorable(error: DataError) -> Any:
        # e.g. a NUL character in a path or query value: Postgres refuses it, so do we.
        return usher_error(InvalidRequest("the request holds a value Postgres cannot store"))

    @flask_app.errorhandler(OperationalError)
    def database_down(error: OperationalError) -> Any:
        return usher_error(DatabaseUnavailable())

    @flask_app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        code = (error.name or "error").lower().replace(" ", "_")
        return jsonify(error={"code": code, "message": error.description}), error.code

    return flask_app
