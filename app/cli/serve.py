"""The long-running ``usher`` commands (worker, beat, flower, web, up) and the benchmarks."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import click
import waitress.channel
import waitress.server
import waitress.task

from app import celery as usher_celery
from app.cli.common import Runtime, console, emit_json, err_console, pass_runtime
from app.errors import ConfigError, TooLarge

# Commands that hand what follows their own options (after ``--``, or any option they do
# not know) to Celery: a later option wins, so ``--loglevel debug`` overrides the default.
PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command("worker", context_settings=PASS_THROUGH)
@click.option(
    "--actions", default="", help="comma-separated action refs or globs (pack.*); default: all"
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_runtime
def worker_cmd(rt: Runtime, actions: str, celery_args: tuple[str, ...]) -> None:
    """A Celery worker consuming every action's queue, or only --actions. Extra options go to
    `celery worker` (e.g. -c 4, -n name@%h)."""
    rt.require_schema(wait=True)
    from tasks import consumers

    app = rt.celery
    app.conf.usher_actions = [a.strip() for a in actions.split(",") if a.strip()]
    app.steps["consumer"].add(consumers.ActionQueueWatcher)
    queues = ",".join(usher_celery.own_queues(app))
    argv = ["worker", "-Q", queues, "--loglevel", "INFO", *celery_args]
    app.worker_main(argv)


@click.command("beat", context_settings=PASS_THROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_runtime
def beat_cmd(rt: Runtime, celery_args: tuple[str, ...]) -> None:
    """Celery beat: fires the packs' schedules (each tick once, however many beats run) and
    schedules the sweeper (leases, lost messages, queue timeouts). Extra options go to
    `celery beat` (e.g. `usher beat -- --loglevel debug`)."""
    rt.require_schema(wait=True)
    argv = ["beat", "--loglevel", "INFO", "--scheduler", "tasks.beat:Scheduler", *celery_args]
    rt.celery.start(argv)


@click.command("flower", context_settings=PASS_THROUGH)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@pass_runtime
def flower_cmd(rt: Runtime, flower_args: tuple[str, ...]) -> None:
    """Flower on 127.0.0.1:USHER_FLOWER_PORT behind USHER_FLOWER_BASIC_AUTH (user:password).
    Extra options go to Flower (e.g. `usher flower -- --port 5556`); the auth stays."""
    auth = rt.settings.flower_basic_auth
    if not auth:
        raise ConfigError(
            "USHER_FLOWER_BASIC_AUTH is not set: Flower never runs without auth "
            "(export USHER_FLOWER_BASIC_AUTH=user:a-long-password)"
        )
    rt.celery.start(
        [
            "flower",
            "--address=127.0.0.1",
            f"--port={rt.settings.flower_port}",
            f"--basic-auth={auth}",
            "--purge_offline_workers=60",
            *tornado_options(flower_args),
        ]
    )


def tornado_options(args: tuple[str, ...]) -> list[str]:
    """Flower's options as tornado reads them, ``--port=5556``: it takes no ``--port 5556``
    (Flower has no positional arguments, so a word after an option is its value)."""
    out: list[str] = []
    for arg in args:
        if out and out[-1].startswith("--") and "=" not in out[-1] and not arg.startswith("-"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


class JsonErrorTask(waitress.task.ErrorTask):
    """waitress's own refusals (a body over the limit, a malformed request) in the API's
    error format: they are answered before the app sees the request."""

    def execute(self) -> None:
        error = self.request.error
        if error.code == 413:
            limit = self.channel.server.adj.max_request_body_size - 1
            code = TooLarge.code
            message = f"the body is larger than {limit:,} bytes (the limit is USHER_MAX_BODY_BYTES)"
        else:
            code, message = error.reason.lower().replace(" ", "_"), error.body
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(waitress.channel.HTTPChannel):
    error_task_class = JsonErrorTask


def create_server(
    flask_app: Any,
    max_body_bytes: int,
    host: str,
    port: int,
    threads: int,
    listener: socket.socket | None = None,
) -> Any:
    """waitress serving ``flask_app`` on ``host:port``, or on ``listener`` (a socket already
    listening, shared by every process of ``usher web --processes``). It buffers a whole body
    before calling the app, so it refuses one over the limit itself, from the Content-Length
    (or as chunks pass it)."""
    served: dict[int, Any] = {}
    where: dict[str, Any] = {"sockets": [listener]} if listener else {"host": host, "port": port}
    server = waitress.server.create_server(
        flask_app,
        served,
        threads=threads,
        max_request_body_size=max_body_bytes + 1,  # waitress refuses this size and up
        **where,
    )
    for channel in served.values():  # one per address the host resolves to
        if isinstance(channel, waitress.server.BaseWSGIServer):
            channel.channel_class = JsonErrorChannel
    return server


@click.command("web")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="web processes sharing the port (the kernel spreads connections): one per core",
)
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True)
@pass_runtime
def web_cmd(rt: Runtime, processes: int, threads: int) -> None:
    """Serve the dashboard and API with waitress on USHER_WEB_HOST:USHER_WEB_PORT."""
    rt.require_schema(wait=True)
    import web
    from app import logs

    logs.configure(rt.settings)
    host, port = rt.settings.web_host, rt.settings.web_port
    if processes == 1:
        flask_app = web.create_app(rt.settings, rt.celery)
        server = create_server(flask_app, rt.settings.max_body_bytes, host, port, threads)
        console.print(f"serving on http://{host}:{port}")
        server.run()
        return
    from app.cli import web_processes

    web_processes.serve(rt.settings, host, port, processes, threads, console)


@click.command("up")
@click.option("--demo", is_flag=True, help="load examples/packs and send the demo events")
@click.option(
    "--again",
    is_flag=True,
    help="with --demo: send the demo events even if this USHER_HOME had them",
)
@click.option("--verbose", is_flag=True, help="also stream the workers' logs to the console")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@pass_runtime
def up_cmd(
    rt: Runtime, demo: bool, again: bool, verbose: bool, workers: int, concurrency: int
) -> None:
    """Run web + worker(s) + beat on this machine (embedded Postgres and broker by default),
    one `usher up` per USHER_HOME; logs in USHER_HOME/logs, Ctrl-C stops it all cleanly."""
    from app.cli import up

    if again and not demo:
        raise click.UsageError("--again sends the demo events again: use it with --demo")
    up.run(rt, up.Options(demo, again, verbose, workers, concurrency))


@click.command("bench")
@click.option("--executions", type=click.IntRange(10, 1_000_000), default=10_000, show_default=True)
@click.option("--actions", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=5,
    show_default=True,
    help="each action's concurrency limit",
)
@click.option("--workers", type=click.IntRange(1, 32), default=2, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option(
    "--intake",
    is_flag=True,
    help="also measure batch intake and enqueue/grant with 100 and 100,000 waiting",
)
@click.option(
    "--postgres-only",
    "clients",
    type=click.IntRange(1, 256),
    default=None,
    help="only Postgres: N client processes claim and finish, no broker, no Celery",
)
@click.option(
    "--plain-queues",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="spread plain Celery's tasks over N queues (N = --actions routes them as Usher does)",
)
@click.option(
    "--execution-events",
    "listen",
    is_flag=True,
    help="with a rule on usher.execution: every end writes its event (what chaining costs)",
)
@click.option(
    "--intake-http",
    is_flag=True,
    help="only single requests over HTTP: K clients against a real usher web, beside the "
    "batch path and plain Celery's send_task",
)
@click.option(
    "--http-clients",
    type=click.IntRange(1, 512),
    default=32,
    show_default=True,
    help="with --intake-http: concurrent clients, one connection each",
)
@click.option(
    "--requests",
    type=click.IntRange(100, 1_000_000),
    default=3000,
    show_default=True,
    help="with --intake-http: requests of each kind",
)
@click.option(
    "--web-processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="with --intake-http: usher web --processes N",
)
@click.option(
    "--retention",
    "soak_minutes",
    type=click.IntRange(1, 24 * 60),
    default=None,
    help="only the retention soak: a steady load for N minutes with USHER_RETENTION_S=60, "
    "the history tables' rows and sizes each minute",
)
@click.option(
    "--rate",
    type=click.IntRange(1, 5000),
    default=50,
    show_default=True,
    help="with --retention: executions requested per second (and a fifth as many events)",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="where to write the PNG plot [default: USHER_HOME/usher-bench.png]",
)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def bench_cmd(
    rt: Runtime,
    executions: int,
    actions: int,
    limit: int,
    workers: int,
    concurrency: int,
    intake: bool,
    clients: int | None,
    plain_queues: int,
    listen: bool,
    intake_http: bool,
    http_clients: int,
    requests: int,
    web_processes: int,
    soak_minutes: int | None,
    rate: int,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Usher against plain Celery on the same broker and workers (a scratch database)."""
    from app.cli.bench import core as bench
    from app.cli.bench import plot as bench_plot
    from app.cli.bench import report as bench_report

    if intake_http:
        from app.cli.bench import intake_http as bench_http

        rows = bench_http.measure(rt.settings, err_console, requests, http_clients, web_processes)
        if as_json:
            emit_json(rows)
        else:
            console.print(bench_http.table(rows, http_clients, web_processes))
        return
    if soak_minutes:
        from dataclasses import asdict

        from app.cli.bench import soak

        found = soak.run(rt.settings, soak_minutes, rate, err_console)
        if as_json:
            emit_json([asdict(m) for m in found])
        else:
            console.print(soak.table(found))
        return

    if clients:
        from app.cli.bench import postgres as bench_postgres

        with err_console.status(f"{clients} clients claiming and finishing {executions:,}"):
            figures = bench_postgres.measure(
                rt.settings, executions, actions, limit, clients, listen
            )
        if as_json:
            emit_json(figures)
        else:
            console.print(
                f"Postgres alone: {figures['lifecycles_per_s']:,.1f} lifecycles/s "
                f"(claim + finish; {clients} clients, {actions} lines of limit {limit}"
                f"{'; execution events on' if listen else ''}); per lifecycle "
                f"{figures['server_cpu_ms']:.3f} ms of Postgres CPU and "
                f"{figures['wal_bytes_per_lifecycle']:,} bytes of WAL (enqueue: "
                f"{figures['wal_bytes_per_enqueue']:,})"
            )
        return

    report = bench.run(
        rt.settings,
        executions,
        actions,
        limit,
        workers,
        concurrency,
        err_console,
        plain_queues,
        listen,
    )
    if intake:
        from app.cli.bench import intake as bench_intake

        report.intake = bench_intake.measure(rt.settings, err_console)
    # Into the data directory, not wherever the command was run (a repository, say).
    bench_plot.plot(report, plot or rt.settings.home / "usher-bench.png")
    if as_json:
        emit_json(bench_report.as_dict(report))
    else:
        bench_report.show(report, console)


@click.command("bench-web")
@click.option("--actions", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option(
    "--executions", type=click.IntRange(100, 100_000_000), default=1_000_000, show_default=True
)
@click.option("--requests", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--database", default=None, help="measure this database, seeded by an earlier --keep")
@click.option("--keep", is_flag=True, help="keep the scratch database and print its URL")
@click.option("--plans", is_flag=True, help="print the EXPLAIN (ANALYZE, BUFFERS) of each query")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def bench_web_cmd(
    rt: Runtime,
    actions: int,
    executions: int,
    requests: int,
    database: str | None,
    keep: bool,
    plans: bool,
    as_json: bool,
) -> None:
    """Dashboard, API and /metrics latency on a seeded scratch database (default 1M executions)."""
    from app.cli.bench import web as bench_web
    from app.cli.bench import web_report

    report = bench_web.run(rt.settings, actions, executions, requests, database, keep, err_console)
    if as_json:
        emit_json(report)
        return
    web_report.show(report["endpoints"], console)
    if plans:
        web_report.show_plans(report["endpoints"], console)
    if keep:
        console.print(f"kept: {report['database']}")


COMMANDS = [worker_cmd, beat_cmd, flower_cmd, web_cmd, up_cmd, bench_cmd, bench_web_cmd]
