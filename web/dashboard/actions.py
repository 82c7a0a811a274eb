"""An action's page: its counters, chart and policy, its lines, a line's waiting executions
and its latest executions; all of it refreshed from ``/ui/actions/<ref>/chart.json``, which
reads them in one unit of work (the tiles and the tables agree) and renders the tables with
the page's own template."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import render_template, request, url_for
from sqlalchemy.orm import Session

from app import bounds, queries
from policies import eta, limits, pools, retry
from web import formatting, settings, unit_of_work, views_data
from web.dashboard import base, lines

# A chart's last sample older than this means no sweeper runs: the chart shows the gap.
STALE_SAMPLES_S = 60
TABLES = "dashboard/action_tables.html"


# Where a setting's value comes from: (label, what it means), for the policy table.
SOURCES = {
    "live": (
        "live override",
        "set live (usher actions set, PATCH /api/v1/actions/<ref>/policy): "
        "the next pack load puts the pack's value back",
    ),
    "action": ("action", "the action's own policy"),
    "pack": ("pack", "the pack's policy, for every action of the pack"),
    "default": ("default", "the global default (USHER_* settings)"),
}


def _policy(action: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(setting, effective value, where it comes from) for the policy table.

    A live change is merged into the action's policy (``policies.control``); the keys it set
    are told apart only when the row carries them as ``live_policy``, which the schema does
    not hold yet: until then they read as the action's own."""
    own, pack = action["policy"] or {}, action["pack_policy"] or {}
    live = action.get("live_policy") or {}
    resolved = limits.resolve(own, pack, settings())
    backoff = retry.resolve(own, pack, settings())

    def source(key: str) -> str:
        if key in live:
            return "live"
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
        ("total_concurrency", resolved.total or "—", source("total_concurrency")),
        ("pools", ", ".join(resolved.pools) or "—", source("pools")),
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


def _action_stats(
    db_session: Session, action: dict[str, Any], aid: int, first: list[dict[str, Any]]
) -> dict[str, Any]:
    """The action's counters over all its lines; the oldest wait of its ``first`` lines."""
    totals = views_data.action_totals(db_session, aid)
    resolved = limits.resolve(action["policy"] or {}, action["pack_policy"] or {}, settings())
    waits = [x["oldest_wait_s"] for x in first if x["oldest_wait_s"] is not None]
    row = {
        **totals,
        "action_id": aid,
        "partition": "",
        "oldest_wait_s": max(waits) if waits else None,
    }
    if not resolved.partition_by:
        cells, marks = lines.line_cells(row, resolved.concurrency)
        return {"cells": cells | {"limit": ""}, "marks": marks, **row}
    # Each partition is a line with its own slots: the limit is per partition, not summed.
    count = totals["lines"]
    cells, marks = lines.line_cells(row, resolved.concurrency * max(count, 1))
    cells["active"] = formatting.num(totals["active_count"])
    cells["limit"] = f"limit {resolved.concurrency:,} per partition, " + (
        f"{count:,} partition{'' if count == 1 else 's'}" if count else "no partitions yet"
    )
    return {"cells": cells, "marks": marks, **row}


def _chosen_line(
    db_session: Session, aid: int, shown: list[dict[str, Any]], key: str | None
) -> dict[str, Any] | None:
    """The line whose waiting executions the action page lists: the one asked for, else the
    first with someone waiting, else the first."""
    if key is not None:
        found = views_data.action_lines(db_session, aid, key=key, limit=1)
        if found:
            return found[0]
    return next((x for x in shown if x["queue_length"]), shown[0] if shown else None)


def _query() -> str:
    query = request.query_string.decode()
    return f"?{query}" if query else ""


def _page(db_session: Session, ref: str) -> dict[str, Any]:
    """What the page shows, for the page's query string (its line, its pages of each list)."""
    action = queries.action_row(db_session, ref)
    aid = views_data.action_id(db_session, ref)
    wp, ws = base.int_arg("wp"), base.int_arg("ws")
    after = (wp, ws) if wp is not None and ws is not None else None
    lines_after = request.args.get("lines_after")
    shown = views_data.action_lines(db_session, aid, lines_after, base.WAITING_PAGE)
    first = (
        shown
        if lines_after is None
        else views_data.action_lines(db_session, aid, limit=base.WAITING_PAGE)
    )
    chosen = _chosen_line(db_session, aid, shown, request.args.get("line"))
    waiting: list[dict[str, Any]] = []
    line_pace = None
    if chosen and chosen["queue_id"]:
        waiting = views_data.waiting(db_session, chosen["queue_id"], after, base.WAITING_PAGE)
        line_pace = eta.pace(db_session, chosen["queue_id"])
    executions = views_data.action_executions(
        db_session, aid, base.int_arg("before"), base.EXECUTIONS_PAGE
    )
    return {
        "action": action,
        "aid": aid,
        "stats": _action_stats(db_session, action, aid, first),
        "lines": shown,
        "line": chosen,
        "waiting": waiting,
        "pace": line_pace,
        "position_from": (base.int_arg("wn") or 0) if after else 0,
        "executions": executions,
        "levels": pools.held_by(pools.usage(db_session, ref), ref),
        "executions_next": executions[-1]["id"]
        if len(executions) == base.EXECUTIONS_PAGE
        else None,
        # Where the tables' forms come back to: this page, whichever view renders them.
        "here": url_for("dashboard.action_page", ref=ref) + _query(),
    }


@base.bp.get("/actions/<path:ref>")
def action_page(ref: str) -> Any:
    with unit_of_work() as db_session:
        page = _page(db_session, ref)
    action = page["action"]
    return render_template(
        "dashboard/action.html",
        policy=_policy(action),
        sources=SOURCES,
        # The controls' form starts from the limits in force (web.dashboard.controls).
        resolved=limits.resolve(action["policy"] or {}, action["pack_policy"] or {}, settings()),
        bounds=bounds,
        **page,
    )


@base.bp.get("/ui/actions/<path:ref>/chart.json")
def action_chart(ref: str) -> Any:
    """The page's live refresh: the counters, the chart and the tables (same query string)."""
    with unit_of_work() as db_session:
        page = _page(db_session, ref)
        points = views_data.samples(db_session, page["aid"])
    stats = page["stats"]
    depth = [[round(p["age_s"]), p["queue_length"]] for p in points]
    wait = [[round(p["age_s"]), round(p["oldest_wait_s"] or 0, 1)] for p in points]
    if points and points[-1]["age_s"] > -STALE_SAMPLES_S:  # else leave the gap visible
        depth.append([0, stats["queue_length"]])
        wait.append([0, round(stats["oldest_wait_s"] or 0, 1)])
    return {
        "at": datetime.now(UTC).isoformat(),
        "cells": stats["cells"],
        "marks": stats["marks"],
        "flags": {"paused": bool(page["action"]["paused"])},
        "chart": {"depth": depth, "wait": wait},
        "html": render_template(TABLES, **page),
    }
