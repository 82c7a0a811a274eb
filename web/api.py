"""REST API ``/api/v1``: thin views over ``app.queries`` and ``policies``.

Each view declares its models (``path``, ``query``, ``body`` arguments; ``responses``):
flask-openapi3 validates the request against them and builds the OpenAPI document from them
(``web.apidoc``). The body models are ``policies.requests``, the rest ``web.schemas`` (the
schedules' ``web.schedule_schemas``).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, cast

from flask import current_app, g, request
from flask_openapi3 import APIBlueprint, OpenAPI

import web
from app import celery as usher_celery
from app import queries, search, tokens
from app.errors import Forbidden, Unauthorized
from policies import (
    admission,
    catalog,
    control,
    eta,
    idempotency,
    requests,
    stats,
)
from web import catalog_schemas, groups, schemas, settings, unit_of_work

bp = APIBlueprint(
    "api",
    __name__,
    url_prefix="/api/v1",
    abp_responses=schemas.ERRORS,
    abp_security=[{"bearer": []}],
)
log = logging.getLogger(__name__)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOCAL_ACTOR = "USHER_LOCAL_ACTOR"  # set by web.local_app only: never from a setting
RECENT_TOKENS = "usher_recent_tokens"  # tokens.Recent, made by web.create_app
TOKEN_CHECK_S = 5.0  # a token checked this recently is not checked again (revocation: 5 s)


@bp.before_request
def authenticate() -> None:
    """Reads need any valid token; every mutating method needs an admin token."""
    if request.endpoint == "api.openapi":
        return  # the API's description is public, like /healthz
    local = current_app.config.get(LOCAL_ACTOR)
    if local is not None:
        # The CLI's own app in its own process (``web.local_app``): it holds the database's
        # credentials already, so it acts as admin, by the name of the user who runs it.
        g.identity = tokens.Identity(local, admin=True)
        return
    header = request.headers.get("Authorization", "").strip()
    scheme, _, token = header.partition(" ")
    identity = None
    if scheme.lower() == "bearer" and token:
        recent: tokens.Recent = current_app.extensions[RECENT_TOKENS]
        identity = recent.get(token)
        if identity is None:
            with unit_of_work() as session:
                identity = tokens.identify(session, token, settings().api_token)
            if identity is not None:
                recent.put(token, identity)
    if identity is None:
        if header:  # a credential was offered and refused: it counts towards the throttle
            web.auth_failed()
            raise Unauthorized("the bearer token is not valid (or was revoked)")
        raise Unauthorized()
    g.identity = identity  # set before a refusal, whose audit row names it (web.audit)
    if request.method in MUTATING and not identity.admin:
        raise Forbidden()


@bp.get("/openapi.json", doc_ui=False)
def openapi() -> Any:
    return cast(OpenAPI, current_app).api_doc


READ_ONE = schemas.NOT_FOUND
WRITE_ONE = schemas.WRITE | schemas.NOT_FOUND


@bp.get("/actions", summary="Every action with its queue stats", responses={200: schemas.Actions})
def list_actions() -> Any:
    with unit_of_work() as session:
        items = queries.actions(session)
        found = stats.all_action_stats(session, settings())  # one query for every action
        for item in items:
            item["queue_stats"] = found.get(item["ref"]) or stats.action_stats(
                session, settings(), item["ref"]
            )
    return {"items": items}


@bp.get(
    "/actions/<path:ref>/queue-stats",
    summary="The line's counters (and each partition's)",
    responses={200: schemas.QueueStats, **READ_ONE},
)
def queue_stats(path: schemas.ActionPath) -> Any:
    with unit_of_work() as session:
        return stats.action_stats(session, settings(), path.ref)


@bp.post(
    "/actions/<path:ref>/pause",
    summary="Pause the action's lines: nothing granted, waiting keeps its place",
    responses={200: schemas.Controlled, **WRITE_ONE},
)
def pause_action(path: schemas.ActionPath) -> Any:
    with unit_of_work() as session:
        control.set_paused(session, settings(), path.ref, True)
        return stats.action_stats(session, settings(), path.ref) | {"granted": 0}


@bp.post(
    "/actions/<path:ref>/resume",
    summary="Resume the action's lines; what fits is granted at once",
    responses={200: schemas.Controlled, **WRITE_ONE},
)
def resume_action(path: schemas.ActionPath) -> Any:
    with unit_of_work() as session:
        grants = control.set_paused(session, settings(), path.ref, False)
        answer = stats.action_stats(session, settings(), path.ref)
    usher_celery.publish(current_app.config["USHER_CELERY"], grants)
    return answer | {"granted": len(grants)}


@bp.patch(
    "/actions/<path:ref>/policy",
    summary="Change concurrency, max_queue_length, queue_timeout_s or total_concurrency live",
    responses={200: schemas.Controlled, **WRITE_ONE},
)
def patch_policy(path: schemas.ActionPath, body: requests.PolicyChange) -> Any:
    with unit_of_work() as session:
        grants = control.update_policy(session, settings(), path.ref, body.changes())
        answer = stats.action_stats(session, settings(), path.ref)
    usher_celery.publish(current_app.config["USHER_CELERY"], grants)
    return answer | {"granted": len(grants)}


@bp.get(
    "/actions/<path:ref>",
    summary="One action: runner, parameters schema, policy (and as resolved), queue stats",
    responses={200: catalog_schemas.ActionDetail, **READ_ONE},
)
def show_action(path: schemas.ActionPath) -> Any:
    with unit_of_work() as session:
        return catalog.action(session, settings(), path.ref)


CONFLICT: dict[Any, Any] = {
    409: schemas.error("The Idempotency-Key was used for a different request")
}
BUSY_OR_CONFLICT: dict[Any, Any] = {
    409: schemas.error(
        "line_busy: the line has no free slot and its when_busy is skip (the message names "
        "what runs and waits); or the Idempotency-Key was used for a different request"
    )
}


@bp.post(
    "/executions",
    summary="Request an execution (now, or `delayed` until `run_at` / `delay_s`); if its "
    "line is busy, as `when_busy` says (409 `line_busy` for skip; 200 `coalesced`)",
    responses={
        200: schemas.replayed_or_coalesced(schemas.Submitted),
        202: schemas.Submitted,
        **WRITE_ONE,
        **BUSY_OR_CONFLICT,
        422: schemas.error("The parameters fail the action's schema"),
        429: schemas.error(
            "The line is full, or " + schemas.THROTTLED.lower(),
            **{
                "Retry-After": "seconds: until a place in the line should free (from its "
                "pace), or until the minute is over"
            },
        ),
    },
)
def submit_execution(header: requests.IdempotencyHeader, body: requests.ExecutionRequest) -> Any:
    """With an Idempotency-Key seen before: 200 and the first answer, nothing created; so
    too when it coalesced into an equal waiting execution (``coalesced``). Requests that
    arrive together are enqueued in one transaction (``web.grouped``), each answered
    with its own outcome once it committed."""
    asked = body.model_dump(exclude_unset=True)
    if header.idempotency_key is not None:
        asked["key"] = header.idempotency_key
    answer = groups.submit(groups.executions(), asked)
    if answer.error is not None:
        raise answer.error
    assert answer.body is not None
    created = not (answer.replayed or answer.body.get("coalesced"))
    return _shown(answer.body, "position"), 202 if created else 200


def _shown(body: dict[str, Any], place: str) -> dict[str, Any]:
    """An execution's answer: id, status, its place (position or seq), run_at if delayed,
    coalesced if it is an equal waiting one's."""
    shown = {name: body.get(name) for name in ("id", "status", place)}
    if place == "position" and body.get("seq") is not None:
        shown["seq"] = body["seq"]
    if body.get("run_at") is not None:
        shown["run_at"] = body["run_at"]
    if body.get("coalesced"):
        shown["coalesced"] = True
    return shown


@bp.post(
    "/executions/batch",
    summary="Request up to 1000 executions; each accepted or refused on its own",
    responses={
        200: schemas.replayed(schemas.BatchResult),
        202: schemas.BatchResult,
        **schemas.WRITE,
    },
)
def submit_executions(body: requests.ExecutionBatch) -> Any:
    """An item gets an id or the error the single request would get; an item whose key was
    seen before its first answer (``replayed``)."""
    with unit_of_work() as session:
        answers, taken = idempotency.enqueue(
            session, settings(), body.items, requested_by=web.actor()
        )
    usher_celery.after_intake(current_app.config["USHER_CELERY"], taken)
    items: list[dict[str, Any]] = []
    for answer in answers:
        if answer.body is not None:
            items.append({"index": answer.index, **_shown(answer.body, "seq")})
            if answer.replayed:
                items[-1]["replayed"] = True
            continue
        error = answer.error
        assert error is not None
        # Refused items create no execution: this line is their record (like a 429's).
        log.warning(
            "batch item %d refused: %d %s: %s", answer.index, error.status, error.code, error
        )
        items.append(
            {
                "index": answer.index,
                "error": {"status": error.status, **web.error_body(error)},
            }
        )
    accepted = sum(1 for a in answers if a.body is not None)
    replayed = all(a.replayed for a in answers)
    answer_body = {"items": items, "accepted": accepted, "refused": len(answers) - accepted}
    return answer_body, 200 if replayed else 202


@bp.get(
    "/executions",
    summary="Executions, newest first, by cursor; by action, status, parameters, time, requester",
    responses={200: schemas.Executions},
)
def list_executions(query: schemas.ExecutionsQuery) -> Any:
    """Filters: `param.<name>=<value>` (up to 5, each a top-level parameter equal to the
    value as a string, or as the number or boolean it spells), `since <= enqueued_at <
    until`, `rule` (requested by `rule:<ref>`), `requested_by`; all must match."""
    params = search.filters(request.args.items(multi=True))
    with unit_of_work() as session:
        items = queries.executions(
            session,
            action=query.action,
            status=query.status,
            limit=query.limit,
            before=query.before,
            params=params,
            requested_by=query.requested_by,
            since=search.utc(query.since),
            until=search.utc(query.until),
            rule=query.rule,
        )
    next_cursor = items[-1]["id"] if len(items) == query.limit else None
    return {"items": items, "next": next_cursor}


# Re-runs of an execution: their own module, on this blueprint.
from web import api_reruns  # noqa: E402, F401


@bp.get(
    "/executions/<int:execution_id>",
    summary="One execution with its attempt history and place in line",
    responses={200: schemas.ExecutionDetail, **READ_ONE},
)
def show_execution(path: schemas.ExecutionPath) -> Any:
    with unit_of_work() as session:
        row = queries.execution(session, path.execution_id)
        row.update(eta.estimate(session, path.execution_id, settings()))
    return row


# An execution's live output: its own module, on this blueprint (tasks.output writes it).
from web import api_output  # noqa: E402, F401


@bp.post(
    "/executions/<int:execution_id>/cancel",
    summary="Cancel a delayed, queued, scheduled, running or retrying execution",
    responses={200: schemas.ExecutionHistory, **WRITE_ONE, 409: schemas.error("Already finished")},
)
def cancel_execution(path: schemas.ExecutionPath) -> Any:
    with unit_of_work() as session:
        cancelled = admission.cancel(
            session, settings(), path.execution_id, cancelled_by=web.actor()
        )
        row = queries.execution(session, path.execution_id)
    celery_app = current_app.config["USHER_CELERY"]
    usher_celery.after_cancel(
        celery_app,
        path.execution_id,
        row["attempt"],
        cancelled.previous_status,
        cancelled.grants,
        cancelled.events,
    )
    return row


# The other routes of /api/v1 live in modules of their own, on this blueprint, registered
# in this order (the order of the OpenAPI document and docs/api.md).
ROUTE_MODULES = (
    "web.api_events",
    "web.api_dlq",
    "web.api_schedules",
    "web.api_event_list",
    "web.api_audit",
    "web.api_pools",
    "web.api_controls",
    "web.api_catalog",
    "web.api_admin",
)
for _module in ROUTE_MODULES:
    importlib.import_module(_module)
