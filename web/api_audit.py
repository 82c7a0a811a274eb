"""``GET /api/v1/audit`` (on ``web.api.bp``): every mutation, newest first, for any token.
Imported once, at the end of ``web.api``; the rows are written by ``web.audit``."""

from __future__ import annotations

from typing import Any

from app import audit
from web import audit_schemas, unit_of_work
from web.api import bp


@bp.get(
    "/audit",
    summary="Every mutation (time, actor, verb, target, outcome), newest first, by cursor",
    responses={200: audit_schemas.Audit},
)
def list_audit(query: audit_schemas.AuditQuery) -> Any:
    with unit_of_work() as session:
        items, following = audit.newest(session, query.limit, query.before)
    return {"items": items, "next": following}
