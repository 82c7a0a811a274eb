"""Two installations on one broker vhost (CONTRACT "One installation per broker namespace,
enforced"): the same pack, so the same action refs and triggers, in two Postgres databases,
with real workers of each on the run's one vhost or Redis database.

- 200 executions requested in each at once: every one runs on its own installation's
  workers, and all of them end with no sweeper running (no beat here): none was taken by
  the other installation and dropped, none waited to be republished;
- the same trigger's events in both: each processed in its own database;
- a message of one installation pushed into the other's queue is not run there and not
  dropped: its worker sends it on, and it runs where it belongs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app import celery as usher_celery
from app import config, db
from policies import events, intake
from tests.conftest import fresh_database
from tests.support import invariants, packs
from tests.support.flow import status, wait_until
from tests.support.workers import Pool

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240), pytest.mark.processes]
N = 200
ACTIONS = [
    {"name": "job", "runner": "sleep", "policy": {"concurrency": 3}},
    {"name": "other", "runner": "noop", "policy": {"concurrency": 2}},
]
RULE = "name: on_tick\ntrigger: shared.tick\naction: twin.other\n"


@pytest.fixture
def second(
    pg_admin_url: str, template_db: str, broker_url: str | None, tmp_path: Path
) -> Iterator[config.Settings]:
    with fresh_database(pg_admin_url, template_db) as url:
        yield config.load(
            database_url=url, broker_url=broker_url, home=tmp_path / "home-b", lease_s=6
        )


def _deploy(settings: config.Settings, folder: Path) -> Engine:
    engine = db.engine_for(settings.database_url or "")
    root = packs.write_folder(folder / "twin", {"name": "twin"}, ACTIONS)
    (root / "rules").mkdir()
    (root / "rules" / "on_tick.yaml").write_text(RULE)
    packs.load_folder(engine, folder)
    return engine


def _submit(engine: Engine, settings: config.Settings, app: Any) -> None:
    requests = [{"action": "twin.job", "parameters": {"seconds": 0.01}}] * N
    with db.unit_of_work(engine) as session:
        taken = intake.enqueue_many(session, settings, requests)
        event_ids = events.store_many(session, [{"trigger": "shared.tick"}] * 5)
    usher_celery.after_intake(app, taken)
    usher_celery.send_events(app, event_ids)


def _workers(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT DISTINCT worker FROM attempts")).scalars()
        return {str(w).split("@", 1)[0] for w in found}


def _done(engine: Engine) -> bool:
    with engine.connect() as conn:
        left = conn.execute(
            text("""SELECT (SELECT count(*) FROM executions WHERE status <> 'succeeded')
                         + (SELECT count(*) FROM events WHERE processed_at IS NULL)""")
        ).scalar_one()
    return int(left) == 0


def _push(app: Any, queue: str, grant: Any) -> None:
    """Publish ``grant``'s message, with ``app``'s installation in its header, to ``queue``."""
    message = app.amqp.create_task_message(
        usher_celery.task_id(grant.execution_id, grant.attempt),
        usher_celery.EXECUTE,
        [grant.execution_id, grant.attempt],
        {},
    )
    message.headers[usher_celery.INSTALLATION] = usher_celery.installation(app)
    with app.producer_or_acquire() as producer:
        producer.publish(
            message.body,
            exchange="",
            routing_key=queue,
            headers=message.headers,
            serializer="json",
            **message.properties,
        )


def test_two_installations_on_one_vhost_run_only_their_own_work(
    settings: config.Settings, second: config.Settings, tmp_path: Path
) -> None:
    if settings.broker_url is None:
        pytest.skip("the filesystem broker keeps one folder per USHER_HOME: nothing is shared")
    assert settings.broker_url == second.broker_url  # one vhost (or Redis database)
    engines = [_deploy(settings, tmp_path / "a"), _deploy(second, tmp_path / "b")]
    apps = [usher_celery.create(settings), usher_celery.create(second)]
    ids = [usher_celery.installation(app) for app in apps]
    assert ids[0] != ids[1]
    pools = [Pool(settings, tmp_path / "logs-a"), Pool(second, tmp_path / "logs-b")]
    try:
        for pool, tag in zip(pools, ("a", "b"), strict=True):
            for n in range(2):
                pool.start(concurrency=2, name=f"inst{tag}{n}")
        # When each installation gets 200 executions and 5 events of the same refs at once
        for engine, s, app in zip(engines, (settings, second), apps, strict=True):
            _submit(engine, s, app)
        # Then every one ends, with no sweeper to republish anything
        wait_until(lambda: all(_done(e) for e in engines), 120, what="both to finish")
        # And each installation's executions ran on its own workers only, each once
        assert set() < _workers(engines[0]) <= {"insta0", "insta1"}
        assert set() < _workers(engines[1]) <= {"instb0", "instb1"}
        for engine in engines:
            with engine.connect() as conn:
                twice = conn.execute(
                    text("SELECT execution_id FROM attempts GROUP BY 1 HAVING count(*) > 1")
                ).all()
            assert twice == []
            assert invariants.counter_mismatches(engine) == []
            assert invariants.max_active(engine, invariants.queue_ids(engine, "twin.job")) <= 3
        # And a message of B pushed into A's queue by hand (as a shovel might) does not run
        # on A's workers, whose database has an execution of that id too: it is sent on
        with db.unit_of_work(engines[0]) as session:
            mine = intake.enqueue_many(session, settings, [{"action": "twin.other"}])
        usher_celery.after_intake(apps[0], mine)
        with db.unit_of_work(engines[1]) as session:
            [grant] = list(intake.enqueue_many(session, second, [{"action": "twin.other"}]).grants)
        [own] = list(mine.grants)
        assert own.execution_id == grant.execution_id  # the same id in both databases
        wait_until(lambda: status(engines[0], own.execution_id) == "succeeded", 60, what="A's")
        _push(apps[1], usher_celery.queue_name(apps[0], "twin.other"), grant)
        wait_until(
            lambda: status(engines[1], grant.execution_id) == "succeeded", 60, what="B to run it"
        )
        with engines[1].connect() as conn:
            worker = conn.execute(
                text("SELECT worker FROM attempts WHERE execution_id = :i"),
                {"i": grant.execution_id},
            ).scalar_one()
        assert worker.startswith("instb")
        sent_on = f"sent on to {usher_celery.queue_name(apps[1], 'twin.other')}"
        assert any(sent_on in w.text() for w in pools[0].workers)
        with engines[0].connect() as conn:
            assert (
                conn.execute(
                    text("SELECT count(*) FROM attempts WHERE execution_id = :i"),
                    {"i": grant.execution_id},
                ).scalar_one()
                == 1
            )
    finally:
        for pool in pools:
            pool.stop_all()
        for app in apps:
            app.close()
