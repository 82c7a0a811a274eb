"""An execution's page, its cancel and its re-run; the dead-letter queue, its replays and
its purge."""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for

import web
from app import celery as usher_celery
from app import output, queries
from app.errors import InvalidParameters
from policies import admission, dlq, eta, rerun
from web import settings, unit_of_work, views_data
from web.dashboard import base, timeline


@base.bp.get("/executions/<int:execution_id>")
def execution_page(execution_id: int) -> Any:
    with unit_of_work() as db_session:
        execution = queries.execution(db_session, execution_id)
        extra = views_data.execution_extra(db_session, execution_id)
        standing = eta.estimate(db_session, execution_id)
        live = output.read(db_session, execution_id)
    return render_template(
        "dashboard/execution.html",
        e=execution,
        extra=extra,
        position=standing["position"],
        eta_at=standing["eta"],
        timeline=timeline.steps(execution, extra),
        output=live,
    )


@base.bp.post("/executions/<int:execution_id>/cancel")
def cancel(execution_id: int) -> Any:
    """The API's cancel: free the slot in one unit of work, then stop and publish."""
    with unit_of_work() as db_session:
        cancelled = admission.cancel(db_session, settings(), execution_id, web.actor())
        attempt = queries.execution(db_session, execution_id)["attempt"]
    celery_app = current_app.config["USHER_CELERY"]
    usher_celery.after_cancel(
        celery_app,
        execution_id,
        attempt,
        cancelled.previous_status,
        cancelled.grants,
        cancelled.events,
    )
    flash(f"Execution {execution_id} cancelled (it was {cancelled.previous_status}).", "info")
    return base.back(url_for("dashboard.execution_page", execution_id=execution_id))


@base.bp.post("/executions/<int:execution_id>/rerun")
def rerun_form(execution_id: int) -> Any:
    """The form's JSON object is merged into the original's parameters (as the API's
    overrides), then checked against the action's schema by the intake."""
    try:
        edited = json.loads(request.form.get("parameters") or "{}")
    except json.JSONDecodeError as error:
        raise InvalidParameters(f"the parameters are not JSON: {error}") from None
    if not isinstance(edited, dict):
        raise InvalidParameters("the parameters must be a JSON object")
    with unit_of_work() as db_session:
        enqueued = rerun.rerun(db_session, settings(), execution_id, edited, web.actor())
    usher_celery.after_intake(current_app.config["USHER_CELERY"], enqueued)
    flash(f"Execution {execution_id} re-run as {enqueued.execution_id}.", "info")
    return redirect(url_for("dashboard.execution_page", execution_id=enqueued.execution_id), 303)


@base.bp.get("/dlq")
def dlq_page() -> Any:
    with unit_of_work() as db_session:
        items = dlq.items(db_session, base.EXECUTIONS_PAGE, base.int_arg("before"))
        total = dlq.count(db_session)
    following = items[-1]["id"] if len(items) == base.EXECUTIONS_PAGE else None
    return render_template("dashboard/dlq.html", items=items, total=total, next=following)


@base.bp.post("/dlq/<int:execution_id>/replay")
def replay(execution_id: int) -> Any:
    with unit_of_work() as db_session:
        enqueued = dlq.replay(db_session, settings(), execution_id, web.actor())
    usher_celery.after_intake(current_app.config["USHER_CELERY"], enqueued)
    flash(f"Execution {execution_id} replayed as {enqueued.execution_id}.", "info")
    return base.back(url_for("dashboard.dlq_page"))


@base.bp.post("/dlq/purge")
def purge() -> Any:
    with unit_of_work() as db_session:
        purged = dlq.purge(db_session)
    flash(f"Purged {purged:,} item(s) from the dead-letter queue.", "info")
    return redirect(url_for("dashboard.dlq_page"), code=303)
