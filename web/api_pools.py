"""The pools' routes of ``/api/v1`` (on ``web.api.bp``): list, show, a live limit. Imported
once by ``web.api``."""

from __future__ import annotations

from typing import Any

from flask import current_app

from app import celery as usher_celery
from policies import pools, requests
from web import level_schemas, schemas, settings, unit_of_work
from web.api import READ_ONE, WRITE_ONE, bp


@bp.get(
    "/pools",
    summary="Every pool: its limit (live or pack.yaml's), active, waiting, the actions using it",
    responses={200: level_schemas.Pools},
)
def list_pools() -> Any:
    with unit_of_work() as session:
        return {"items": pools.listing(session)}


@bp.get("/pools/<path:ref>", summary="One pool", responses={200: level_schemas.Pool, **READ_ONE})
def show_pool(path: level_schemas.PoolPath) -> Any:
    with unit_of_work() as session:
        return pools.show(session, path.ref)


@bp.patch(
    "/pools/<path:ref>",
    summary="Change a pool's limit live, until its pack is loaded again; raising it grants at once",
    responses={
        200: level_schemas.PoolChanged,
        **WRITE_ONE,
        409: schemas.error("A pack load is regrouping the pool's actions just now: retry"),
    },
)
def patch_pool(path: level_schemas.PoolPath, body: requests.PoolChange) -> Any:
    with unit_of_work() as session:
        grants = pools.set_limit(session, settings(), path.ref, body.limit)
        answer = pools.show(session, path.ref)
    usher_celery.publish(current_app.config["USHER_CELERY"], grants)
    return answer | {"granted": len(grants)}
