"""Schedules against a real Postgres, fired by calling ``policies.schedules`` with a chosen
``now`` (the beats' own tests are in test_schedules_beat.py): each tick once, its event,
enforcement and execution through the action's line, rules on its event, missed ticks,
reloads and pauses, and pack files refused at load."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, text

from app import config, db, queries
from app.errors import InvalidPack, NotFound
from policies import admission, packs, schedules
from tests.support import invariants

pytestmark = pytest.mark.timeout(60)
S = timedelta(seconds=1)


def write_pack(
    root: Path,
    schedules_: dict[str, dict[str, Any]],
    actions: dict[str, dict[str, Any]] | None = None,
    rules: dict[str, dict[str, Any]] | None = None,
    name: str | None = None,
) -> Path:
    """A pack directory (not loaded) with a noop action ``a`` unless ``actions`` are given."""
    name = name or f"s{uuid.uuid4().hex[:8]}"
    directory = root / name
    files = {
        "actions": actions or {"a": {"runner": "noop"}},
        "rules": rules or {},
        "schedules": schedules_,
    }
    for folder, documents in files.items():
        (directory / folder).mkdir(parents=True, exist_ok=True)
        for file, document in documents.items():
            body = {"name": file, **document}
            (directory / folder / f"{file}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    (directory / "pack.yaml").write_text(yaml.safe_dump({"name": name}))
    return directory


def load(engine: Engine, directory: Path) -> str:
    with db.unit_of_work(engine) as session:
        packs.load(session, directory)
    return directory.name


def next_fire_at(engine: Engine, ref: str) -> datetime:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT next_fire_at FROM schedules WHERE ref = :r"), {"r": ref}
        ).scalar_one()


def fire(engine: Engine, settings: config.Settings, now: datetime) -> schedules.Fired:
    with db.unit_of_work(engine) as session:
        return schedules.fire_due(session, settings, now=now)


def rows(engine: Engine, statement: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(statement), params).all())


def fired(engine: Engine, ref: str) -> list[Any]:
    """Each fired tick of ``ref`` with its event, enforcement and execution, in tick order."""
    return rows(
        engine,
        """SELECT f.fire_at, f.event_id, e.trigger, e.payload, e.processed_at,
                  n.status, n.reason, n.execution_id, x.status AS execution_status
           FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id
           JOIN events e ON e.id = f.event_id
           LEFT JOIN enforcements n ON n.event_id = e.id AND n.rule_ref = s.ref
           LEFT JOIN executions x ON x.id = n.execution_id
           WHERE s.ref = :ref ORDER BY f.fire_at""",
        ref=ref,
    )


def _beat(
    engine: Engine,
    settings: config.Settings,
    now: datetime,
    barrier: threading.Barrier,
    errors: list[BaseException],
) -> None:
    try:
        barrier.wait(timeout=10)
        fire(engine, settings, now)
    except BaseException as error:  # asserted in the test's thread
        errors.append(error)


def test_each_tick_fires_once_however_many_beats_fire_at_once(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given a schedule every second and two beats that look at the same instants
    pack = load(engine, write_pack(tmp_path, {"tick": {"every_s": 1, "action": "x.a"}}, name="x"))
    ref, start = f"{pack}.tick", next_fire_at(engine, f"{pack}.tick")
    for k in range(10):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []
        now = start + k * S + 0.2 * S
        threads = [
            threading.Thread(target=_beat, args=(engine, settings, now, barrier, errors))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
    # Then each tick fired once: one event, one enforcement and one execution each
    found = fired(engine, ref)
    assert [f.fire_at for f in found] == [start + k * S for k in range(10)]
    assert all(f.trigger == "usher.schedule" and f.processed_at is not None for f in found)
    assert [f.payload for f in found] == [schedules.payload(ref, f.fire_at) for f in found]
    assert [f.status for f in found] == ["executed"] * 10
    assert len({f.execution_id for f in found}) == 10
    # And a tick fired already fires nothing again, even when a beat is told it is due
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE schedules SET next_fire_at = :t WHERE ref = :r"), {"t": start, "r": ref}
        )
    again = fire(engine, settings, start + 9.2 * S)
    assert again.taken == 1 and again.fires == [] and len(fired(engine, ref)) == 10
    assert rows(engine, "SELECT count(*) FROM events")[0][0] == 10


def test_a_busy_line_makes_ticks_wait_in_order_and_a_full_one_rejects_them(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given a line of one with room for one waiting, and a schedule every 10 s
    action = {"runner": "noop", "policy": {"concurrency": 1, "max_queue_length": 1}}
    schedule = {"every_s": 10, "action": "y.a", "parameters": {"at": "{{ schedule.fire_at }}"}}
    pack = load(engine, write_pack(tmp_path, {"ten": schedule}, {"a": action}, name="y"))
    ref, start = f"{pack}.ten", next_fire_at(engine, f"{pack}.ten")
    # When three ticks fire, no worker taking any
    grants = [fire(engine, settings, start + k * 10 * S).grants for k in range(3)]
    # Then the first holds the slot, the second waits, the third is refused with the reason
    found = fired(engine, ref)
    assert [len(g) for g in grants] == [1, 0, 0]
    assert [f.execution_status for f in found] == ["scheduled", "queued", None]
    assert [f.status for f in found] == ["executed", "executed", "rejected"]
    assert found[2].reason.startswith("QueueFull: the line of y.a is full (1 waiting)")
    params = rows(engine, "SELECT parameters FROM executions ORDER BY seq")
    assert [p[0] for p in params] == [{"at": f.payload["fire_at"]} for f in found[:2]]
    ids = invariants.queue_ids(engine, "y.a")
    assert invariants.fifo_violations(engine, ids) == 0 and invariants.max_active(engine, ids) == 1
    assert invariants.counter_mismatches(engine) == []


def test_an_execution_a_schedule_started_shows_the_schedule_and_its_tick(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given an execution a schedule's tick made, and one a request made
    pack = load(engine, write_pack(tmp_path, {"every": {"every_s": 5, "action": "z.a"}}, name="z"))
    fire(engine, settings, next_fire_at(engine, f"{pack}.every"))
    (tick,) = fired(engine, f"{pack}.every")
    with db.unit_of_work(engine) as session:
        requested = admission.enqueue(session, settings, "z.a", {}).execution_id
    # Then the first names its schedule, the tick and its event; the other none of them
    with db.unit_of_work(engine) as session:
        shown = queries.execution(session, tick.execution_id)
        plain = queries.execution(session, requested)
    assert (shown["schedule"], shown["rule"], shown["event_id"]) == (
        f"{pack}.every",
        f"{pack}.every",
        tick.event_id,
    )
    assert shown["fire_at"] == tick.payload["fire_at"]
    assert [plain[k] for k in ("schedule", "fire_at", "rule", "event_id")] == [None] * 4


def test_rules_on_a_schedules_event_act_in_the_same_transaction(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given an action schedule with a rule on usher.schedule, and a trigger schedule with a
    # rule on its trigger
    rules = {
        "also": {
            "trigger": "usher.schedule",
            "criteria": {"payload.schedule": {"eq": "z.run"}},
            "action": "z.a",
            "parameters": {"tick": "{{ event.payload.fire_at }}"},
        },
        "on_tock": {"trigger": "z.tock", "action": "z.a"},
    }
    plan = {
        "run": {"cron": "*/5 * * * *", "action": "z.a"},
        "tock": {"cron": "*/5 * * * *", "trigger": "z.tock"},
    }
    load(engine, write_pack(tmp_path, plan, rules=rules, name="z"))
    # When their tick fires
    result = fire(engine, settings, next_fire_at(engine, "z.run") + S)
    # Then each event was processed there and then: the schedule's own enforcement, the rules'
    assert sorted((f.schedule, f.enforcement is not None) for f in result.fires) == [
        ("z.run", True),
        ("z.tock", False),
    ]
    enforced = rows(
        engine,
        """SELECT e.trigger, n.rule_ref, n.rule_id IS NULL AS no_rule, n.status
           FROM enforcements n JOIN events e ON e.id = n.event_id ORDER BY n.rule_ref""",
    )
    assert [tuple(r) for r in enforced] == [
        ("usher.schedule", "z.also", False, "executed"),
        ("z.tock", "z.on_tock", False, "executed"),
        ("usher.schedule", "z.run", True, "executed"),
    ]
    assert rows(engine, "SELECT count(*) FROM events WHERE processed_at IS NULL")[0][0] == 0
    assert len(result.grants) == 3


@pytest.mark.parametrize(("missed", "late_fired"), [("skip", 0), ("run_once", 1)])
def test_ticks_missed_by_a_downtime_are_skipped_or_the_latest_runs_once(
    engine: Engine, settings: config.Settings, tmp_path: Path, missed: str, late_fired: int
) -> None:
    schedule = {"every_s": 1, "action": "m.a", "missed": missed}
    pack = load(engine, write_pack(tmp_path, {"s": schedule}, name="m"))
    start = next_fire_at(engine, f"{pack}.s")
    # When no beat looked for 20 ticks (the grace is 5 s)
    result = fire(engine, settings, start + 20.5 * S)
    # Then the ticks within the grace fire, and of the late ones none or the latest
    ticks = [f.fire_at for f in fired(engine, f"{pack}.s")]
    on_time = [start + k * S for k in range(16, 21)]
    assert ticks == [start + 15 * S] * late_fired + on_time
    assert result.skipped == 16 - late_fired
    assert next_fire_at(engine, f"{pack}.s") == start + 21 * S


def test_a_reload_keeps_the_next_tick_unless_the_timing_changed_and_drops_gone_schedules(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    directory = write_pack(tmp_path, {"s": {"every_s": 60, "trigger": "t"}}, name="r")
    load(engine, directory)
    first = next_fire_at(engine, "r.s")
    fire(engine, settings, first + S)
    assert next_fire_at(engine, "r.s") == first + 60 * S
    # Loaded again unchanged: the next tick stays (not recomputed from the load's now)
    load(engine, directory)
    assert next_fire_at(engine, "r.s") == first + 60 * S
    # Another timing: recomputed
    write_pack(tmp_path, {"s": {"every_s": 3600, "trigger": "t"}}, name="r")
    load(engine, directory)
    assert next_fire_at(engine, "r.s").timestamp() % 3600 == 0
    # Its file gone: the schedule and its fires are gone, its event stays
    (directory / "schedules" / "s.yaml").unlink()
    load(engine, directory)
    assert rows(engine, "SELECT count(*) FROM schedules")[0][0] == 0
    assert rows(engine, "SELECT count(*) FROM schedule_fires")[0][0] == 0
    assert rows(engine, "SELECT count(*) FROM events")[0][0] == 1


def test_a_paused_schedule_fires_nothing_and_resumes_from_the_next_tick(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    load(engine, write_pack(tmp_path, {"s": {"every_s": 1, "trigger": "t"}}, name="q"))
    start = next_fire_at(engine, "q.s")
    with db.unit_of_work(engine) as session:
        assert schedules.set_paused(session, "q.s", True)["paused"] is True
    assert fire(engine, settings, start + 3 * S).taken == 0
    # When it resumes an hour of ticks later
    with engine.begin() as conn:
        conn.execute(text("UPDATE schedules SET next_fire_at = next_fire_at - interval '1 hour'"))
        before = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    with db.unit_of_work(engine) as session:
        resumed = schedules.set_paused(session, "q.s", False)
    # Then it goes on from the next tick after now: the paused ticks were not missed
    assert resumed["paused"] is False
    assert datetime.fromisoformat(resumed["next_fire_at"]) > before
    assert fired(engine, "q.s") == []
    with db.unit_of_work(engine) as session, pytest.raises(NotFound, match="no schedule named"):
        schedules.set_paused(session, "q.nope", True)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (
            {"cron": "0 25 * * *", "trigger": "t"},
            r"s\.yaml:2: cron: cron '0 25 \* \* \*': Bad hour",
        ),
        (
            {"every_s": 5, "trigger": "t", "timezon": "UTC"},
            r"s\.yaml:4: timezon: unknown key \(did you mean timezone\?\)",
        ),
        (
            {"every_s": 5, "action": "e.bakup"},
            r"s\.yaml:3: action: no action e\.bakup in these packs or loaded "
            r"\(did you mean e\.backup\?\)",
        ),
    ],
)
def test_a_bad_schedule_stops_the_load_with_its_file_and_line_and_nothing_is_applied(
    engine: Engine, tmp_path: Path, schedule: dict[str, Any], message: str
) -> None:
    directory = write_pack(tmp_path, {"s": schedule}, {"backup": {"runner": "noop"}}, name="e")
    with pytest.raises(InvalidPack, match=message):
        load(engine, directory)
    assert rows(engine, "SELECT count(*) FROM packs")[0][0] == 0
