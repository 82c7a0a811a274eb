"""The overview: a page of lines, refreshed from ``/ui/overview.json``; and the display text
of a line's counters, which an action's page shows for the whole action."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from flask import render_template, request

from policies import limits
from web import formatting, settings, unit_of_work, views_data
from web.dashboard import base


def _line_key(row: dict[str, Any]) -> str:
    partition = row["partition"]
    suffix = hashlib.sha1(partition.encode()).hexdigest()[:10] if partition else "0"
    return f"a{row['action_id']}-{suffix}"


def line_cells(row: dict[str, Any], concurrency: int) -> tuple[dict[str, str], dict[str, str]]:
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
        cells, marks = line_cells(row, resolved.concurrency)
        first = row["action_id"] not in seen
        seen.add(row["action_id"])
        cells["throughput"] = formatting.rate(rates.get(row["action_id"])) if first else ""
        lines.append(
            {
                "key": _line_key(row),
                "action_ref": row["action_ref"],
                "partition": row["partition"],
                "first": first,
                "flags": {"paused": bool(row["paused"])},
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
            {k: x[k] for k in ("key", "cells", "marks", "flags", "spark")} for x in page["lines"]
        ],
    }
