"""The dashboard's blueprint and what every page shares: the session check, the security
headers, the error pages, the template globals and filters, the page sizes."""

from __future__ import annotations

import os
import secrets
import tempfile
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

import web
from app import models, tokens
from app.errors import UsherError
from web import formatting, settings, unit_of_work

bp = Blueprint("dashboard", __name__)

LINES_PAGE = 50
WAITING_PAGE = 100
EXECUTIONS_PAGE = 50
EVENTS_PAGE = 50
SESSION_LIFETIME = timedelta(hours=12)
PUBLIC = frozenset({"dashboard.login"})
# Only our own files: no inline script or style, no framing (the buttons change things).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def secret_key(home: Path, given: str | None = None) -> str:
    """``given`` (USHER_SECRET_KEY), else a random key kept in ``home/secret_key`` (mode
    0600), made once.

    The key is written to a private temporary file and hard-linked into place, so processes
    starting together all end up reading the one key that won the link.
    """
    if given:
        return given
    path = home / "secret_key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=home, prefix=".secret_key.")  # mode 0600
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.close(fd)
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(temporary)
    return path.read_text().strip()


# --- plumbing ---------------------------------------------------------------------------------


def safe_next(value: str | None, default: str) -> str:
    """A same-site path to go back to; anything else (another host, a scheme, a character
    that is not printable ASCII, which could split the Location header) is ignored."""
    if not value or not (value.isascii() and value.isprintable()):
        return default
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    return default if parts.scheme or parts.netloc else value


def back(default: str) -> Response:
    """After a form: back where it was posted from (its ``next``), else to ``default``."""
    return redirect(safe_next(request.form.get("next"), default), code=303)


def int_arg(name: str) -> int | None:
    value = web.parse_int(request.args.get(name, ""))
    return value if value is not None and abs(value) <= 2**62 else None


def session_key() -> bytes:
    """The key of the session cookies' MACs."""
    return str(current_app.secret_key).encode()


def _identity(db_session: Session) -> tokens.Identity | None:
    """Whose session the cookie names, checked against Postgres on every request: a session
    that was logged out, expired or whose token was revoked is refused."""
    nonce, mac = session.get("nonce"), session.get("mac")
    if not isinstance(nonce, str) or not isinstance(mac, str):
        return None
    return tokens.session_identity(db_session, nonce, mac, session_key(), settings().api_token)


@bp.before_request
def require_session() -> Any:
    if request.endpoint in PUBLIC:
        return None
    with unit_of_work() as db_session:
        identity = _identity(db_session)
    if identity is None:
        session.clear()
        if request.path.startswith("/ui/"):
            return jsonify(error={"code": "unauthorized", "message": "log in again"}), 401
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
    g.user, g.admin = identity.name, identity.admin
    if request.method == "POST" and not identity.admin and request.endpoint != "dashboard.logout":
        abort(403, "this token is read-only: it can look at everything but change nothing")
    return None


@bp.after_request
def security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.errorhandler(CSRFError)
def csrf_failed(error: CSRFError) -> Any:
    # CSRF is checked before require_session: the header needs the session's identity.
    with unit_of_work() as db_session:
        identity = _identity(db_session)
    g.user, g.admin = (identity.name, identity.admin) if identity else (None, False)
    message = f"The form could not be trusted: {error.description} Reload the page and retry."
    return render_template("dashboard/error.html", code=400, message=message), 400


@bp.errorhandler(HTTPException)
def http_failed(error: HTTPException) -> Any:
    code = error.code or 500
    return render_template("dashboard/error.html", code=code, message=error.description), code


@bp.errorhandler(RateLimitExceeded)
def throttled(error: RateLimitExceeded) -> Any:
    page = render_template("dashboard/error.html", code=429, message=web.throttle_message())
    return page, 429, {"Retry-After": str(web.retry_after_s())}


@bp.errorhandler(UsherError)
def usher_failed(error: UsherError) -> Any:
    if request.method == "POST":  # e.g. cancelling what just finished: say so where we were
        g.refused = error.code  # the redirect's audit row says so too (web.audit)
        flash(error.message, "error")
        return back(url_for("dashboard.overview"))
    return render_template(
        "dashboard/error.html", code=error.status, message=error.message
    ), error.status


@bp.app_context_processor
def template_globals() -> dict[str, Any]:
    return {"cancellable": models.CANCELLABLE, "refresh_ms": 2000}


def clock(value: Any) -> str:
    """The time of day to the millisecond (UTC): an attempt's steps, dated by its first."""
    moment = formatting.as_datetime(value)
    return "—" if moment is None else moment.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


# Display helpers live in web.formatting: the pages' filters and the JSON they refresh from.
for _name in ("num", "duration", "when", "iso"):
    bp.add_app_template_filter(getattr(formatting, _name), _name)
bp.add_app_template_filter(clock, "clock")
