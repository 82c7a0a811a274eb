"""Schedules: what a schedule file means, storing it, and firing each tick exactly once.

A beat (``tasks.beat``) calls ``fire_due`` about once a second. It takes the schedules that
are due ``FOR UPDATE SKIP LOCKED`` in a bounded batch (one another beat is firing is that
beat's), works out their ticks (``ticks.due``: late ones by ``missed``) and claims each one
by inserting (schedule, fire time) into ``schedule_fires`` ``ON CONFLICT DO NOTHING``. Only
a tick this transaction inserted fires, so however many beats run, each tick fires once.

A fired tick is one event (trigger ``usher.schedule``, payload ``{schedule, fire_at}``, or
the schedule's own trigger) and, for an action, one enforcement (under the schedule's ref,
no rule) and one execution through the action's line by ``intake.enqueue_many``: a busy line
makes it wait in order, a full one refuses it and the enforcement is ``rejected`` with the
reason. Then the rules on those events act (``events.process_many``). All of it happens in
the caller's transaction: functions take a session and never commit; publish the grants
after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, delete, false, func, or_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import queries, sql
from app.config import Settings
from app.errors import NotFound, UsherError
from app.models import Schedule
from policies import busy, events, intake, lines, pack_files, templates, ticks

log = logging.getLogger(__name__)

TRIGGER = "usher.schedule"  # the trigger of an action schedule's events
TEMPLATE_NAMES = frozenset({"schedule"})  # what its parameters' templates read
BATCH = 100  # schedules per transaction
TIMINGS = ("cron", "every_s", "at")  # exactly one of each tuple
TARGETS = ("action", "trigger")


@dataclass(frozen=True)
class Fire:
    """A tick fired: its event and, for an action, its enforcement."""

    schedule: str
    fire_at: datetime
    event_id: int
    enforcement: events.Enforcement | None = None


@dataclass(frozen=True)
class Fired:
    taken: int  # schedules due in this batch (a full batch: there may be more)
    fires: list[Fire]
    skipped: int  # late ticks left unfired (missed: skip, or all but one for run_once)
    grants: list[lines.Grant]  # after commit: app.celery.after_intake
    stopped: tuple[busy.Stopped, ...] = ()  # running ones its ticks' cancel_running cancelled
    events: tuple[int, ...] = ()  # the execution events those cancels emitted


# --- a schedule file ----------------------------------------------------------------------


def timing(schedule: dict[str, Any]) -> ticks.Timing:
    """A schedule file's timing (``ticks.BadTiming`` naming the key at fault)."""
    at = schedule.get("at")
    return ticks.Timing(
        cron=schedule.get("cron"),
        every_s=schedule.get("every_s"),
        at=ticks.at_time(at) if isinstance(at, str) else None,
        timezone=schedule.get("timezone", "UTC"),
    )


def _one_of(schedule: dict[str, Any], keys: tuple[str, ...]) -> pack_files.Problem | None:
    given = [key for key in keys if key in schedule]
    if len(given) == 1:
        return None
    choice = f"{', '.join(keys[:-1])} or {keys[-1]}"
    if not given:
        return [], f"give exactly one of {choice}"
    return [given[1]], f"give exactly one of {choice}, not both {given[0]} and {given[1]}"


def problem(schedule: dict[str, Any]) -> pack_files.Problem | None:
    """What is wrong with a schedule file its schema took (its templates aside)."""
    found = _one_of(schedule, TIMINGS) or _one_of(schedule, TARGETS)
    if found is not None:
        return found
    if "action" not in schedule and "parameters" in schedule:
        return [
            "parameters"
        ], "parameters go with action; a trigger's event holds {schedule, fire_at}"
    if "action" in schedule and "." not in schedule["action"]:
        return ["action"], "must be a reference 'pack.action'"
    try:
        timing(schedule)
    except ticks.BadTiming as error:
        return [error.key] if error.key else [], str(error)
    return None


def store(
    session: Session, pack_id: int, pack: str, schedules: list[dict[str, Any]], now: datetime
) -> None:
    """Upsert a pack's schedules and delete those whose file is gone (their fires go with
    them). A schedule keeps its next tick unless its timing changed or it was disabled: a
    reload neither skips a tick about to fire nor fires one twice."""
    refs = []
    for schedule in schedules:
        when = timing(schedule)
        values = {
            "pack_id": pack_id,
            "ref": f"{pack}.{schedule['name']}",
            "name": schedule["name"],
            "description": schedule.get("description", ""),
            "cron": when.cron,
            "every_s": None if when.every_s is None else float(when.every_s),
            "at": when.at,
            "timezone": when.timezone,
            "action_ref": schedule.get("action"),
            "trigger": schedule.get("trigger"),
            "parameters": schedule.get("parameters") or {},
            "missed": schedule.get("missed", "skip"),
            "enabled": schedule.get("enabled", True),
            "next_fire_at": when.next_after(now),
        }
        refs.append(values["ref"])
        statement = insert(Schedule).values(**values)
        new, old = statement.excluded, Schedule.__table__.c
        changed = or_(
            *(old[key].is_distinct_from(new[key]) for key in TIMINGS),
            old.timezone != new.timezone,
            old.enabled == false(),
        )
        update = {k: v for k, v in values.items() if k not in ("ref", "next_fire_at")}
        update |= {
            "updated_at": func.now(),
            "next_fire_at": case((changed, new.next_fire_at), else_=old.next_fire_at),
        }
        session.execute(statement.on_conflict_do_update(index_elements=[Schedule.ref], set_=update))
    session.execute(delete(Schedule).where(Schedule.pack_id == pack_id, Schedule.ref.not_in(refs)))


# --- firing -------------------------------------------------------------------------------


def _timing_of(row: Any) -> ticks.Timing:
    """The timing of a row (or a row's mapping) of ``schedules``."""
    get = row.__getitem__ if isinstance(row, Mapping) else lambda key: getattr(row, key)
    return ticks.Timing(get("cron"), get("every_s"), get("at"), get("timezone"))


def _trigger(row: Any) -> str:
    return TRIGGER if row.action_ref is not None else str(row.trigger)


def payload(ref: str, fire_at: datetime) -> dict[str, str]:
    """A fired tick's event payload, and what its templates see as ``schedule``."""
    return {"schedule": ref, "fire_at": fire_at.astimezone(UTC).isoformat()}


def fire_due(
    session: Session, settings: Settings, now: datetime | None = None, limit: int = BATCH
) -> Fired:
    """Fire the ticks of up to ``limit`` due schedules (see the module); ``now`` is the
    database's clock unless given."""
    rows = session.execute(sql.query("lock_due_schedules"), {"now": now, "limit": limit}).all()
    if not rows:
        return Fired(0, [], 0, [])
    # The rules of these events before any line, as events.process_many takes them
    # (rules_of_triggers says why): the schedules' own executions take lines first.
    session.execute(
        sql.query("rules_of_triggers"), {"triggers": sorted({_trigger(r) for r in rows})}
    )
    wanted: list[dict[str, Any]] = []
    advances: list[dict[str, Any]] = []
    skipped = 0
    for row in rows:
        try:
            due = ticks.due(
                _timing_of(row), row.next_fire_at, row.now, row.missed, settings.schedule_grace_s
            )
        except ticks.BadTiming as error:  # a timezone this host's tz database lacks
            log.warning("schedule %s cannot fire: %s; it waits for a reload", row.ref, error)
            advances.append({"id": row.id, "n": None, "l": None})
            continue
        skipped += due.skipped
        wanted += [{"s": row.id, "f": tick} for tick in due.fire]
        advances.append({"id": row.id, "n": due.next_fire_at, "l": max(due.fire, default=None)})
    fires, done = _fire(session, settings, {r.id: r for r in rows}, wanted)
    session.execute(sql.query("advance_schedules"), {"rows": sql.jsonb(advances)})
    return Fired(len(rows), fires, skipped, done.grants, done.stopped, done.events)


def _fire(
    session: Session, settings: Settings, due: dict[int, Any], wanted: list[dict[str, Any]]
) -> tuple[list[Fire], events.Processed]:
    """Claim the ticks, then the event, enforcement and execution of each one claimed; what
    their intakes leave to do after commit."""
    if not wanted:
        return [], events.Processed([], [])
    claimed = session.execute(sql.query("claim_fires"), {"rows": sql.jsonb(wanted)}).all()
    # In fire time order, so the executions of one line take their seq in that order.
    new = sorted(((due[c.schedule_id], c.fire_at) for c in claimed), key=lambda n: (n[1], n[0].ref))
    if not new:
        return [], events.Processed([], [])
    bodies = [payload(row.ref, tick) for row, tick in new]
    event_ids = events.store_many(
        session,
        [
            {"trigger": _trigger(row), "payload": body}
            for (row, _), body in zip(new, bodies, strict=True)
        ],
        settings.max_payload_bytes,
    )
    session.execute(
        sql.query("set_fire_events"),
        {
            "rows": sql.jsonb(
                [
                    {"s": row.id, "f": tick, "e": event_id}
                    for (row, tick), event_id in zip(new, event_ids, strict=True)
                ]
            )
        },
    )
    enforced = _enforce(session, settings, new, bodies, event_ids)
    processed = events.process_many(session, settings, event_ids) or events.Processed([], [])
    by_event = {e.event_id: e for e in enforced.enforcements}
    fires = [
        Fire(row.ref, tick, event_id, by_event.get(event_id))
        for (row, tick), event_id in zip(new, event_ids, strict=True)
    ]
    done = events.Processed(
        [],
        enforced.grants + processed.grants,
        enforced.stopped + processed.stopped,
        tuple(sorted(set(enforced.events + processed.events))),
    )
    return fires, done


def _enforce(
    session: Session,
    settings: Settings,
    new: list[tuple[Any, datetime]],
    bodies: list[dict[str, str]],
    event_ids: list[int],
) -> events.Processed:
    """One enforcement and one execution per fired tick of an action schedule, recorded as
    a rule's are: ``executed``, or ``rejected`` with the reason (a template that failed, an
    action gone, parameters its schema refuses, a full line)."""
    planned: list[tuple[int, Any, str | None, int | None]] = []  # event, row, reason, request
    requests: list[intake.Request] = []
    for (row, _), body, event_id in zip(new, bodies, event_ids, strict=True):
        if row.action_ref is None:
            continue
        try:
            params = templates.render(row.parameters, {"schedule": body})
        except UsherError as error:
            planned.append((event_id, row, events.refusal(error), None))
            continue
        planned.append((event_id, row, None, len(requests)))
        requests.append(intake.Request(row.action_ref, params, requested_by=f"schedule:{row.ref}"))
    if not planned:
        return events.Processed([], [])
    result = intake.enqueue_many(session, settings, requests) if requests else None
    records = []
    for event_id, row, reason, index in planned:
        item = result[index] if result is not None and index is not None else None
        status = "rejected" if reason is not None else "executed"
        if item is not None:
            status, reason = events.outcome(item, status, reason)
        records.append(
            {
                "e": event_id,
                "r": None,
                "f": row.ref,
                "s": status,
                "w": reason,
                "x": item.execution_id if item is not None else None,
            }
        )
    # events' own recording (one statement, in order): an enforcement is one thing, whoever
    # made it.
    enforced = events.record(session, records)
    return events.Processed.of(enforced, result)


def next_due_s(session: Session) -> float | None:
    """Seconds until the next schedule falls due (by the database's clock), None if none may
    fire: how long a beat may sleep."""
    wait = session.execute(sql.query("next_schedule_due")).scalar_one()
    return None if wait is None else float(wait)


# --- listing and pausing ------------------------------------------------------------------


def _listed(row: Any) -> dict[str, Any]:
    item = queries.iso_row(row)
    item["spec"] = _timing_of(row).describe()
    return item


def listing(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(sql.query("list_schedules"), {"ref": None}).mappings()
    return [_listed(row) for row in rows]


def one(session: Session, ref: str) -> dict[str, Any]:
    row = session.execute(sql.query("list_schedules"), {"ref": ref}).mappings().one_or_none()
    if row is None:
        raise NotFound(f"no schedule named {ref!r}; see `usher schedules list`")
    return _listed(row)


def upcoming(schedule: Mapping[str, Any], count: int, now: datetime) -> list[datetime]:
    """The next ``count`` ticks of a listed schedule (``listing``'s item), in UTC: from its
    next tick while it runs, from ``now`` while it is paused (a resume goes on from the next
    tick after it), none while it is disabled or its timing cannot be computed here."""
    if not schedule["enabled"]:
        return []
    try:
        timing = _timing_of({**schedule, "at": _moment(schedule["at"])})
    except ticks.BadTiming:  # a timezone this host's tz database lacks
        return []
    if schedule["paused"]:
        return timing.upcoming(now, count)
    first = _moment(schedule["next_fire_at"])
    return [] if first is None else [first, *timing.upcoming(first, count - 1)]


def _moment(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def set_paused(session: Session, ref: str, paused: bool) -> dict[str, Any]:
    """Pause (no tick fires) or resume (from the next tick after now: the ticks that fell in
    the pause were not missed, they were not wanted); returns the schedule."""
    row = session.execute(sql.query("lock_schedule"), {"ref": ref}).one_or_none()
    if row is None:
        raise NotFound(f"no schedule named {ref!r}; see `usher schedules list`")
    if paused:
        session.execute(sql.query("pause_schedule"), {"id": row.id})
    else:
        following = _timing_of(row).next_after(row.now)
        session.execute(sql.query("resume_schedule"), {"id": row.id, "next": following})
    return one(session, ref)
