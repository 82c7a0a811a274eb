"""``usher bench-web``: the dashboard, the API and /metrics at 1,000 actions and 1M executions.

Method: ``app.cli.bench.seed`` fills a scratch database (its docstring says with what).
``measure`` serves the real app with waitress on a free local port, logs in like a browser and
calls the API with a stored admin token, times each endpoint sequentially over one keep-alive
connection, then records every SQL statement one request of each endpoint runs and shows its
``EXPLAIN (ANALYZE, BUFFERS)`` (``app.cli.bench.plans``); ``app.cli.bench.web_report`` prints
the figures.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from sqlalchemy import Engine

from app import config, db, tokens
from app.cli.bench import measures, plans, statements
from app.cli.bench.scratch import drop_database, scratch_database
from app.cli.bench.seed import seed
from policies import recovery


def _targets(engine: Engine) -> dict[str, str]:
    """The paths to time: name -> path; the busy action is the one with the most history."""
    with engine.connect() as conn:
        busy = conn.execute(statements.query("busy_action_ref")).scalar_one()
        partitioned = conn.execute(statements.query("partitioned_action_ref")).scalar_one_or_none()
    now = datetime.now(UTC)
    day = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    today = now.strftime("%Y-%m-%dT00:00:00Z")
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
            # The search (issue 18): a parameter, a rare parameter, a requester, a rule's
            # work of the last day, "everything for host db3 today".
            "search ?param.host=db3": "/api/v1/executions?param.host=db3",
            "search ?param.n=123456": "/api/v1/executions?param.n=123456",
            "search ?requested_by=ops": "/api/v1/executions?requested_by=ops",
            "search ?rule=&since=1 day": f"/api/v1/executions?rule=bench.r3&since={day}",
            "search ?param.host=db3&since=today": (
                f"/api/v1/executions?param.host=db3&since={today}"
            ),
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


@contextmanager
def _sampling(url: str) -> Iterator[None]:
    """The sweeper's chart samples, every SAMPLE_EVERY_S while measuring, after moving the
    seeded hour of samples up to now: the overview reads its throughput from them (without
    them it falls back to reading each action's latest executions)."""
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.execute(statements.query("samples_to_now"))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            statements.query("vacuum_analyze_samples")
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


def _ms(values: list[float], q: int, digits: int) -> float | None:
    """The ``q``-th percentile of ``values`` to ``digits`` decimals; None when there is none."""
    found = measures.percentile(values, q)
    return None if found is None else round(found, digits)


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
        session.execute(statements.query("drop_bench_token"))
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
            with console.status(f"{name}: {path}"), plans.timing(engine) as in_app:
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
            with plans.recording(engine) as seen:
                client.get(path)
            explained = plans.explain(engine, seen, planner)
            for query in explained:
                ms = in_app.get(plans.normal(query["sql"]), [])
                query["in_app_p50_ms"] = _ms(ms, 50, 2)
            report[name] = {
                "path": path,
                "status": status,
                "requests": len(timings),
                "p50_ms": _ms(timings, 50, 1),
                "p95_ms": _ms(timings, 95, 1),
                "max_ms": round(max(timings), 1) if timings else None,
                "statements": sum(1 for s, _ in seen if s != plans.END),
                "queries": explained,
            }
    db.dispose_all()
    return report


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
    url, name = scratch_database(settings.database_url)
    try:
        db.upgrade(url)
        report: dict[str, Any] = {"seeded": seed(url, actions, executions, console)}
        if keep:
            report["database"] = url
        return _measured(report, url, console, requests)
    finally:
        if not keep:
            db.dispose_all()
            drop_database(settings.database_url, name)


def _measured(report: dict[str, Any], url: str, console: Console, requests: int) -> dict[str, Any]:
    """``report`` with the endpoints' figures and the machine's load around the measurement
    (the figures are only comparable at a similar load)."""
    before = os.getloadavg()
    report["endpoints"] = measure(url, console, requests)
    report["load_average"] = {"before": before, "after": os.getloadavg()}
    return report
