"""The operator's dashboard: server-rendered pages, a session from an API token, CSRF forms.

Reads go through ``app.queries``, ``policies`` and ``web.views_data`` (one page at a time);
writes take the same path as the REST API: a unit of work, then publish after commit.
``/ui/*.json`` feed the 2-second live refresh of ``static/dashboard.js``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
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
from app import celery as usher_celery
from app import db, queries, tokens
from app.config import Settings
from app.errors import UsherError
from policies import admission, dlq, eta, limits, retry
from web import formatting, views_data

bp = Blueprint("dashboard", __name__)

LINES_PAGE = 50
WAITING_PAGE = 100
EXECUTIONS_PAGE = 50
EVENTS_PAGE = 50
# A chart's last sample older than this means no sweeper runs: the chart shows the gap.
STALE_SAMPLES_S = 60
CANCELLABLE = ("queued", "scheduled", "running", "retrying")
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


def secret_key(home: Path) -> str:
    """USHER_SECRET_KEY, else a random key kept in ``home/secret_key`` (mode 0600), made once.

    The key is written to a private temporary file and hard-linked into place, so processes
    starting together all end up reading the one key that won the link.
    """
    given = os.environ.get("USHER_SECRET_KEY")
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


def settings() -> Settings:
    value: Settings = current_app.config["USHER_SETTINGS"]
    return value


@contextmanager
def unit_of_work() -> Iterator[Session]:
    with db.unit_of_work(current_app.config["USHER_ENGINE"]) as db_session:
        yield db_session


def _safe_next(value: str | None, default: str) -> str:
    """A same-site path to go back to; anything else (another host, a scheme, a character
    that is not printable ASCII, which could split the Location header) is ignored."""
    if not value or not (value.isascii() and value.isprintable()):
        return default
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    return default if parts.scheme or parts.netloc else value


def _back(default: str) -> Response:
    return redirect(_safe_next(request.form.get("next"), default), code=303)


def _int_arg(name: str) -> int | None:
    value = web.parse_int(request.args.get(name, ""))
    return value if value is not None and abs(value) <= 2**62 else None


def _key() -> bytes:
    return str(current_app.secret_key).encode()


def _identity(db_session: Session) -> tokens.Identity | None:
    """Whose session the cookie names, checked against Postgres on every request: a session
    that was logged out, expired or whose token was revoked is refused."""
    nonce, mac = session.get("nonce"), session.get("mac")
    if not isinstance(nonce, str) or not isinstance(mac, str):
        return None
    return tokens.session_identity(db_session, nonce, mac, _key(), settings().api_token)


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
        flash(error.message, "error")
        return _back(url_for("dashboard.overview"))
    return render_template(
        "dashboard/error.html", code=error.status, message=error.message
    ), error.status


@bp.app_context_processor
def template_globals() -> dict[str, Any]:
    return {"cancellable": CANCELLABLE, "refresh_ms": 2000}


# Display helpers live in web.formatting: the pages' filters and the JSON they refresh from.
for _name in ("num", "duration", "when", "iso"):
    bp.add_app_template_filter(getattr(formatting, _name), _name)


def _line_key(row: dict[str, Any]) -> str:
    partition = row["partition"]
    suffix = hashlib.sha1(partition.encode()).hexdigest()[:10] if partition else "0"
    return f"a{row['action_id']}-{suffix}"


def _line_cells(row: dict[str, Any], concurrency: int) -> tuple[dict[str, str], dict[str, str]]:
    """Display text of a line's counters, and marks (CSS hints) for the ones to notice."""
    active = row["active_count"]
    cells = {
        "queue_length": formatting.num(row["queue_length"]),
        "active": f"{active:,} / {concurrency:,}",
        "enqueued": formatting.num(row["total_enqueued"]),
        "succeeded": formatting.num(row["total_completed"]),
        "dead": formatting.num(row["total_failed"]),
        "cancelled": formatting.num(row["total_cancelled"]),
        "expired": formatting.num(row["total_expired"]),
        "oldest_wait": formatting.duration(row["oldest_wait_s"]),
    }
    marks = {
        "queue_length": "busy" if row["queue_length"] else "",
        "active": "full" if active >= concurrency else ("busy" if active else ""),
        "dead": "bad" if row["total_failed"] else "",
        "oldest_wait": "warn" if (row["oldest_wait_s"] or 0) > 60 else "",
    }
    return cells, marks


def _overview(args: dict[str, str]) -> dict[str, Any]:
    search = args.get("q", "").strip()[:200]
    after = (args["after_ref"], args.get("after_key", "")) if args.get("after_ref") else None
    with unit_of_work() as db_session:
        rows = views_data.lines(db_session, search, after, LINES_PAGE)
        ids = list(dict.fromkeys(r["action_id"] for r in rows))
        sparks = views_data.sparklines(db_session, ids)
        rates = views_data.throughput(db_session, ids)
        summary = views_data.summary(db_session)
    lines, seen = [], set()
    for row in rows:
        resolved = limits.resolve(row["action_policy"], row["pack_policy"], settings())
        cells, marks = _line_cells(row, resolved.concurrency)
        first = row["action_id"] not in seen
        seen.add(row["action_id"])
        cells["throughput"] = formatting.rate(rates.get(row["action_id"])) if first else ""
        lines.append(
            {
                "key": _line_key(row),
                "action_ref": row["action_ref"],
                "partition": row["partition"],
                "first": first,
                "cells": cells,
                "marks": marks,
                "spark": [[round(t), v] for t, v in sparks.get(row["action_id"], [])]
                if first
                else None,
            }
        )
    last = rows[-1] if len(rows) == LINES_PAGE else None
    return {
        "search": search,
        "after": after,
        "lines": lines,
        "summary": {k: formatting.num(v) for k, v in summary.items()},
        "next": {"after_ref": last["action_ref"], "after_key": last["partition"]} if last else None,
    }


# --- pages ------------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    target = _safe_next(request.values.get("next"), url_for("dashboard.overview"))
    if request.method == "GET":
        return render_template("dashboard/login.html", next=target)
    token = request.form.get("token", "").strip()
    with unit_of_work() as db_session:
        identity = tokens.identify(db_session, token, settings().api_token) if token else None
        if identity is not None:
            if isinstance(session.get("nonce"), str):  # logging in again ends the old one
                tokens.end_session(db_session, session["nonce"])
            nonce = tokens.open_session(db_session, identity.name, SESSION_LIFETIME)
    if identity is None:
        web.auth_failed()
        flash("That token is not valid (or was revoked).", "error")
        return render_template("dashboard/login.html", next=target), 401
    session.clear()  # a fresh session (and CSRF token) for the new identity
    session.permanent = True
    # The nonce names the server-side session; the MAC ties it to this very token.
    session.update(nonce=nonce, mac=tokens.session_mac(_key(), tokens.digest(token)))
    return redirect(target, code=303)


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Any:
    """GET asks (a link must not change anything); the POST, with its CSRF token, logs out."""
    if request.method == "GET":
        return render_template("dashboard/logout.html")
    with unit_of_work() as db_session:
        tokens.end_session(db_session, session["nonce"])
    session.clear()
    flash("Logged out.", "info")
    return redirect(url_for("dashboard.login"), code=303)


@bp.get("/")
def overview() -> Any:
    return render_template("dashboard/overview.html", **_overview(request.args.to_dict()))


@bp.get("/ui/overview.json")
def overview_json() -> Any:
    page = _overview(request.args.to_dict())
    return {
        "at": datetime.now(UTC).isoformat(),
        "cells": page["summary"],
        "rows": [
            {"key": x["key"], "cells": x["cells"], "marks": x["marks"], "spark": x["spark"]}
            for x in page["lines"]
        ],
    }


def _policy(action: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(setting, effective value, where it comes from) for the policy table."""
    own, pack = action["policy"] or {}, action["pack_policy"] or {}
    resolved = limits.resolve(own, pack, settings())
    backoff = retry.resolve(own, pack, settings())

    def source(key: str) -> str:
        return "action" if key in own else "pack" if key in pack else "default"

    return [
        ("concurrency", resolved.concurrency, source("concurrency")),
        ("max_queue_length", f"{resolved.max_queue_length:,}", source("max_queue_length")),
        (
            "queue_timeout_s",
            formatting.duration(resolved.queue_timeout_s),
            source("queue_timeout_s"),
        ),
        ("partition_by", ", ".join(resolved.partition_by) or "—", source("partition_by")),
        (
            "rate_limit",
            own.get("rate_limit") or pack.get("rate_limit") or "—",
            source("rate_limit"),
        ),
        (
            "retry",
            f"{backoff.max_retries} retries, {backoff.strategy.value} "
            f"{backoff.initial_delay_ms} to {backoff.max_delay_ms} ms"
            f"{', jitter' if backoff.jitter else ''}{', holds slot' if backoff.hold_slot else ''}",
            source("retry"),
        ),
        (
            "timeout_s",
            formatting.duration(action["timeout_s"]) if action["timeout_s"] else "—",
            "action" if action["timeout_s"] else "default",
        ),
    ]


def _action_stats(db_session: Session, action: dict[str, Any], aid: int) -> dict[str, Any]:
    totals = views_data.action_totals(db_session, aid)
    resolved = limits.resolve(action["policy"] or {}, action["pack_policy"] or {}, settings())
    lines = views_data.action_lines(db_session, aid, limit=WAITING_PAGE)
    waits = [x["oldest_wait_s"] for x in lines if x["oldest_wait_s"] is not None]
    row = {
        **totals,
        "action_id": aid,
        "partition": "",
        "oldest_wait_s": max(waits) if waits else None,
    }
    # The limit applies per line; a partitioned action has one slot pool per partition.
    limit = resolved.concurrency * max(totals["lines"], 1) if resolved.partition_by else None
    cells, marks = _line_cells(row, limit or resolved.concurrency)
    return {"cells": cells, "marks": marks, "oldest_wait_s": row["oldest_wait_s"], **totals}


def _chosen_line(
    db_session: Session, aid: int, lines: list[dict[str, Any]], key: str | None
) -> dict[str, Any] | None:
    """The line whose waiting executions the action page lists: the one asked for, else the
    first with someone waiting, else the first."""
    if key is not None:
        found = views_data.action_lines(db_session, aid, key=key, limit=1)
        if found:
            return found[0]
    return next((x for x in lines if x["queue_length"]), lines[0] if lines else None)


@bp.get("/actions/<path:ref>")
def action_page(ref: str) -> Any:
    line_key = request.args.get("line")
    wp, ws = _int_arg("wp"), _int_arg("ws")
    after = (wp, ws) if wp is not None and ws is not None else None
    with unit_of_work() as db_session:
        action = queries.action_row(db_session, ref)
        aid = views_data.action_id(db_session, ref)
        stats = _action_stats(db_session, action, aid)
        lines = views_data.action_lines(
            db_session, aid, request.args.get("lines_after"), WAITING_PAGE
        )
        chosen = _chosen_line(db_session, aid, lines, line_key)
        waiting = []
        line_pace = None
        if chosen and chosen["queue_id"]:
            waiting = views_data.waiting(db_session, chosen["queue_id"], after, WAITING_PAGE)
            line_pace = eta.pace(db_session, chosen["queue_id"])
        executions = views_data.action_executions(
            db_session, aid, _int_arg("before"), EXECUTIONS_PAGE
        )
    return render_template(
        "dashboard/action.html",
        action=action,
        policy=_policy(action),
        stats=stats,
        lines=lines,
        line=chosen,
        waiting=waiting,
        pace=line_pace,
        position_from=(_int_arg("wn") or 0) if after else 0,
        executions=executions,
        executions_next=executions[-1]["id"] if len(executions) == EXECUTIONS_PAGE else None,
    )


@bp.get("/ui/actions/<path:ref>/chart.json")
def action_chart(ref: str) -> Any:
    with unit_of_work() as db_session:
        action = queries.action_row(db_session, ref)
        aid = views_data.action_id(db_session, ref)
        stats = _action_stats(db_session, action, aid)
        points = views_data.samples(db_session, aid)
    depth = [[round(p["age_s"]), p["queue_length"]] for p in points]
    wait = [[round(p["age_s"]), round(p["oldest_wait_s"] or 0, 1)] for p in points]
    if points and points[-1]["age_s"] > -STALE_SAMPLES_S:  # else leave the gap visible
        depth.append([0, stats["queue_length"]])
        wait.append([0, round(stats["oldest_wait_s"] or 0, 1)])
    return {
        "at": datetime.now(UTC).isoformat(),
        "cells": stats["cells"],
        "marks": stats["marks"],
        "chart": {"depth": depth, "wait": wait},
    }


@bp.get("/executions/<int:execution_id>")
def execution_page(execution_id: int) -> Any:
    with unit_of_work() as db_session:
        execution = queries.execution(db_session, execution_id)
        extra = views_data.execution_extra(db_session, execution_id)
        standing = eta.estimate(db_session, execution_id)
    return render_template(
        "dashboard/execution.html",
        e=execution,
        extra=extra,
        position=standing["position"],
        eta_at=standing["eta"],
        timeline=formatting.timeline(execution, extra),
    )


@bp.post("/executions/<int:execution_id>/cancel")
def cancel(execution_id: int) -> Any:
    """The API's cancel: free the slot in one unit of work, then stop and publish."""
    with unit_of_work() as db_session:
        cancelled = admission.cancel(db_session, settings(), execution_id)
        attempt = queries.execution(db_session, execution_id)["attempt"]
    celery_app = current_app.config["USHER_CELERY"]
    usher_celery.terminate(celery_app, execution_id, attempt, cancelled.previous_status)
    usher_celery.publish(celery_app, cancelled.grants)
    flash(f"Execution {execution_id} cancelled (it was {cancelled.previous_status}).", "info")
    return _back(url_for("dashboard.execution_page", execution_id=execution_id))


@bp.get("/dlq")
def dlq_page() -> Any:
    with unit_of_work() as db_session:
        items = dlq.items(db_session, EXECUTIONS_PAGE, _int_arg("before"))
        total = dlq.count(db_session)
    following = items[-1]["id"] if len(items) == EXECUTIONS_PAGE else None
    return render_template("dashboard/dlq.html", items=items, total=total, next=following)


@bp.post("/dlq/<int:execution_id>/replay")
def replay(execution_id: int) -> Any:
    with unit_of_work() as db_session:
        enqueued = dlq.replay(db_session, settings(), execution_id)
    usher_celery.publish(current_app.config["USHER_CELERY"], enqueued.grants)
    flash(f"Execution {execution_id} replayed as {enqueued.execution_id}.", "info")
    return _back(url_for("dashboard.dlq_page"))


@bp.post("/dlq/purge")
def purge() -> Any:
    with unit_of_work() as db_session:
        purged = dlq.purge(db_session)
    flash(f"Purged {purged:,} item(s) from the dead-letter queue.", "info")
    return redirect(url_for("dashboard.dlq_page"), code=303)


@bp.get("/events")
def events_page() -> Any:
    with unit_of_work() as db_session:
        events = views_data.events(db_session, EVENTS_PAGE, _int_arg("before"))
        found = views_data.enforcements(db_session, [e["id"] for e in events])
    following = events[-1]["id"] if len(events) == EVENTS_PAGE else None
    return render_template("dashboard/events.html", events=events, found=found, next=following)
