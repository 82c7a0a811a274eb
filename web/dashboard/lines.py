"""The overview (a page of lines, refreshed from ``/ui/overview.json``) and an action's page
(its policy, its lines, a line's waiting executions, its latest executions, its chart)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from flask import render_template, request
from sqlalchemy.orm import Session

from app import queries
from policies import eta, limits, retry
from web import formatting, settings, unit_of_work, views_data
from web.dashboard import base

# A chart's last sample older than this means no sweeper runs: the chart shows the gap.
STALE_SAMPLES_S = 60


def _line_key(row: dict[str, Any]) -> str:
    partition = row["partition"]
    suffix = hashlib.sha1(partition.encode()).hexdigest()[:10] if partition else "0"
    return f"a{row['action_id']}-{suffix}"


def _line_cells(row: dict[str, Any], concurrency: int) -> tuple[dict[str, str], dict[str, str]]:
    """Display text of a line's counters, and marks (CSS hints) for the ones to notice."""
    active = row["active_count"]
    cells = {
        "queue_length": formatting.num(row["queue_length"]),
        "active": f"{active:,} / {concurrency:,}",
        "enqueued": formatting.num(row["total_enqueued"]),
        "succeeded": formatting.num(row["total_completed"]),
        "dead": formatting.num(row["total_failed"]),
        "cancelled": formatting.num(row["total_cancelled"]),
        "expired": formatting.num(row["total_expired"]),
        "oldest_wait": formatting.duration(row["oldest_wait_s"]),
    }
    marks = {
        "queue_length": "busy" if row["queue_length"] else "",
        "active": "full" if active >= concurrency else ("busy" if active else ""),
        "dead": "bad" if row["total_failed"] else "",
        "oldest_wait": "warn" if (row["oldest_wait_s"] or 0) > 60 else "",
    }
    return cells, marks


def _overview(args: dict[str, str]) -> dict[str, Any]:
    search = args.get("q", "").strip()[:200]
    after = (args["after_ref"], args.get("after_key", "")) if args.get("after_ref") else None
    with unit_of_work() as db_session:
        rows = views_data.lines(db_session, search, after, base.LINES_PAGE)
        ids = list(dict.fromkeys(r["action_id"] for r in rows))
        sparks = views_data.sparklines(db_session, ids)
        rates = views_data.throughput(db_session, ids)
        summary = views_data.summary(db_session)
    lines, seen = [], set()
    for row in rows:
        resolved = limits.resolve(row["action_policy"], row["pack_policy"], settings())
        cells, marks = _line_cells(row, resolved.concurrency)
        first = row["action_id"] not in seen
        seen.add(row["action_id"])
        cells["throughput"] = formatting.rate(rates.get(row["action_id"])) if first else ""
        lines.append(
            {
                "key": _line_key(row),
                "action_ref": row["action_ref"],
                "partition": row["partition"],
                "first": first,
                "cells": cells,
                "marks": marks,
                "spark": [[round(t), v] for t, v in sparks.get(row["action_id"], [])]
                if first
                else None,
            }
        )
    last = rows[-1] if len(rows) == base.LINES_PAGE else None
    return {
        "search": search,
        "after": after,
        "lines": lines,
        "summary": {k: formatting.num(v) for k, v in summary.items()},
        "next": {"after_ref": last["action_ref"], "after_key": last["partition"]} if last else None,
    }


@base.bp.get("/")
def overview() -> Any:
    return render_template("dashboard/overview.html", **_overview(request.args.to_dict()))


@base.bp.get("/ui/overview.json")
def overview_json() -> Any:
    page = _overview(request.args.to_dict())
    return {
        "at": datetime.now(UTC).isoformat(),
        "cells": page["summary"],
        "rows": [
            {"key": x["key"], "cells": x["cells"], "marks": x["marks"], "spark": x["spark"]}
            for x in page["lines"]
        ],
    }


def _policy(action: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(setting, effective value, where it comes from) for the policy table."""
    own, pack = action["policy"] or {}, action["pack_policy"] or {}
    resolved = limits.resolve(own, pack, settings())
    backoff = retry.resolve(own, pack, settings())

    def source(key: str) -> str:
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


def _action_stats(db_session: Session, action: dict[str, Any], aid: int) -> dict[str, Any]:
    totals = views_data.action_totals(db_session, aid)
    resolved = limits.resolve(action["policy"] or {}, action["pack_policy"] or {}, settings())
    lines = views_data.action_lines(db_session, aid, limit=base.WAITING_PAGE)
    waits = [x["oldest_wait_s"] for x in lines if x["oldest_wait_s"] is not None]
    row = {
        **totals,
        "action_id": aid,
        "partition": "",
        "oldest_wait_s": max(waits) if waits else None,
    }
    # The limit applies per line; a partitioned action has one slot pool per partition.
    limit = resolved.concurrency * max(totals["lines"], 1) if resolved.partition_by else None
    cells, marks = _line_cells(row, limit or resolved.concurrency)
    return {"cells": cells, "marks": marks, "oldest_wait_s": row["oldest_wait_s"], **totals}


def _chosen_line(
    db_session: Session, aid: int, lines: list[dict[str, Any]], key: str | None
) -> dict[str, Any] | None:
    """The line whose waiting executions the action page lists: the one asked for, else the
    first with someone waiting, else the first."""
    if key is not None:
        found = views_data.action_lines(db_session, aid, key=key, limit=1)
        if found:
            return found[0]
    return next((x for x in lines if x["queue_length"]), lines[0] if lines else None)


@base.bp.get("/actions/<path:ref>")
def action_page(ref: str) -> Any:
    line_key = request.args.get("line")
    wp, ws = base.int_arg("wp"), base.int_arg("ws")
    after = (wp, ws) if wp is not None and ws is not None else None
    with unit_of_work() as db_session:
        action = queries.action_row(db_session, ref)
        aid = views_data.action_id(db_session, ref)
        stats = _action_stats(db_session, action, aid)
        lines = views_data.action_lines(
            db_session, aid, request.args.get("lines_after"), base.WAITING_PAGE
        )
        chosen = _chosen_line(db_session, aid, lines, line_key)
        waiting = []
        line_pace = None
        if chosen and chosen["queue_id"]:
            waiting = views_data.waiting(db_session, chosen["queue_id"], after, base.WAITING_PAGE)
            line_pace = eta.pace(db_session, chosen["queue_id"])
        executions = views_data.action_executions(
            db_session, aid, base.int_arg("before"), base.EXECUTIONS_PAGE
        )
    return render_template(
        "dashboard/action.html",
        action=action,
        policy=_policy(action),
        stats=stats,
        lines=lines,
        line=chosen,
        waiting=waiting,
        pace=line_pace,
        position_from=(base.int_arg("wn") or 0) if after else 0,
        executions=executions,
        executions_next=executions[-1]["id"] if len(executions) == base.EXECUTIONS_PAGE else None,
    )


@base.bp.get("/ui/actions/<path:ref>/chart.json")
def action_chart(ref: str) -> Any:
    with unit_of_work() as db_session:
        action = queries.action_row(db_session, ref)
        aid = views_data.action_id(db_session, ref)
        stats = _action_stats(db_session, action, aid)
        points = views_data.samples(db_session, aid)
    depth = [[round(p["age_s"]), p["queue_length"]] for p in points]
    wait = [[round(p["age_s"]), round(p["oldest_wait_s"] or 0, 1)] for p in points]
    if points and points[-1]["age_s"] > -STALE_SAMPLES_S:  # else leave the gap visible
        depth.append([0, stats["queue_length"]])
        wait.append([0, round(stats["oldest_wait_s"] or 0, 1)])
    return {
        "at": datetime.now(UTC).isoformat(),
        "cells": stats["cells"],
        "marks": stats["marks"],
        "chart": {"depth": depth, "wait": wait},
    }
