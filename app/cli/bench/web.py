"""``usher bench-web``: the dashboard, the API and /metrics at 1,000 actions and 1M executions.

Method: ``seed`` fills a scratch database in a few SQL statements (generate_series): packs,
actions (one busy action with a tenth of the history and a long waiting line, some
partitioned actions), their lines, executions in every state with their attempts, line
counters recounted from the rows, an hour of chart samples, events and enforcements; then
VACUUM ANALYZE, as autovacuum would. ``measure`` serves the real app with waitress on a free
local port, logs in like a browser and calls the API with a stored admin token, times each
endpoint sequentially over one keep-alive connection, then records every SQL statement one
request of each endpoint runs and shows its ``EXPLAIN (ANALYZE, BUFFERS)``.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, event, text

from app import config, db, tokens
from app.cli.bench import core as bench
from policies import recovery

BUSY_SHARE = 10  # every BUSY_SHARE-th execution belongs to the busy action
SEQ_SCANS = re.compile(r"Seq Scan on (executions|attempts)\b")
END = "-- end of transaction"  # where a recorded transaction ends

SEED = {
    "packs": """
        INSERT INTO packs (name, description, policy)
        SELECT format('pack%s', lpad(p::text, 2, '0')), 'bench-web pack', '{"concurrency": 4}'
        FROM generate_series(0, :packs - 1) p
    """,
    # Action 0 is the busy one; every 50th (from 5) is partitioned by host.
    "actions": """
        INSERT INTO actions (pack_id, ref, name, runner, policy, timeout_s)
        SELECT pk.id, pk.name || '.' || n.name, n.name,
               (ARRAY['noop', 'http', 'shell', 'python', 'sleep'])[i % 5 + 1],
               CASE WHEN i = 0 THEN '{"concurrency": 8}'::jsonb
                    WHEN i % 50 = 5 THEN '{"concurrency": 2, "partition_by": ["host"]}'::jsonb
                    WHEN i % 3 = 0 THEN jsonb_build_object('concurrency', i % 7 + 1)
                    ELSE '{}'::jsonb END,
               CASE WHEN i % 4 = 0 THEN 60 END
        FROM generate_series(0, :actions - 1) i
        CROSS JOIN LATERAL (SELECT format('action%s', lpad(i::text, 4, '0')) AS name) n
        JOIN packs pk ON pk.name = format('pack%s', lpad((i % :packs)::text, 2, '0'))
    """,
    "queues": """
        INSERT INTO queues (action_id, partition_key)
        SELECT a.id, CASE WHEN a.policy -> 'partition_by' IS NULL THEN '' ELSE 'host=db' || h END
        FROM actions a CROSS JOIN generate_series(1, 5) h
        WHERE h = 1 OR a.policy -> 'partition_by' IS NOT NULL
    """,
    # Every execution first finishes (ids, seq and enqueued_at grow together over a week);
    # the tail of each line is then turned into waiting, running and retrying work.
    "executions": """
        WITH lines AS (
            SELECT row_number() OVER (ORDER BY q.id) - 1 AS idx, q.id, q.action_id,
                   q.partition_key
            FROM queues q WHERE q.action_id <> :busy
        ), busy AS (
            SELECT id, action_id, partition_key FROM queues WHERE action_id = :busy
        ), src AS (
            SELECT g, random() AS r, random() AS r2, random() AS r3,
                   now() - make_interval(secs => (:n - g) * 604800.0 / :n) AS t,
                   CASE WHEN g % :share = 0 THEN -1
                        ELSE floor(random() * (SELECT count(*) FROM lines)) END AS idx
            FROM generate_series(1, :n) g
        ), placed AS (
            SELECT s.*, coalesce(l.id, b.id) AS queue_id,
                   coalesce(l.action_id, b.action_id) AS action_id,
                   coalesce(l.partition_key, b.partition_key) AS partition_key,
                   CASE WHEN s.r < 0.955 THEN 'succeeded' WHEN s.r < 0.975 THEN 'dead'
                        WHEN s.r < 0.99 THEN 'cancelled' ELSE 'expired' END AS status
            FROM src s LEFT JOIN lines l ON l.idx = s.idx LEFT JOIN busy b ON s.idx = -1
        ), timed AS (
            SELECT p.*, CASE WHEN status = 'dead' THEN 4
                             WHEN status = 'succeeded' AND r2 < 0.05 THEN 2 ELSE 1 END AS attempt
            FROM placed p
        )
        INSERT INTO executions (action_id, queue_id, seq, priority, status, parameters, attempt,
                                enqueued_at, queued_at, scheduled_at, published_at, started_at,
                                finished_at, worker, result, error)
        SELECT action_id, queue_id, row_number() OVER (PARTITION BY queue_id ORDER BY g), 0,
               status,
               jsonb_build_object('host', CASE WHEN partition_key = ''
                                               THEN 'db' || (g % 5 + 1)
                                               ELSE split_part(partition_key, '=', 2) END,
                                  'n', g),
               attempt, t, t + make_interval(secs => attempt - 1),
               ran.scheduled_at, ran.scheduled_at, ran.started_at,
               CASE WHEN ran.started_at IS NULL THEN t + interval '5 minutes'
                    ELSE ran.started_at + make_interval(secs => power(10, r3 * 4 - 2)) END,
               CASE WHEN ran.started_at IS NOT NULL THEN format('celery@bench%s/%s', g % 4, g % 8)
                    END,
               CASE WHEN status = 'succeeded' THEN '{"ok": true}'::jsonb END,
               CASE status WHEN 'dead' THEN 'RuntimeError: boom'
                           WHEN 'cancelled' THEN 'cancelled by request'
                           WHEN 'expired' THEN 'waited longer than queue_timeout_s' END
        FROM timed CROSS JOIN LATERAL (
            SELECT t + make_interval(secs => attempt - 1 + r2 * 2) AS scheduled_at,
                   t + make_interval(secs => attempt - 1 + r2 * 2 + 0.003) AS started_at
            WHERE status IN ('succeeded', 'dead')
            UNION ALL SELECT NULL, NULL WHERE status NOT IN ('succeeded', 'dead')
        ) ran
        ORDER BY g
    """,
    # The tail of each line (k = 1 is its newest execution) waits, runs, retries, or finished
    # in the last five minutes (the busy line at 20/s), for the charts and the pace.
    "tails": """
        WITH tail AS (
            SELECT q.id AS queue_id, q.action_id = :busy AS busy,
                   CASE WHEN q.action_id = :busy THEN :busy_queued
                        WHEN q.id % 5 = 0 THEN q.id % 37 ELSE 0 END AS queued,
                   CASE WHEN q.action_id = :busy THEN 8 ELSE q.id % 3 END AS active,
                   CASE WHEN q.action_id = :busy THEN 2 WHEN q.id % 10 = 0 THEN 1 ELSE 0 END
                       AS retrying,
                   CASE WHEN q.action_id = :busy THEN :busy_recent ELSE 3 END AS recent,
                   CASE WHEN q.action_id = :busy THEN 0.05 ELSE 20 END AS step,
                   CASE WHEN q.action_id = :busy THEN 0.05 ELSE 90 END AS recent_step
            FROM queues q
        ), picked AS (
            SELECT t.*, e.id, row_number() OVER (PARTITION BY t.queue_id ORDER BY e.seq DESC) AS k
            FROM tail t CROSS JOIN LATERAL (
                SELECT id, seq FROM executions x WHERE x.queue_id = t.queue_id
                ORDER BY seq DESC LIMIT t.queued + t.active + t.retrying + t.recent
            ) e
        ), shaped AS (
            SELECT id, k,
                   CASE WHEN k <= queued THEN 'queued'
                        WHEN k <= queued + active AND busy AND k > queued + active - 2
                            THEN 'scheduled'
                        WHEN k <= queued + active THEN 'running'
                        WHEN k <= queued + active + retrying THEN 'retrying'
                        ELSE 'succeeded' END AS status,
                   now() - make_interval(secs => k * step) AS t,
                   now() - make_interval(
                       secs => (k - queued - active - retrying) * recent_step) AS done
            FROM picked
        )
        UPDATE executions e SET
            status = s.status,
            priority = CASE WHEN s.status = 'queued' AND e.id % 10 = 0 THEN 5 ELSE 0 END,
            attempt = CASE WHEN s.status = 'retrying' THEN 2 ELSE 1 END,
            enqueued_at = s.t,
            queued_at = CASE WHEN s.status = 'retrying' THEN now() + interval '30 seconds'
                             ELSE s.t END,
            not_before = CASE WHEN s.status = 'retrying' THEN now() + interval '30 seconds' END,
            scheduled_at = CASE WHEN s.status IN ('scheduled', 'running') THEN s.t
                                WHEN s.status = 'succeeded' THEN s.done - interval '1 second'
                                END,
            published_at = CASE WHEN s.status IN ('scheduled', 'running') THEN s.t
                                WHEN s.status = 'succeeded' THEN s.done - interval '1 second'
                                END,
            started_at = CASE WHEN s.status = 'running' THEN s.t
                              WHEN s.status = 'succeeded' THEN s.done - interval '990 ms' END,
            lease_expires_at = CASE WHEN s.status = 'running'
                                    THEN now() + interval '15 seconds' END,
            worker = CASE WHEN s.status IN ('running', 'succeeded')
                          THEN format('celery@bench%s/%s', e.id % 4, e.id % 8) END,
            finished_at = CASE WHEN s.status = 'succeeded' THEN s.done END,
            result = CASE WHEN s.status = 'succeeded' THEN '{"ok": true}'::jsonb END,
            error = NULL
        FROM shaped s WHERE e.id = s.id
    """,
    # Written in bulk with the history triggers off, then totalled once (migration 0005's
    # rebuild): the triggers would cost a minute here and give the same totals.
    "attempts": """
        INSERT INTO attempts (execution_id, queue_id, attempt, outcome, queued_at,
                              scheduled_at, started_at, finished_at, worker, error)
        SELECT id, queue_id, attempt,
               CASE WHEN status = 'succeeded' THEN 'succeeded'
                    ELSE (ARRAY['failed', 'timed_out', 'worker_lost'])[id % 3 + 1] END,
               queued_at, scheduled_at, started_at, finished_at, worker, error
        FROM executions WHERE status IN ('succeeded', 'dead')
        UNION ALL
        SELECT e.id, e.queue_id, k,
               (ARRAY['failed', 'timed_out', 'worker_lost'])[(e.id + k) % 3 + 1],
               e.enqueued_at + make_interval(secs => k - 1),
               e.enqueued_at + make_interval(secs => k - 1 + 0.01),
               e.enqueued_at + make_interval(secs => k - 1 + 0.013),
               e.enqueued_at + make_interval(secs => k - 1 + 0.2),
               format('celery@bench%s/%s', e.id % 4, k), 'ConnectionError: reset'
        FROM executions e CROSS JOIN generate_series(1, e.attempt - 1) k
        WHERE e.status IN ('succeeded', 'dead', 'retrying') AND e.attempt > 1
    """,
    "counters": """
        UPDATE queues q SET next_seq = s.last_seq, queue_length = s.queued,
            active_count = s.active, total_enqueued = s.n, total_completed = s.succeeded,
            total_failed = s.dead, total_cancelled = s.cancelled, total_expired = s.expired,
            last_updated = now()
        FROM (
            SELECT queue_id, max(seq) AS last_seq, count(*) AS n,
                   count(*) FILTER (WHERE status = 'queued') AS queued,
                   count(*) FILTER (WHERE status IN ('scheduled', 'running')) AS active,
                   count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                   count(*) FILTER (WHERE status IN ('failed', 'timed_out', 'dead')) AS dead,
                   count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
                   count(*) FILTER (WHERE status = 'expired') AS expired
            FROM executions GROUP BY queue_id
        ) s WHERE s.queue_id = q.id
    """,
    # What the sweeper writes every 15 s: an hour of it.
    "samples": """
        INSERT INTO queue_samples (action_id, sampled_at, queue_length, active_count,
                                   oldest_wait_s, completed)
        SELECT l.action_id, now() - make_interval(secs => k * 15),
               greatest(l.queued + (k * 7 + l.action_id) % 11 - 5, 0), l.active,
               CASE WHEN l.queued > 0 THEN 30 + k % 60 END,
               greatest(l.completed - k * CASE WHEN l.action_id = :busy THEN 20 ELSE 1 END, 0)
        FROM (SELECT action_id, sum(queue_length) AS queued, sum(active_count) AS active,
                     sum(total_completed) AS completed
              FROM queues GROUP BY action_id) l
        CROSS JOIN generate_series(0, 239) k
    """,
    "events": """
        INSERT INTO events (trigger, payload, received_at, processed_at)
        SELECT 'monitoring.alert',
               jsonb_build_object('host', 'db' || (g % 5 + 1),
                                  'severity', (ARRAY['low', 'high', 'critical'])[g % 3 + 1]),
               now() - make_interval(secs => (:events - g) * 10),
               now() - make_interval(secs => (:events - g) * 10 - 0.05)
        FROM generate_series(1, :events) g
    """,
    "enforcements": """
        INSERT INTO enforcements (event_id, rule_ref, status, reason, execution_id, created_at)
        SELECT ev.id, 'pack00.on_alert',
               CASE WHEN ev.id % 20 = 0 THEN 'rejected' WHEN ev.id % 7 = 0 THEN 'skipped'
                    ELSE 'executed' END,
               CASE WHEN ev.id % 20 = 0 THEN 'QueueFull: the line is full' END,
               CASE WHEN ev.id % 20 <> 0 AND ev.id % 7 <> 0
                    THEN (SELECT min(id) FROM executions) + ev.id * 197 % :n END,
               ev.processed_at
        FROM events ev
    """,
}


def seed(
    url: str, actions: int = 1000, executions: int = 1_000_000, console: Console | None = None
) -> dict[str, Any]:
    """Fill the (migrated, empty) database at ``url``; returns what was made, with timings."""
    console = console or Console(stderr=True)
    engine = db.make_engine(url)
    busy_queued = min(20_000, max(executions // BUSY_SHARE // 5, 10))
    busy_recent = min(6000, max(executions // BUSY_SHARE // 10, 10))
    params = {
        "packs": max(1, min(actions, actions // 100 or 1)),
        "actions": actions,
        "n": executions,
        "share": BUSY_SHARE,
        "busy_queued": busy_queued,
        "busy_recent": busy_recent,
        "events": max(executions // 200, 100),
    }
    seconds: dict[str, float] = {}
    try:
        for step, sql in SEED.items():
            start = time.perf_counter()
            with console.status(f"seeding {step}"), engine.begin() as conn:
                conn.execute(text("SELECT setseed(0.42)"))
                if step == "attempts":
                    conn.execute(text("ALTER TABLE attempts DISABLE TRIGGER USER"))
                conn.execute(text(sql), params)
                if step == "attempts":
                    conn.execute(text("ALTER TABLE attempts ENABLE TRIGGER USER"))
                    conn.execute(text("SELECT usher_attempt_totals_rebuild()"))
                if step == "actions":
                    params["busy"] = conn.execute(
                        text("SELECT min(id) FROM actions WHERE name = 'action0000'")
                    ).scalar_one()
            seconds[step] = round(time.perf_counter() - start, 1)
        with console.status("vacuum analyze"), engine.connect() as conn:
            start = time.perf_counter()
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
            seconds["vacuum analyze"] = round(time.perf_counter() - start, 1)
        with engine.connect() as conn:
            counts = {
                table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("actions", "queues", "executions", "attempts", "queue_samples")
            }
    finally:
        engine.dispose()
    return {"counts": counts, "seconds": seconds}


# --- measuring --------------------------------------------------------------------------------


def _targets(engine: Engine) -> dict[str, str]:
    """The paths to time: name -> path; the busy action is the one with the most history."""
    with engine.connect() as conn:
        busy = conn.execute(
            text("""SELECT a.ref FROM actions a JOIN queues q ON q.action_id = a.id
                    GROUP BY a.ref ORDER BY sum(q.total_enqueued) DESC, a.ref LIMIT 1""")
        ).scalar_one()
        partitioned = conn.execute(
            text("""SELECT a.ref FROM actions a JOIN queues q ON q.action_id = a.id
                    GROUP BY a.ref HAVING count(*) > 1 ORDER BY a.ref LIMIT 1""")
        ).scalar_one_or_none()
    found = {
        "dashboard overview": "/",
        "overview refresh (json)": "/ui/overview.json",
        "action page (busy)": f"/actions/{busy}",
        "action chart (json)": f"/ui/actions/{busy}/chart.json",
        "GET /api/v1/actions": "/api/v1/actions",
        "queue-stats (busy)": f"/api/v1/actions/{busy}/queue-stats",
    }
    if partitioned:
        found["queue-stats (partitioned)"] = f"/api/v1/actions/{partitioned}/queue-stats"
    found.update(
        {
            "GET /api/v1/executions": "/api/v1/executions",
            "executions ?action=busy": f"/api/v1/executions?action={busy}",
            "executions ?status=queued": "/api/v1/executions?status=queued",
            "GET /metrics": "/metrics",
        }
    )
    return found


@contextmanager
def _served(settings: config.Settings) -> Iterator[tuple[str, Engine]]:
    """The real app under waitress on a free local port: (base URL, the app's engine)."""
    import waitress.server

    import web

    app = web.create_app(settings)
    server: Any = waitress.server.create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, name="bench-web", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}", app.config["USHER_ENGINE"]
    finally:
        # Closed from the server's own loop, which then ends once the client has gone.
        server.trigger.pull_trigger(server.close)
        thread.join(timeout=10)
        server.task_dispatcher.shutdown()
        app.config["USHER_CELERY"].close()


@contextmanager
def _client(base: str, token: str) -> Iterator[httpx.Client]:
    """Logged in to the dashboard (session cookie) and holding the API's bearer token."""
    with httpx.Client(base_url=base, timeout=120) as client:
        yield _logged_in(client, token)


def _logged_in(client: httpx.Client, token: str) -> httpx.Client:
    page = client.get("/login").text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token on the login page"
    done = client.post("/login", data={"csrf_token": found[1], "token": token, "next": "/"})
    assert done.status_code == 303, f"login failed: {done.status_code}"
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def _ms(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@contextmanager
def _recording(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every (statement, parameters) the engine sends while the block runs, and END (None)
    where a transaction ends."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        seen.append((statement, parameters))

    def end(conn: Any) -> None:
        seen.append((END, None))

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "commit", end)
    event.listen(engine, "rollback", end)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "commit", end)
        event.remove(engine, "rollback", end)


def _rows_read(node: dict[str, Any], found: dict[str, int]) -> dict[str, int]:
    """Rows each scan of executions or attempts in a JSON plan read (kept or filtered out)."""
    table = node.get("Relation Name")
    if table in ("executions", "attempts"):
        per_loop = sum(
            node.get(k, 0)
            for k in ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck")
        )
        found[table] = found.get(table, 0) + round(per_loop * node.get("Actual Loops", 1))
    for child in node.get("Plans", []):
        _rows_read(child, found)
    return found


@contextmanager
def _timing(engine: Engine) -> Iterator[dict[str, list[float]]]:
    """Each statement's run times (ms, by its text) while the block runs: what the app really
    waits for, prepared statements and cached plans included."""
    found: dict[str, list[float]] = {}

    def before(conn: Any, *args: Any) -> None:
        conn.info["bench_web_start"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        took = (time.perf_counter() - conn.info.pop("bench_web_start")) * 1000
        found.setdefault(" ".join(statement.split()), []).append(took)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield found
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


@contextmanager
def _sampling(url: str) -> Iterator[None]:
    """The sweeper's chart samples, every SAMPLE_EVERY_S while measuring, after moving the
    seeded hour of samples up to now: the overview reads its throughput from them (without
    them it falls back to reading each action's latest executions)."""
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("""UPDATE queue_samples
                    SET sampled_at = sampled_at + (now() - (SELECT max(sampled_at)
                                                            FROM queue_samples))""")
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM ANALYZE queue_samples")
        )
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(recovery.SAMPLE_EVERY_S):
            with db.unit_of_work(engine) as session:
                recovery.sample_lines(session)

    thread = threading.Thread(target=sample, name="bench-web-samples", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
        engine.dispose()


def _explain(
    engine: Engine, statements: list[tuple[str, Any]], planner: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each distinct read statement, in a rolled-back
    transaction; ``planner`` settings (e.g. enable_seqscan=off) apply to it alone."""
    plans: list[dict[str, Any]] = []
    done: set[str] = set()
    local: list[str] = []  # the SET LOCALs of the app's transaction so far: they apply too
    for statement, parameters in statements:
        sql = " ".join(statement.split())
        if statement == END:
            local.clear()
        elif sql.upper().startswith("SET LOCAL"):
            local.append(statement)
        if sql in done or not sql.upper().startswith(("SELECT", "WITH")):
            continue
        done.add(sql)
        with engine.connect() as conn:
            for name, value in (planner or {}).items():
                conn.execute(
                    text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value}
                )
            for setting in local:
                conn.exec_driver_sql(setting)
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all()
            shape = conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
            ).scalar_one()
            conn.rollback()
        plan = "\n".join(r[0] for r in rows)
        took = re.search(r"Execution Time: ([\d.]+) ms", plan)
        plans.append(
            {
                "sql": statement.strip(),
                "parameters": parameters,
                "calls": sum(1 for s, _ in statements if s != END and " ".join(s.split()) == sql),
                "execution_ms": float(took[1]) if took else None,
                "plan": plan,
                "seq_scans": sorted(set(SEQ_SCANS.findall(plan))),
                "rows_read": _rows_read(shape[0]["Plan"], {}),
                "jit": "JIT:" in plan,
            }
        )
    return plans


def measure(
    url: str,
    console: Console | None = None,
    requests: int = 100,
    warmup: int = 3,
    planner: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Time ``requests`` sequential requests per endpoint against the seeded database at
    ``url``; returns {endpoint: {path, status, p50_ms, p95_ms, max_ms, queries}}, the
    queries explained with the ``planner`` settings given."""
    console = console or Console(stderr=True)
    home = Path(tempfile.mkdtemp(prefix="usher-bench-web-"))
    # Plain HTTP; /metrics computed on every request, so its queries are what is measured.
    settings = config.load(database_url=url, home=home, insecure_cookies=True, metrics_cache_s=0)
    with db.unit_of_work(db.engine_for(url)) as session:
        session.execute(text("DELETE FROM api_tokens WHERE name = 'bench-web'"))
        token = tokens.create(session, "bench-web")
    report: dict[str, Any] = {}
    with (
        _sampling(url),
        _served(settings) as (base, engine),
        _client(base, token) as client,
    ):
        for name, path in _targets(engine).items():
            timings: list[float] = []
            status = 0
            with console.status(f"{name}: {path}"), _timing(engine) as in_app:
                for i in range(warmup + requests):
                    if i == warmup:
                        in_app.clear()
                    start = time.perf_counter()
                    response = client.get(path)
                    took = (time.perf_counter() - start) * 1000
                    status = response.status_code
                    if status != 200:
                        break
                    if i >= warmup:
                        timings.append(took)
            with _recording(engine) as seen:
                client.get(path)
            plans = _explain(engine, seen, planner)
            for query in plans:
                ms = in_app.get(" ".join(query["sql"].split()), [])
                query["in_app_p50_ms"] = round(_ms(ms, 50), 2) if ms else None
            report[name] = {
                "path": path,
                "status": status,
                "requests": len(timings),
                "p50_ms": round(_ms(timings, 50), 1) if timings else None,
                "p95_ms": round(_ms(timings, 95), 1) if timings else None,
                "max_ms": round(max(timings), 1) if timings else None,
                "statements": sum(1 for s, _ in seen if s != END),
                "queries": plans,
            }
    db.dispose_all()
    return report


def seq_scans(report: dict[str, Any]) -> dict[str, list[str]]:
    """Endpoint -> the tables its queries read with a sequential scan (executions, attempts)."""
    found: dict[str, list[str]] = {}
    for name, figures in report.items():
        tables = sorted({t for q in figures["queries"] for t in q["seq_scans"]})
        if tables:
            found[name] = tables
    return found


def widest_reads(report: dict[str, Any]) -> dict[str, int]:
    """The most rows any one query of any endpoint read from executions and from attempts."""
    widest = {"executions": 0, "attempts": 0}
    for figures in report.values():
        for query in figures["queries"]:
            for table, n in query["rows_read"].items():
                widest[table] = max(widest[table], n)
    return widest


def show(report: dict[str, Any], console: Console, title: str = "usher bench-web") -> None:
    table = Table(title=title, header_style="bold")
    columns = ("endpoint", "status", "p50 ms", "p95 ms", "max ms", "SQL", "SQL ms", "worst plan")
    for column in columns:
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for name, f in report.items():
        # SQL ms: the statements' median in-app times, summed over one request's calls
        in_app = sum((q["in_app_p50_ms"] or 0) * q["calls"] for q in f["queries"])
        worst = max((q["execution_ms"] or 0 for q in f["queries"]), default=0)
        table.add_row(
            name,
            str(f["status"]),
            *("-" if f[k] is None else f"{f[k]:.1f}" for k in ("p50_ms", "p95_ms", "max_ms")),
            str(f["statements"]),
            f"{in_app:.1f}",
            f"{worst:.2f}",
        )
    console.print(table)


def show_plans(report: dict[str, Any], console: Console) -> None:
    for name, figures in report.items():
        console.rule(f"{name}  {figures['path']}")
        for query in figures["queries"]:
            console.print(" ".join(query["sql"].split()), style="bold", highlight=False)
            console.print(query["plan"], highlight=False, markup=False)


def run(
    settings: config.Settings,
    actions: int = 1000,
    executions: int = 1_000_000,
    requests: int = 100,
    database: str | None = None,
    keep: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Seed a scratch database (or measure ``database``, seeded before) and measure it."""
    console = console or Console(stderr=True)
    if database:
        return _measured({"database": database}, database, console, requests)
    assert settings.database_url, "resolve the database URL before benchmarking"
    url, name = bench.scratch_database(settings.database_url)
    try:
        db.upgrade(url)
        report: dict[str, Any] = {"seeded": seed(url, actions, executions, console)}
        if keep:
            report["database"] = url
        return _measured(report, url, console, requests)
    finally:
        if not keep:
            db.dispose_all()
            bench.drop_database(settings.database_url, name)


def _measured(report: dict[str, Any], url: str, console: Console, requests: int) -> dict[str, Any]:
    """``report`` with the endpoints' figures and the machine's load around the measurement
    (the figures are only comparable at a similar load)."""
    before = os.getloadavg()
    report["endpoints"] = measure(url, console, requests)
    report["load_average"] = {"before": before, "after": os.getloadavg()}
    return report
