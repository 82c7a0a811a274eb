"""The action page's controls, for admin sessions: pause and resume its lines, change its
limits live (as ``POST /api/v1/actions/<ref>/pause|resume`` and ``PATCH .../policy`` do),
and cancel a line's waiting executions (``POST .../cancel-waiting``). Each is one unit of
work; grants and execution events are published after it commits. A refusal (an unknown
action, a limit out of bounds) comes back as a flash on the page (``base.usher_failed``)."""

from __future__ import annotations

from typing import Any

from flask import current_app, flash, request, url_for

import web
from app import celery as usher_celery
from policies import cancels, control
from web import settings, unit_of_work
from web.dashboard import base

LIMITS = ("concurrency", "max_queue_length", "total_concurrency")


def _granted(count: int) -> str:
    return f"{count} granted now" if count else "nothing granted now"


def _back(ref: str) -> Any:
    return base.back(url_for("dashboard.action_page", ref=ref))


@base.bp.post("/actions/<path:ref>/pause")
def pause_action(ref: str) -> Any:
    with unit_of_work() as db_session:
        control.set_paused(db_session, settings(), ref, True)
    flash(f"{ref} paused: nothing more is granted; running work finishes.", "info")
    return _back(ref)


@base.bp.post("/actions/<path:ref>/resume")
def resume_action(ref: str) -> Any:
    with unit_of_work() as db_session:
        grants = control.set_paused(db_session, settings(), ref, False)
    usher_celery.publish(current_app.config["USHER_CELERY"], grants)
    flash(f"{ref} resumed: {_granted(len(grants))}.", "info")
    return _back(ref)


@base.bp.post("/actions/<path:ref>/limits")
def set_limits(ref: str) -> Any:
    # A field left empty is not changed; one that is not a number goes to the same refusal
    # as the API's (requests.PolicyChange names the field and its bounds).
    changes: dict[str, Any] = {}
    for key in LIMITS:
        given = request.form.get(key, "").strip()
        if given:
            number = web.parse_int(given)
            changes[key] = given if number is None else number
    with unit_of_work() as db_session:
        grants = control.update_policy(db_session, settings(), ref, changes)
    usher_celery.publish(current_app.config["USHER_CELERY"], grants)
    said = ", ".join(f"{key} {value}" for key, value in changes.items())
    flash(f"{ref}: {said} until its pack is loaded again; {_granted(len(grants))}.", "info")
    return _back(ref)


@base.bp.post("/actions/<path:ref>/cancel-waiting")
def cancel_waiting(ref: str) -> Any:
    partition = request.form.get("partition")
    with unit_of_work() as db_session:
        done = cancels.cancel_waiting(
            db_session, settings(), ref, partition, cancelled_by=web.actor()
        )
    usher_celery.send_events(current_app.config["USHER_CELERY"], list(done.events))
    line = f" [{partition}]" if partition else ""
    flash(f"{ref}{line}: {len(done.ids)} waiting execution(s) cancelled.", "info")
    return _back(ref)
