"""The schedules page: each schedule's timing, its next ticks in its own timezone and in UTC,
its last tick and the execution it made; pausing and resuming it (as
``POST /api/v1/schedules/<ref>/pause|resume`` do)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import flash, render_template, url_for

from policies import schedules
from web import formatting, unit_of_work, views_data
from web.dashboard import base

NEXT_TICKS = 3


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def tick(moment: datetime, zone: ZoneInfo, now: datetime) -> dict[str, Any]:
    """A tick as the page shows it: in the schedule's timezone, in UTC (with its day when
    that differs; none when the timezone is UTC), and how far off it is."""
    local = moment.astimezone(zone)
    utc = moment.astimezone(UTC)
    if local.tzname() == "UTC":  # the local time says it already
        in_utc = None
    else:
        in_utc = utc.strftime(
            "%H:%M:%S UTC" if local.date() == utc.date() else "%b %d %H:%M:%S UTC"
        )
    wait = (moment - now).total_seconds()
    return {
        "iso": utc.isoformat(),
        "local": local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "utc": in_utc,
        "in": "due now" if wait <= 0 else f"in {formatting.duration(wait)}",
    }


def _timing(item: dict[str, Any], zone: ZoneInfo) -> str:
    """The spec, but a one-off's time as its ticks read: in its timezone (the spec says UTC)."""
    at = formatting.as_datetime(item["at"])
    return item["spec"] if at is None else f"at {at.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}"


def _state(item: dict[str, Any]) -> str:
    if not item["enabled"]:
        return "disabled"
    return "paused" if item["paused"] else "enabled"


def rows(listing: list[dict[str, Any]], fires: dict[str, Any], now: datetime) -> list[Any]:
    """The page's rows: each listed schedule (``schedules.listing``) with its state, its next
    ticks and its last one (``views_data.schedule_fires``)."""
    found = []
    for item in listing:
        zone = _zone(item["timezone"])
        last = fires.get(item["ref"])
        found.append(
            {
                **item,
                "state": _state(item),
                "timing": _timing(item, zone),
                "next": [tick(t, zone, now) for t in schedules.upcoming(item, NEXT_TICKS, now)],
                "last": {**last, "tick": tick(last["fire_at"], zone, now)} if last else None,
            }
        )
    return found


@base.bp.get("/schedules")
def schedules_page() -> Any:
    with unit_of_work() as db_session:
        listing = schedules.listing(db_session)
        fires = views_data.schedule_fires(db_session)
    return render_template(
        "dashboard/schedules.html", schedules=rows(listing, fires, datetime.now(UTC))
    )


@base.bp.post("/schedules/<path:ref>/pause")
def pause_schedule(ref: str) -> Any:
    with unit_of_work() as db_session:
        schedules.set_paused(db_session, ref, True)
    flash(f"Schedule {ref} paused: no tick fires until it is resumed.", "info")
    return base.back(url_for("dashboard.schedules_page"))


@base.bp.post("/schedules/<path:ref>/resume")
def resume_schedule(ref: str) -> Any:
    with unit_of_work() as db_session:
        resumed = schedules.set_paused(db_session, ref, False)
    following = resumed["next_fire_at"]
    then = f"its next tick is {formatting.when(following)} UTC" if following else "no tick is left"
    flash(f"Schedule {ref} resumed: {then}.", "info")
    return base.back(url_for("dashboard.schedules_page"))
