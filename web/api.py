"""REST API ``/api/v1``: thin views over ``app.queries`` and ``policies``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, current_app, g, request
from sqlalchemy.orm import Session

import web
from app import celery as usher_celery
from app import db, queries, tokens
from app.config import Settings
from app.errors import Forbidden, InvalidRequest, Unauthorized
from app.models import STATUSES
from policies import admission, control, dlq, eta, events, intake, parameters, stats

bp = Blueprint("api", __name__, url_prefix="/api/v1")
log = logging.getLogger(__name__)


def settings() -> Settings:
    value: Settings = current_app.config["USHER_SETTINGS"]
    return value


@contextmanager
def unit_of_work() -> Iterator[Session]:
    with db.unit_of_work(current_app.config["USHER_ENGINE"]) as session:
        yield session


MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@bp.before_request
def authenticate() -> None:
    """Reads need any valid token; every mutating method needs an admin token."""
    if request.endpoint == "api.openapi":
        return  # the API's description is public, like /healthz
    header = request.headers.get("Authorization", "").strip()
    scheme, _, token = header.partition(" ")
    identity = None
    if scheme.lower() == "bearer" and token:
        with unit_of_work() as session:
            identity = tokens.identify(session, token, settings().api_token)
    if identity is None:
        if header:  # a credential was offered and refused: it counts towards the throttle
            web.auth_failed()
            raise Unauthorized("the bearer token is not valid (or was revoked)")
        raise Unauthorized()
    if request.method in MUTATING and not identity.admin:
        raise Forbidden()
    g.identity = identity


NOT_AN_OBJECT = "the body must be a JSON object (Content-Type: application/json)"


def _body() -> dict[str, Any]:
    """The JSON object of the body (at most USHER_MAX_BODY_BYTES, checked before this reads
    it), nested at most ``parameters.MAX_DEPTH`` deep."""
    if not request.is_json:
        raise InvalidRequest(NOT_AN_OBJECT)
    too_deep = InvalidRequest(f"JSON nested deeper than {parameters.MAX_DEPTH} levels")
    try:
        body = json.loads(web.read_body())
    except RecursionError:
        raise too_deep from None
    except ValueError:  # also bad UTF-8 (UnicodeDecodeError)
        raise InvalidRequest(NOT_AN_OBJECT) from None
    if not isinstance(body, dict):
        raise InvalidRequest(NOT_AN_OBJECT)
    if parameters.depth(body) > parameters.MAX_DEPTH:
        raise too_deep
    return body


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    value = web.parse_int(raw)
    if value is None:
        raise InvalidRequest(f"{name} must be an integer")
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}")
    return value


@bp.get("/openapi.json")
def openapi() -> Any:
    from web import openapi as spec

    return spec.document()


@bp.get("/actions")
def list_actions() -> Any:
    with unit_of_work() as session:
        items = queries.actions(session)
        found = stats.all_action_stats(session, settings())  # one query for every action
        for item in items:
            item["queue_stats"] = found.get(item["ref"]) or stats.action_stats(
                session, settings(), item["ref"]
            )
    return {"items": items}


@bp.get("/actions/<path:ref>/queue-stats")
def queue_stats(ref: str) -> Any:
    with unit_of_work() as session:
        return stats.action_stats(session, settings(), ref)


@bp.post("/actions/<path:ref>/pause")
def pause_action(ref: str) -> Any:
    """Grant nothing more on the action's lines; running work finishes, waiting keeps place."""
    with unit_of_work() as session:
        control.set_paused(session, settings(), ref, True)
        return stats.action_stats(session, settings(), ref) | {"paused": True}


@bp.post("/actions/<path:ref>/resume")
def resume_action(ref: str) -> Any:
    with unit_of_work() as session:
        grants = control.set_paused(session, settings(), ref, False)
        body = stats.action_stats(session, settings(), ref) | {"paused": False}
    usher_celery.publish(current_app.config["USHER_CELERY"], grants)
    return body


@bp.patch("/actions/<path:ref>/policy")
def patch_policy(ref: str) -> Any:
    """Change concurrency, max_queue_length or queue_timeout_s live."""
    changes = _body()
    with unit_of_work() as session:
        grants = control.update_policy(session, settings(), ref, changes)
        body = stats.action_stats(session, settings(), ref)
    usher_celery.publish(current_app.config["USHER_CELERY"], grants)
    return body


@bp.get("/actions/<path:ref>")
def show_action(ref: str) -> Any:
    with unit_of_work() as session:
        action = queries.action_row(session, ref)
        action["queue_stats"] = stats.action_stats(session, settings(), ref)
    return action


def _batch(key: str) -> list[Any]:
    items = _body().get(key)
    if not isinstance(items, list) or not 1 <= len(items) <= intake.MAX_BATCH:
        raise InvalidRequest(f"'{key}' must be a list of 1 to {intake.MAX_BATCH} items")
    return items


@bp.post("/executions")
def submit_execution() -> Any:
    action, params, priority = intake.fields(_body())
    with unit_of_work() as session:
        enqueued = admission.enqueue(session, settings(), action, params, priority)
        position = admission.position(session, enqueued.execution_id)
    usher_celery.publish(current_app.config["USHER_CELERY"], enqueued.grants)
    status = "scheduled" if enqueued.granted else "queued"
    return {"id": enqueued.execution_id, "status": status, "position": position}, 202


@bp.post("/executions/batch")
def submit_executions() -> Any:
    """Many requests at once, each all-or-nothing on its own: an id or the error it got."""
    requests = _batch("items")
    with unit_of_work() as session:
        results = intake.enqueue_many(session, settings(), requests)
    usher_celery.publish(current_app.config["USHER_CELERY"], results.grants)
    items: list[dict[str, Any]] = []
    for result in results:
        if result.error is None:
            items.append(
                {
                    "index": result.index,
                    "id": result.execution_id,
                    "status": result.status,
                    "seq": result.seq,
                }
            )
            continue
        error = result.error
        # Refused items create no execution: this line is their record (like a 429's).
        log.warning(
            "batch item %d refused: %d %s: %s", result.index, error.status, error.code, error
        )
        items.append(
            {
                "index": result.index,
                "error": {"status": error.status, "code": error.code, "message": error.message},
            }
        )
    return {"items": items, "accepted": results.accepted, "refused": results.refused}, 202


@bp.get("/executions")
def list_executions() -> Any:
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}")
    limit = _int_arg("limit", 50, 1, 1000)
    before = _int_arg("before", None, 1, 2**62)
    with unit_of_work() as session:
        items = queries.executions(
            session,
            action=request.args.get("action") or None,
            status=status,
            limit=limit or 50,
            before=before,
        )
    next_cursor = items[-1]["id"] if len(items) == limit else None
    return {"items": items, "next": next_cursor}


@bp.get("/executions/<int:execution_id>")
def show_execution(execution_id: int) -> Any:
    with unit_of_work() as session:
        row = queries.execution(session, execution_id)
        row.update(eta.estimate(session, execution_id))
    return row


@bp.post("/executions/<int:execution_id>/cancel")
def cancel_execution(execution_id: int) -> Any:
    with unit_of_work() as session:
        cancelled = admission.cancel(session, settings(), execution_id)
        row = queries.execution(session, execution_id)
    celery_app = current_app.config["USHER_CELERY"]
    usher_celery.terminate(celery_app, execution_id, row["attempt"], cancelled.previous_status)
    usher_celery.publish(celery_app, cancelled.grants)
    return row


@bp.post("/events")
def post_event() -> Any:
    """Store the event and return at once; a worker matches rules on queue usher.events.
    ``?wait=S`` (0-30) waits up to S seconds for its enforcements."""
    body = _body()
    wait_s = _int_arg("wait", 0, 0, 30) or 0
    with unit_of_work() as session:
        event_id = events.store(
            session, body.get("trigger"), body.get("payload", {}), settings().max_payload_bytes
        )
    usher_celery.send_event(current_app.config["USHER_CELERY"], event_id)
    return _event(event_id, wait_s), 202


@bp.post("/events/batch")
def post_events() -> Any:
    """Store every event or none (400 naming the first bad one); one worker message for all."""
    items = _batch("events")
    with unit_of_work() as session:
        event_ids = events.store_many(session, items, settings().max_payload_bytes)
    usher_celery.send_events(current_app.config["USHER_CELERY"], event_ids)
    return {"event_ids": event_ids, "count": len(event_ids)}, 202


@bp.get("/events/<int:event_id>")
def get_event(event_id: int) -> Any:
    return _event(event_id, 0)


@bp.post("/events/<int:event_id>/replay")
def replay_event(event_id: int) -> Any:
    """Process a failed event again, with its tries back (409 unless it failed)."""
    with unit_of_work() as session:
        events.replay(session, event_id)
    usher_celery.send_event(current_app.config["USHER_CELERY"], event_id)
    return _event(event_id, 0)


def _event(event_id: int, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while True:
        with unit_of_work() as session:
            state = events.state(session, event_id)
            found = events.enforcements(session, event_id)
        done = state["processed"] or state["failed"]
        if done or time.monotonic() >= deadline:
            return {"event_id": event_id, **state, "enforcements": found}
        time.sleep(0.1)


@bp.get("/dlq")
def list_dlq() -> Any:
    limit = _int_arg("limit", 100, 1, 1000) or 100
    before = _int_arg("before", None, 1, 2**62)
    with unit_of_work() as session:
        items = dlq.items(session, limit, before)
        total = dlq.count(session)
    return {
        "items": items,
        "total": total,
        "next": items[-1]["id"] if len(items) == limit else None,
    }


@bp.post("/dlq/<int:execution_id>/replay")
def replay_dlq(execution_id: int) -> Any:
    with unit_of_work() as session:
        enqueued = dlq.replay(session, settings(), execution_id)
    usher_celery.publish(current_app.config["USHER_CELERY"], enqueued.grants)
    return {"replayed": execution_id, "id": enqueued.execution_id}


@bp.post("/dlq/purge")
def purge_dlq() -> Any:
    with unit_of_work() as session:
        return {"purged": dlq.purge(session)}
