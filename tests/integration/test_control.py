"""Live control of a line (pause, resume, limits) and the ETA of waiting executions."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

import web
from app import config, db
from app.errors import InvalidRequest
from policies import admission, control, eta, intake, lines
from tests.support import invariants, packs
from tests.support.flow import WaitingOnALock, status, submit, wait_final, wait_until
from tests.support.workers import Pool

pytestmark = pytest.mark.timeout(180)


def _scheduled(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT seq FROM executions WHERE status = 'scheduled' ORDER BY seq")
            ).scalars()
        )


def _finish(engine: Engine, settings: config.Settings, seq: int) -> list[lines.Grant]:
    with engine.connect() as conn:
        execution_id = conn.execute(
            text("SELECT id FROM executions WHERE seq = :s"), {"s": seq}
        ).scalar_one()
    with db.unit_of_work(engine) as session:
        admission.claim(session, execution_id, 1, "w/1", 15)
    with db.unit_of_work(engine) as session:
        return admission.release(
            session, settings, admission.Ended(execution_id, 1, "succeeded")
        ).grants


def test_a_paused_line_grants_nothing_and_resumes_in_order(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref = (
        packs.load(
            engine, tmp_path, [{"name": "p", "runner": "noop", "policy": {"concurrency": 2}}]
        )
        + ".p"
    )
    submit(engine, settings, None, ref, [{}])  # seq 1 holds a slot
    with db.unit_of_work(engine) as session:
        assert control.set_paused(session, settings, ref, True) == []
    submit(engine, settings, None, ref, [{}] * 4)
    assert _scheduled(engine) == [1]  # a free slot, but the line is paused
    assert _finish(engine, settings, 1) == []  # a release grants nothing while paused
    with db.unit_of_work(engine) as session:
        grants = control.set_paused(session, settings, ref, False)
    assert len(grants) == 2 and _scheduled(engine) == [2, 3]
    assert invariants.counter_mismatches(engine) == []
    assert invariants.fifo_violations(engine, invariants.queue_ids(engine, ref)) == 0


def test_raising_a_limit_grants_at_once_and_lowering_it_drains_first(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref = (
        packs.load(
            engine, tmp_path, [{"name": "l", "runner": "noop", "policy": {"concurrency": 1}}]
        )
        + ".l"
    )
    submit(engine, settings, None, ref, [{}] * 6)
    assert _scheduled(engine) == [1]
    with db.unit_of_work(engine) as session:
        grants = control.update_policy(session, settings, ref, {"concurrency": 3})
    assert len(grants) == 2 and _scheduled(engine) == [1, 2, 3]
    with db.unit_of_work(engine) as session:
        assert control.update_policy(session, settings, ref, {"concurrency": 1}) == []
    # Three hold slots against a limit of one: releases grant nothing until under it
    assert _finish(engine, settings, 1) == []
    assert _finish(engine, settings, 2) == []
    assert [g.execution_id for g in _finish(engine, settings, 3)] != []
    assert _scheduled(engine) == [4]
    assert invariants.counter_mismatches(engine) == []
    with pytest.raises(InvalidRequest), db.unit_of_work(engine) as session:
        control.update_policy(session, settings, ref, {"concurrency": 0})
    with pytest.raises(InvalidRequest), db.unit_of_work(engine) as session:
        control.update_policy(session, settings, ref, {"partition_by": ["x"]})


@pytest.mark.parametrize("change", ["limit", "resume"])
def test_a_live_change_and_an_enqueue_into_the_same_line_do_not_deadlock(
    engine: Engine, settings: config.Settings, tmp_path: Path, change: str
) -> None:
    ref = (
        packs.load(
            engine, tmp_path, [{"name": "d", "runner": "noop", "policy": {"concurrency": 1}}]
        )
        + ".d"
    )
    submit(engine, settings, None, ref, [{}] * 2)
    if change == "resume":
        with db.unit_of_work(engine) as session:
            control.set_paused(session, settings, ref, True)
    queue_id = invariants.queue_ids(engine, ref)[0]

    def live_change() -> None:
        with db.unit_of_work(engine) as session:
            if change == "limit":
                control.update_policy(session, settings, ref, {"concurrency": 2})
            else:
                control.set_paused(session, settings, ref, False)

    # Given an enqueue that holds the line (it has taken its seq, not yet inserted its row)
    with db.unit_of_work(engine) as session:
        lines.lock_line(session, settings, queue_id)
        # When a live change of the action locks the action, then waits for the line
        other = WaitingOnALock(engine, live_change)
        # Then the enqueue's insert (its foreign key locks the action row) still goes through
        admission.enqueue(session, settings, ref, {})
    assert other.finished() == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM executions")).scalar_one() == 3
    assert invariants.counter_mismatches(engine) == []


def test_a_live_change_and_a_batch_over_two_partitions_do_not_deadlock(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    policy = {"concurrency": 1, "partition_by": ["k"]}
    ref = packs.load(engine, tmp_path, [{"name": "pd", "runner": "noop", "policy": policy}])
    ref += ".pd"
    # Line "b" is made first, so it has the lower id; a batch locks "a" before "b"
    submit(engine, settings, None, ref, [{"k": "b"}, {"k": "a"}])
    with engine.connect() as conn:
        line_a = conn.execute(
            text("SELECT id FROM queues WHERE partition_key = 'k=a'")
        ).scalar_one()

    def raise_limit() -> None:
        with db.unit_of_work(engine) as session:
            control.update_policy(session, settings, ref, {"concurrency": 2})

    # Given a batch that has locked line "a" and is about to lock line "b"
    with db.unit_of_work(engine) as session:
        lines.lock_line(session, settings, line_a)
        # When a limit change re-admits the action's lines while the batch holds "a"
        other = WaitingOnALock(engine, raise_limit)
        # Then the batch still gets line "b": the change waits on "a" and holds nothing else
        requests = [{"action": ref, "parameters": {"k": k}} for k in ("a", "b")]
        assert intake.enqueue_many(session, settings, requests).accepted == 2
    assert other.finished() == []
    assert invariants.counter_mismatches(engine) == []


def test_pause_resume_and_limits_over_the_api(
    engine: Engine, db_url: str, broker_url: str | None, tmp_path: Path, celery_app: Any
) -> None:
    settings = config.load(
        database_url=db_url,
        broker_url=broker_url,
        home=tmp_path / "h",
        api_token="control-admin-token",
    )
    client = web.create_app(settings, celery_app).test_client()
    auth = {"Authorization": "Bearer control-admin-token"}
    ref = (
        packs.load(
            engine, tmp_path, [{"name": "a", "runner": "noop", "policy": {"concurrency": 1}}]
        )
        + ".a"
    )
    assert client.post(f"/api/v1/actions/{ref}/pause", headers=auth).get_json()["paused"]
    assert client.get(f"/api/v1/actions/{ref}", headers=auth).get_json()["paused"] is True
    submit(engine, settings, None, ref, [{}] * 3)
    body = client.patch(f"/api/v1/actions/{ref}/policy", json={"concurrency": 2}, headers=auth)
    assert body.status_code == 200 and body.get_json()["max_concurrent"] == 2
    assert body.get_json()["active_count"] == 0  # still paused
    resumed = client.post(f"/api/v1/actions/{ref}/resume", headers=auth).get_json()
    assert resumed["active_count"] == 2 and resumed["queue_length"] == 1
    bad = client.patch(f"/api/v1/actions/{ref}/policy", json={"concurrency": -1}, headers=auth)
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_request"
    assert client.post("/api/v1/actions/no.such/pause", headers=auth).status_code == 404


def test_the_eta_of_a_waiting_execution_under_a_steady_load(
    engine: Engine,
    settings: config.Settings,
    celery_app: Any,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    # Given a steady line: 0.3 s runs, two at a time
    ref = (
        packs.load(
            engine,
            tmp_path,
            [
                {
                    "name": "steady",
                    "runner": "sleep",
                    "policy": {"concurrency": 2},
                    "parameters": {"type": "object", "properties": {"seconds": {"type": "number"}}},
                }
            ],
        )
        + ".steady"
    )
    worker_pool.start(concurrency=2)
    ids = submit(engine, settings, celery_app, ref, [{"seconds": 0.3}] * 40)
    wait_until(
        lambda: sum(status(engine, i) == "succeeded" for i in ids) >= 8,
        60,
        what="a pace to build up",
    )
    # When the last one's ETA is asked
    with db.unit_of_work(engine) as session:
        guess = eta.estimate(session, ids[-1])
    asked = datetime.now().astimezone()
    assert guess["position"] and guess["eta"] and guess["pace_per_s"]
    wait_final(engine, [ref], timeout=120)
    # Then it started within 35 % of the predicted wait
    with engine.connect() as conn:
        started = conn.execute(
            text("SELECT started_at FROM executions WHERE id = :i"), {"i": ids[-1]}
        ).scalar_one()
    predicted = (datetime.fromisoformat(guess["eta"]) - asked).total_seconds()
    actual = (started - asked).total_seconds()
    print(f"ETA error: predicted {predicted:.2f}s, actual {actual:.2f}s")
    assert abs(actual - predicted) <= 0.35 * max(actual, 1.0), (predicted, actual)


def test_the_eta_of_a_burst_after_an_idle_spell_is_not_pessimistic(
    engine: Engine,
    settings: config.Settings,
    celery_app: Any,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    # Given a line of 1 s runs, two at a time, that last ran four minutes ago
    sleeper = {
        "name": "burst",
        "runner": "sleep",
        "policy": {"concurrency": 2},
        "parameters": {"type": "object", "properties": {"seconds": {"type": "number"}}},
    }
    ref = packs.load(engine, tmp_path, [sleeper]) + ".burst"
    worker_pool.start(concurrency=2)
    submit(engine, settings, celery_app, ref, [{"seconds": 1.0}])
    wait_final(engine, [ref], timeout=60)
    with engine.begin() as conn:
        for table in ("attempts", "execution_state"):
            conn.execute(
                text(
                    f"UPDATE {table} SET started_at = started_at - interval '4 minutes', "
                    "finished_at = finished_at - interval '4 minutes'"
                )
            )
    # When ten arrive at once and the last one's ETA is asked while the first two run
    ids = submit(engine, settings, celery_app, ref, [{"seconds": 1.0}] * 10)
    wait_until(lambda: status(engine, ids[1]) == "running", 30, what="the first two to run")
    with db.unit_of_work(engine) as session:
        guess = eta.estimate(session, ids[-1], settings)
    asked = datetime.now().astimezone()
    assert guess["position"] == 8 and guess["eta"] and not guess["paused"]
    wait_final(engine, [ref], timeout=120)
    # Then it started within 35 % of the predicted wait (the recent pace guessed ~6x too long)
    with engine.connect() as conn:
        started = conn.execute(
            text("SELECT started_at FROM executions WHERE id = :i"), {"i": ids[-1]}
        ).scalar_one()
    predicted = (datetime.fromisoformat(guess["eta"]) - asked).total_seconds()
    actual = (started - asked).total_seconds()
    print(f"ETA error: predicted {predicted:.2f}s, actual {actual:.2f}s")
    assert abs(actual - predicted) <= 0.35 * max(actual, 1.0), (predicted, actual)


def test_a_paused_line_has_no_eta(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref = packs.load(engine, tmp_path, [{"name": "p", "runner": "noop"}]) + ".p"
    with db.unit_of_work(engine) as session:
        control.set_paused(session, settings, ref, True)
    (waiting,) = submit(engine, settings, None, ref, [{}])
    with db.unit_of_work(engine) as session:
        guess = eta.estimate(session, waiting, settings)
    assert guess == {"position": 1, "eta": None, "pace_per_s": None, "paused": True}


def _grant_times(engine: Engine, ref: str) -> list[datetime]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                text(
                    "SELECT t.scheduled_at FROM attempts t "
                    "JOIN executions e ON e.id = t.execution_id "
                    "JOIN actions a ON a.id = e.action_id WHERE a.ref = :r"
                ),
                {"r": ref},
            ).scalars()
        )


def _most_in_any_window(times: list[datetime], per_s: float) -> int:
    """The most grants in any half-open window [t, t + per_s)."""
    import bisect

    seconds = [t.timestamp() for t in times]
    return max(bisect.bisect_left(seconds, s + per_s) - i for i, s in enumerate(seconds))


def test_rate_limits_hold_across_two_worker_hosts_and_keep_order(
    engine: Engine,
    settings: config.Settings,
    celery_app: Any,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    # Given a line allowed 4 grants a second and 10 in any 3 seconds, and two worker hosts
    ref = (
        packs.load(
            engine,
            tmp_path,
            [
                {
                    "name": "limited",
                    "runner": "noop",
                    "policy": {
                        "concurrency": 10,
                        "rate_limit": [{"count": 4, "per_s": 1}, {"count": 10, "per_s": 3}],
                    },
                }
            ],
        )
        + ".limited"
    )
    worker_pool.start(concurrency=2)
    worker_pool.start(concurrency=2)
    # When 24 executions arrive at once
    submit(engine, settings, celery_app, ref, [{}] * 24)
    wait_final(engine, [ref], timeout=90)
    # Then no window ever saw more grants than allowed, and grants kept seq order
    times = _grant_times(engine, ref)
    assert len(times) == 24
    assert _most_in_any_window(times, 1.0) <= 4
    assert _most_in_any_window(times, 3.0) <= 10
    invariants.check_line(engine, ref, limit=10)
    # and the line was not starved: 24 grants at 10 per 3 s take about 6 s, not much more
    assert (times[-1] - times[0]).total_seconds() < 15


def test_a_pack_reload_with_a_higher_limit_grants_at_once(
    engine: Engine, settings: config.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from app import cli

    name = packs.load(
        engine, tmp_path, [{"name": "grow", "runner": "noop", "policy": {"concurrency": 1}}]
    )
    submit(engine, settings, None, f"{name}.grow", [{}] * 5)
    (tmp_path / name / "actions" / "grow.yaml").write_text(
        "name: grow\nrunner: noop\npolicy: {concurrency: 4}\n"
    )
    monkeypatch.setenv("USHER_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("USHER_HOME", str(settings.home))
    if settings.broker_url:
        monkeypatch.setenv("USHER_BROKER_URL", settings.broker_url)
    done = CliRunner().invoke(cli.main, ["packs", "load", str(tmp_path / name)])
    assert done.exit_code == 0, done.output
    assert _scheduled(engine) == [1, 2, 3, 4]
    assert invariants.counter_mismatches(engine) == []


def test_run_wait_prints_plain_lines_when_piped(
    engine: Engine, settings: config.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from tests.support.workers import REPO, environment

    name = packs.load(
        engine, tmp_path, [{"name": "w", "runner": "noop", "policy": {"concurrency": 1}}]
    )
    submit(engine, settings, None, f"{name}.w", [{}])  # holds the only slot: ours waits
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", f"{name}.w", "--wait", "--timeout", "3"],
        env=environment(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2  # gave up waiting: no worker runs here
    assert "queued, position 1" in done.stdout
    assert done.stdout.count("position 1") == 1  # one line per change, not a line per poll
    assert "still queued; gave up" in done.stderr


def test_cli_pause_resume_and_set(
    engine: Engine, settings: config.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from app import cli

    ref = (
        packs.load(
            engine, tmp_path, [{"name": "c", "runner": "noop", "policy": {"concurrency": 1}}]
        )
        + ".c"
    )
    monkeypatch.setenv("USHER_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("USHER_HOME", str(settings.home))
    if settings.broker_url:
        monkeypatch.setenv("USHER_BROKER_URL", settings.broker_url)
    runner = CliRunner()
    assert runner.invoke(cli.main, ["actions", "pause", ref]).exit_code == 0
    submit(engine, settings, None, ref, [{}] * 3)
    assert _scheduled(engine) == []
    raised = runner.invoke(cli.main, ["actions", "set", ref, "--concurrency", "2"])
    assert raised.exit_code == 0 and "0 granted now" in raised.output  # still paused
    assert f"{ref}: paused" in raised.output
    # a paused line says so in every listing
    listed = runner.invoke(cli.main, ["queues", "--json"])
    assert [(r["action_ref"], r["paused"]) for r in json.loads(listed.output)] == [(ref, True)]
    table = runner.invoke(cli.main, ["queues"]).output
    assert "paused" in next(line for line in table.splitlines() if ref in line)
    resumed = runner.invoke(cli.main, ["actions", "resume", ref])
    assert resumed.exit_code == 0 and "2 granted now" in resumed.output
    assert "paused" not in resumed.output
    listed = runner.invoke(cli.main, ["queues", "--json"])
    assert [r["paused"] for r in json.loads(listed.output)] == [False]
    assert _scheduled(engine) == [1, 2]
    assert invariants.counter_mismatches(engine) == []


def test_an_unknown_action_names_the_close_ones(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    from app.errors import UnknownAction

    name = packs.load(engine, tmp_path, [{"name": "hello", "runner": "noop"}])
    with pytest.raises(
        UnknownAction, match=rf"no action named '{name}.helo'; did you mean {name}.hello\?"
    ):
        with db.unit_of_work(engine) as session:
            admission.enqueue(session, settings, f"{name}.helo", {})
    with pytest.raises(UnknownAction, match=r"no action named 'zzz'; see `usher packs load`"):
        with db.unit_of_work(engine) as session:
            control.set_paused(session, settings, "zzz", True)
