"""The catalog routes of ``/api/v1`` (on ``web.api.bp``): the packs, the rules, and a rule's
enabled switch. Imported once, at the end of ``web.api``."""

from __future__ import annotations

from typing import Any

from policies import catalog, rules
from web import catalog_schemas, schemas, unit_of_work
from web.api import bp

SWITCHED = {200: catalog_schemas.Rule, **schemas.WRITE, **schemas.NOT_FOUND}


@bp.get(
    "/packs",
    summary="Every pack: what it holds (actions, rules, schedules, webhooks), when loaded",
    responses={200: catalog_schemas.Packs},
)
def list_packs() -> Any:
    with unit_of_work() as session:
        return {"items": catalog.packs(session)}


@bp.get(
    "/rules",
    summary="Every rule (`?trigger=` exactly): trigger, action, enabled, recent enforcements",
    responses={200: catalog_schemas.Rules},
)
def list_rules(query: catalog_schemas.RulesQuery) -> Any:
    with unit_of_work() as session:
        return {"items": rules.listing(session, trigger=query.trigger)}


@bp.get(
    "/rules/<path:ref>",
    summary="One rule: criteria, parameters, enabled, recent enforcements",
    responses={200: catalog_schemas.Rule, **schemas.NOT_FOUND},
)
def show_rule(path: catalog_schemas.RulePath) -> Any:
    with unit_of_work() as session:
        return rules.show(session, path.ref)


@bp.post(
    "/rules/<path:ref>/enable",
    summary="Enable a rule (until its pack is loaded again: the file says then)",
    responses=SWITCHED,
)
def enable_rule(path: catalog_schemas.RulePath) -> Any:
    with unit_of_work() as session:
        return rules.set_enabled(session, path.ref, True)


@bp.post(
    "/rules/<path:ref>/disable",
    summary="Disable a rule: its events get skipped enforcements (until its pack is loaded again)",
    responses=SWITCHED,
)
def disable_rule(path: catalog_schemas.RulePath) -> Any:
    with unit_of_work() as session:
        return rules.set_enabled(session, path.ref, False)
