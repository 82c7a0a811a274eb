"""The executions page: the API's list and its filters (``app.search``), newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import render_template, request

from app import queries, search
from app.errors import InvalidRequest
from app.models import STATUSES
from web import unit_of_work
from web.dashboard import base

FIELDS = ("action", "status", "since", "until", "rule", "requested_by")


def _time(name: str) -> datetime | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        return search.utc(datetime.fromisoformat(raw))
    except ValueError:
        raise InvalidRequest(f"{name}: an ISO 8601 time such as 2026-12-01T08:00") from None


def _params() -> dict[str, str]:
    """``param.<name>`` arguments (as the API takes them) and the form's ``params`` field,
    ``name=value`` pairs separated by spaces."""
    pairs = [(k, v) for k, v in request.args.items(multi=True) if k.startswith(search.PREFIX)]
    for word in request.args.get("params", "").split():
        name, _, value = word.partition("=")
        pairs.append((search.PREFIX + name, value))
    return search.filters(pairs)


@base.bp.get("/executions")
def executions_page() -> Any:
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status: one of {', '.join(STATUSES)}")
    params = _params()
    with unit_of_work() as db_session:
        rows = queries.executions(
            db_session,
            action=request.args.get("action") or None,
            status=status,
            limit=base.EXECUTIONS_PAGE,
            before=base.int_arg("before"),
            params=params,
            since=_time("since"),
            until=_time("until"),
            rule=request.args.get("rule") or None,
            requested_by=request.args.get("requested_by") or None,
        )
    following = rows[-1]["id"] if len(rows) == base.EXECUTIONS_PAGE else None
    kept = {k: request.args[k] for k in FIELDS if request.args.get(k)}
    if params:
        kept["params"] = " ".join(f"{k}={v}" for k, v in params.items())
    return render_template(
        "dashboard/executions.html", rows=rows, next=following, kept=kept, statuses=STATUSES
    )
