"""The workers' hot path against real services: ``db.Hot`` and ``app.celery.Publisher``."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kombu import Queue
from sqlalchemy import Engine, text

from app import celery as usher_celery
from app import config, db
from policies import admission, lines
from tests.support import packs
from tests.support.flow import submit

pytestmark = pytest.mark.timeout(120)


def _backend(connection: psycopg.Connection[Any]) -> int:
    row = connection.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_a_dropped_connection_is_replaced_and_the_claim_is_not_lost(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given a granted execution and a hot connection whose backend is then killed
    ref = packs.load(engine, tmp_path, [{"name": "job", "runner": "noop"}]) + ".job"
    (execution_id,) = submit(engine, settings, None, ref, [{}])
    hot = db.Hot(settings.database_url or "")
    try:
        before = hot.run(_backend)
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": before})
        # When the worker claims on it
        claimed = hot.run(lambda c: admission.claim(c, execution_id, 1, "w/1", 15))
        # Then the statement ran again on a new connection, and the claim holds
        assert claimed is not None and claimed.execution_id == execution_id
        assert hot.run(_backend) != before
        # and the same process claiming again (its reply lost) still gets it; another does not
        assert hot.run(lambda c: admission.claim(c, execution_id, 1, "w/1", 15)) is not None
        assert hot.run(lambda c: admission.claim(c, execution_id, 1, "w/2", 15)) is None
    finally:
        hot.close()


def test_an_error_that_is_not_a_dropped_connection_is_raised_once(
    settings: config.Settings,
) -> None:
    hot = db.Hot(settings.database_url or "")
    calls: list[int] = []

    def slow(connection: psycopg.Connection[Any]) -> None:
        calls.append(1)
        connection.execute("SET statement_timeout = 50")
        connection.execute("SELECT pg_sleep(1)")

    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            hot.run(slow)
        assert calls == [1]
    finally:
        hot.close()


def test_each_thread_has_its_own_connection_with_the_hot_settings(
    settings: config.Settings,
) -> None:
    hot = db.Hot(settings.database_url or "")
    seen: list[tuple[int, str, str]] = []

    def look() -> None:
        seen.append(
            hot.run(
                lambda c: (
                    _backend(c),
                    c.execute("SHOW synchronous_commit").fetchone()[0],  # type: ignore[index]
                    c.execute("SHOW statement_timeout").fetchone()[0],  # type: ignore[index]
                )
            )
        )

    try:
        look()
        other = threading.Thread(target=look)
        other.start()
        other.join()
        look()
    finally:
        hot.close()
    assert seen[0][0] == seen[2][0] != seen[1][0]
    assert {s[1:] for s in seen} == {("off", "30s")}
    durable = db.Hot(settings.database_url or "", durable=True)
    try:
        assert durable.run(lambda c: c.execute("SHOW synchronous_commit").fetchone()) == ("on",)
    finally:
        durable.close()


def _keepalive_of(connection: psycopg.Connection[Any]) -> dict[str, Any]:
    """The keepalive settings libpq was given, and for TCP what the socket itself holds."""
    given = connection.info.get_parameters()
    seen: dict[str, Any] = {k: given.get(k) for k in db.KEEPALIVES}
    if not connection.info.host.startswith("/"):  # a Unix socket has no TCP options
        with socket.socket(fileno=os.dup(connection.pgconn.socket)) as sock:
            seen["SO_KEEPALIVE"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            seen["TCP_KEEPIDLE"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            seen["TCP_USER_TIMEOUT"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
    return seen


def test_every_connection_gives_up_on_a_silent_peer_within_a_minute(
    settings: config.Settings,
) -> None:
    url = settings.database_url or ""
    hot = db.Hot(url)
    engine = db.make_engine(url, pool_size=1)
    try:
        seen = [hot.run(_keepalive_of)]
        with engine.connect() as conn:
            seen.append(_keepalive_of(conn.connection.driver_connection))  # type: ignore[arg-type]
    finally:
        hot.close()
        engine.dispose()
    for one in seen:
        assert {k: one[k] for k in db.KEEPALIVES} == db.KEEPALIVES
        if "SO_KEEPALIVE" in one:
            assert (one["SO_KEEPALIVE"], one["TCP_KEEPIDLE"], one["TCP_USER_TIMEOUT"]) == (
                1,
                30,
                60000,
            )
    # A URL that sets one keeps its own value; one that turns keepalives off gets none
    joiner = "&" if "?" in url else "?"
    for query, expected in (("keepalives_idle=45", "45"), ("keepalives=0", None)):
        hot = db.Hot(f"{url}{joiner}{query}")
        engine = db.make_engine(f"{url}{joiner}{query}", pool_size=1)
        try:
            with engine.connect() as conn:
                driver = conn.connection.driver_connection
                assert _keepalive_of(driver)["keepalives_idle"] == expected  # type: ignore[arg-type]
            assert hot.run(_keepalive_of)["keepalives_idle"] == expected
        finally:
            hot.close()
            engine.dispose()


def test_the_hot_sql_also_runs_inside_a_session_transaction(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref = packs.load(engine, tmp_path, [{"name": "job", "runner": "noop"}]) + ".job"
    (execution_id,) = submit(engine, settings, None, ref, [{}])
    # A claim in a transaction that rolls back changes nothing
    with pytest.raises(RuntimeError), db.unit_of_work(engine) as session:
        assert admission.claim(session, execution_id, 1, "w/1", 15) is not None
        raise RuntimeError("roll back")
    query = text("SELECT status FROM executions WHERE id = :i")
    with engine.connect() as conn:
        assert conn.execute(query, {"i": execution_id}).scalar_one() == "scheduled"


@pytest.mark.broker
def test_the_publisher_declares_a_queue_no_worker_consumes_yet(celery_app: Any) -> None:
    # Given an action queue that no worker consumes (nobody declared it)
    ref = f"hot{uuid.uuid4().hex[:8]}.job"
    name = usher_celery.queue_name(celery_app, ref)
    grants = [
        lines.Grant(7, 1, ref, None),
        lines.Grant(8, 2, ref, 30),
    ]
    publisher = usher_celery.Publisher(celery_app)
    try:
        # When two grants are published on the long-lived producer
        assert usher_celery.publish(celery_app, grants, publisher) == 2
        assert publisher.declared(celery_app.amqp.queues[name])
        # Then both wait in the queue as Celery task messages for execute(id, attempt)
        with celery_app.connection_for_write() as conn:
            queue = Queue(name).bind(conn.default_channel)
            got = [queue.get(no_ack=True) for _ in grants]
            queue.delete()
    finally:
        publisher.close()
    assert all(m is not None for m in got)
    assert [m.decode()[0] for m in got] == [[7, 1], [8, 2]]
    headers = [m.headers for m in got]
    assert [h["task"] for h in headers] == [usher_celery.EXECUTE] * 2
    assert [h["id"] for h in headers] == ["usher-7-1", "usher-8-2"]
    assert [list(h["timelimit"]) for h in headers] == [
        [None, None],
        [30 + usher_celery.HARD_KILL_GRACE_S, 30],
    ]


@pytest.mark.broker
def test_after_its_connection_drops_the_publisher_declares_again(celery_app: Any) -> None:
    # Given a publisher that declared one queue, whose connection then drops
    refs = [f"hot{uuid.uuid4().hex[:8]}.job" for _ in range(2)]
    publisher = usher_celery.Publisher(celery_app)
    try:
        assert usher_celery.publish(celery_app, [lines.Grant(1, 1, refs[0], None)], publisher)
        publisher.connection.collect()  # the connection is gone, as after a broker restart
        # When it grants to a queue it never declared, and to the first one again
        grants = [lines.Grant(2, 1, refs[1], None), lines.Grant(3, 1, refs[0], None)]
        assert usher_celery.publish(celery_app, grants, publisher) == 2
        # Then every grant waits in its queue: none was dropped for lack of a queue
        with celery_app.connection_for_write() as conn:
            counts = []
            for ref in refs:
                queue = Queue(usher_celery.queue_name(celery_app, ref)).bind(conn.default_channel)
                counts.append(queue.queue_declare(passive=True).message_count)
                queue.delete()
    finally:
        publisher.close()
    assert counts == [2, 1]
