"""The routes of ``/api/v1`` that make every ``usher`` command an API call (on
``web.api.bp``): the lines as ``usher queues`` lists them, the webhooks, the API tokens, and
a pack tree loaded from the request's body. Imported once, at the end of ``web.api``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from flask import current_app

from app import celery as usher_celery
from app import tokens
from app.errors import InvalidPack
from policies import control, pack_files, packs, pools, requests, stats, webhooks
from web import admin_schemas, api, schemas, settings, unit_of_work
from web.api import bp


@bp.get(
    "/queues",
    summary="Every line (and partition) with the levels above it: what `usher queues` lists",
    responses={200: admin_schemas.Queues},
)
def list_queues() -> Any:
    with unit_of_work() as session:
        rows = stats.lines(session, settings())
        held = pools.usage(session)
    return {"items": [r | pools.held_by(held, r["action_ref"]) for r in rows], "levels": held}


@bp.get(
    "/webhooks",
    summary="Every webhook: trigger, auth (the secret's name, never its value), requests",
    responses={200: admin_schemas.Webhooks},
)
def list_webhooks() -> Any:
    with unit_of_work() as session:
        return {"items": webhooks.listing(session)}


@bp.get(
    "/tokens",
    summary="Every API token: name, kind, created, last used, revoked (never a value)",
    responses={200: admin_schemas.Tokens},
)
def list_tokens() -> Any:
    with unit_of_work() as session:
        return {"items": tokens.listing(session)}


@bp.post(
    "/tokens",
    summary="Make an API token; the answer is the only place its value is ever shown",
    responses={201: admin_schemas.MadeToken, **schemas.WRITE},
)
def create_token(body: requests.TokenRequest) -> Any:
    with unit_of_work() as session:
        token = tokens.create(session, body.name, body.read_only)
    answer = {"name": body.name, "read_only": body.read_only, "token": token}
    return answer, 201, {"Cache-Control": "no-store"}


@bp.post(
    "/tokens/<name>/revoke",
    summary="Revoke a token: it stops working at once",
    responses={200: admin_schemas.Revoked, **schemas.WRITE, **schemas.NOT_FOUND},
)
def revoke_token(path: admin_schemas.TokenPath) -> Any:
    with unit_of_work() as session:
        tokens.revoke(session, path.name)
    current_app.extensions[api.RECENT_TOKENS].forget()  # here at once; elsewhere within 5 s
    return {"name": path.name, "revoked": True}


@bp.post(
    "/packs",
    summary="Register or update the packs of the body's files (`usher packs load` sends "
    "them); changed limits take effect at once",
    responses={
        200: admin_schemas.Loaded,
        **schemas.WRITE,
        422: schemas.error("A pack file is invalid (the message names file and line)"),
    },
)
def load_packs(body: requests.PackUpload) -> Any:
    with tempfile.TemporaryDirectory(prefix="usher-packs-") as folder:
        root = Path(folder)
        try:
            pack_files.unpack(body.files, root)
            with unit_of_work() as session:
                specs = packs.load(session, root)
                refs = [f"{s.name}.{a['name']}" for s in specs for a in s.actions]
                grants = control.readmit_refs(session, settings(), refs)
        except InvalidPack as error:
            # Its files by the names they were sent with, not where they were laid out.
            raise InvalidPack(error.message.replace(f"{root}/", "")) from None
    usher_celery.publish(current_app.config["USHER_CELERY"], grants)
    loaded = [{"pack": s.name, "actions": [a["name"] for a in s.actions]} for s in specs]
    return {"items": loaded, "granted": len(grants)}
