"""The ``usher`` command: the composition root that wires settings, Postgres, Celery and web."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import click
from celery import Celery
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from app import celery as usher_celery
from app import config, db, packs, queries
from app.errors import UsherError
from app.models import STATUSES

# Piped output is not cut to 80 columns: scripts and logs get the whole table.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line
FINAL = {"succeeded", "failed", "timed_out", "dead", "cancelled", "expired"}
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Runtime:
    """What a command needs, made on first use: settings, the database, the Celery app."""

    overrides: dict[str, Any] = field(default_factory=dict)
    embedded: bool = False

    @cached_property
    def settings(self) -> config.Settings:
        settings = config.load(**self.overrides)
        if not settings.database_url:
            # Resolve the embedded Postgres once; children and forks inherit the URL.
            url = db.embedded_url(settings.home)
            self.embedded = True
            os.environ["USHER_DATABASE_URL"] = url
            settings = settings.model_copy(update={"database_url": url})
        return settings

    @cached_property
    def engine(self) -> Engine:
        assert self.settings.database_url
        return db.engine_for(self.settings.database_url)

    @cached_property
    def celery(self) -> Celery:
        return usher_celery.create(self.settings)


pass_runtime = click.make_pass_decorator(Runtime, ensure=True)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    out = Table(title=title, header_style="bold")
    for column in columns:
        numeric = column.lower() in {
            "id",
            "seq",
            "queued",
            "active",
            "enqueued",
            "completed",
            "failed",
            "cancelled",
            "expired",
            "attempt",
            "priority",
        }
        out.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        out.add_row(*["" if v is None else str(v) for v in row])
    console.print(out)


@click.group()
@click.version_option(package_name="usher")
def main() -> None:
    """Usher: automation actions on Celery under strict FIFO lines and global limits."""


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@pass_runtime
def db_upgrade(rt: Runtime) -> None:
    """Apply every migration (the only way the schema is made)."""
    assert rt.settings.database_url
    db.upgrade(rt.settings.database_url)
    console.print("[green]database is at the latest schema[/green]")


@main.group("packs")
def packs_group() -> None:
    """Packs of actions and their policies."""


@packs_group.command("load")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_runtime
def packs_load(rt: Runtime, path: Path, as_json: bool) -> None:
    """Register or update the pack(s) at PATH: a pack directory or a directory of packs.
    Changed limits take effect at once: every line of the loaded actions is re-admitted."""
    from policies import control

    with db.unit_of_work(rt.engine) as session:
        specs = packs.load(session, path)
        refs = [f"{s.name}.{a['name']}" for s in specs for a in s.actions]
        grants = control.readmit_refs(session, rt.settings, refs)
    usher_celery.publish(rt.celery, grants)
    loaded = [{"pack": s.name, "actions": [a["name"] for a in s.actions]} for s in specs]
    if as_json:
        emit_json(loaded)
        return
    table(["pack", "actions"], [[p["pack"], ", ".join(p["actions"])] for p in loaded], "loaded")


def parse_parameters(pairs: tuple[str, ...]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="PARAMETERS")
        try:
            parameters[key] = json.loads(raw)
        except json.JSONDecodeError:
            parameters[key] = raw
    return parameters


@main.command("run")
@click.argument("action_ref")
@click.argument("parameters", nargs=-1)
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--wait", is_flag=True, help="wait for the final status and print the result")
@click.option("--timeout", type=float, default=None, help="give up waiting after this many seconds")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def run_action(
    rt: Runtime,
    action_ref: str,
    parameters: tuple[str, ...],
    priority: int,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Request an execution of ACTION_REF with key=value parameters (values may be JSON)."""
    from policies import admission

    with db.unit_of_work(rt.engine) as session:
        enqueued = admission.enqueue(
            session, rt.settings, action_ref, parse_parameters(parameters), priority
        )
    usher_celery.publish(rt.celery, enqueued.grants)
    if not wait:
        if as_json:
            emit_json({"id": enqueued.execution_id, "seq": enqueued.seq})
        else:
            click.echo(enqueued.execution_id)
        return
    result = wait_for(rt, enqueued.execution_id, timeout)
    if as_json:
        emit_json(result)
    else:
        console.print(f"execution {result['id']}: [bold]{result['status']}[/bold]")
        if result.get("result") is not None:
            console.print_json(json.dumps(result["result"], default=str))
        if result.get("error"):
            err_console.print(f"[red]{result['error']}[/red]")
    if result["status"] != "succeeded":
        sys.exit(1)


def wait_for(rt: Runtime, execution_id: int, timeout: float | None) -> dict[str, Any]:
    """Poll until the execution ends, showing where it stands: position and ETA while it
    waits, then the running time. In a terminal the line updates in place; piped, each
    change is printed once."""
    from policies import eta

    deadline = None if timeout is None else time.monotonic() + timeout
    live = console.is_terminal
    shown = ""
    with console.status(f"execution {execution_id}: waiting") if live else nullcontext() as spot:
        while True:
            with db.unit_of_work(rt.engine) as session:
                row = queries.execution(session, execution_id)
                where = eta.estimate(session, execution_id)
            if row["status"] in FINAL:
                return row
            text = _standing(execution_id, row, where)
            if spot is not None:
                spot.update(text)
            elif text.split(" (")[0] != shown.split(" (")[0]:
                click.echo(text)
            shown = text
            if deadline is not None and time.monotonic() > deadline:
                raise UsherError(f"execution {execution_id} is still {row['status']}; gave up")
            time.sleep(0.2)


def _standing(execution_id: int, row: dict[str, Any], where: dict[str, Any]) -> str:
    if row["status"] == "queued" and where["position"]:
        when = (
            f"ETA {datetime.fromisoformat(where['eta']).astimezone():%H:%M:%S}"
            if where["eta"]
            else "no ETA yet"
        )
        return f"execution {execution_id}: queued, position {where['position']} ({when})"
    if row["status"] == "running" and row["started_at"]:
        started = datetime.fromisoformat(row["started_at"])
        running = (datetime.now(UTC) - started).total_seconds()
        return f"execution {execution_id}: running on {row['worker']} ({running:.0f}s)"
    return f"execution {execution_id}: {row['status']}"


@main.command("queues")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def queues_cmd(rt: Runtime, as_json: bool) -> None:
    """One row per action line (and partition): waiting, active/limit, totals, oldest wait."""
    from policies import stats

    with db.unit_of_work(rt.engine) as session:
        rows = stats.lines(session, rt.settings)
    if as_json:
        emit_json(rows)
        return
    table(
        [
            "action",
            "partition",
            "queued",
            "active",
            "enqueued",
            "completed",
            "failed",
            "cancelled",
            "expired",
            "oldest wait",
        ],
        [
            [
                r["action_ref"],
                r["partition"],
                r["queue_length"],
                f"{r['active_count']}/{r['max_concurrent']}",
                r["total_enqueued"],
                r["total_completed"],
                r["total_failed"],
                r["total_cancelled"],
                r["total_expired"],
                f"{r['oldest_wait_s']:.1f}s" if r["oldest_wait_s"] is not None else "-",
            ]
            for r in rows
        ],
    )


@main.group("executions")
def executions_group() -> None:
    """Inspect and cancel executions."""


@executions_group.command("list")
@click.option("--action", default=None)
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def executions_list(
    rt: Runtime, action: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """Newest first."""
    with db.unit_of_work(rt.engine) as session:
        rows = queries.executions(session, action=action, status=status, limit=limit)
    if as_json:
        emit_json(rows)
        return
    table(
        ["id", "action", "status", "seq", "attempt", "enqueued", "finished", "worker"],
        [
            [
                r["id"],
                r["action_ref"],
                r["status"],
                r["seq"],
                r["attempt"],
                r["enqueued_at"],
                r["finished_at"],
                r["worker"],
            ]
            for r in rows
        ],
    )


@executions_group.command("show")
@click.argument("execution_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def executions_show(rt: Runtime, execution_id: int, as_json: bool) -> None:
    """Everything about one execution, with its place in line and ETA while it waits."""
    from policies import eta

    with db.unit_of_work(rt.engine) as session:
        row = queries.execution(session, execution_id)
        row.update(eta.estimate(session, execution_id))
    if as_json:
        emit_json(row)
        return
    out = Table(show_header=False, box=None)
    out.add_column(style="bold")
    out.add_column()
    for key, value in row.items():
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        out.add_row(key, "" if shown is None else str(shown))
    console.print(out)


@executions_group.command("cancel")
@click.argument("execution_id", type=int)
@pass_runtime
def executions_cancel(rt: Runtime, execution_id: int) -> None:
    """Cancel a queued, scheduled or running execution (a running one is terminated)."""
    from policies import admission

    with db.unit_of_work(rt.engine) as session:
        cancelled = admission.cancel(session, rt.settings, execution_id)
        attempt = queries.execution(session, execution_id)["attempt"]
    usher_celery.terminate(rt.celery, execution_id, attempt, cancelled.previous_status)
    usher_celery.publish(rt.celery, cancelled.grants)
    console.print(f"execution {execution_id}: cancelled (was {cancelled.previous_status})")


@main.group("events")
def events_group() -> None:
    """Events: what rules react to."""


@events_group.command("send")
@click.argument("trigger")
@click.option("--payload", default="{}", help="the event's payload, a JSON object")
@click.option(
    "--timeout",
    type=float,
    default=30,
    show_default=True,
    help="seconds to wait for a worker to process it (0: do not wait)",
)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def events_send(rt: Runtime, trigger: str, payload: str, timeout: float, as_json: bool) -> None:
    """Emit an event; prints the enforcements it caused (rule, status, execution)."""
    from policies import events

    try:
        document = json.loads(payload)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--payload") from None
    with db.unit_of_work(rt.engine) as session:
        event_id = events.store(session, trigger, document)
    usher_celery.send_event(rt.celery, event_id)
    deadline = time.monotonic() + timeout
    with console.status(f"event {event_id}: waiting for a worker to process it"):
        while True:
            with db.unit_of_work(rt.engine) as session:
                done = events.processed(session, event_id)
                found = events.enforcements(session, event_id)
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    if as_json:
        emit_json({"event_id": event_id, "processed": done, "enforcements": found})
        return
    if not done:
        err_console.print(
            f"event {event_id} is stored; no worker processed it within {timeout:g}s "
            "(is `usher worker` running?)"
        )
        return
    if not found:
        console.print(f"event {event_id}: no rule matched")
        return
    table(
        ["id", "rule", "status", "execution", "reason"],
        [[f["id"], f["rule"], f["status"], f["execution_id"], f["reason"]] for f in found],
        f"event {event_id}",
    )


@main.group("dlq")
def dlq_group() -> None:
    """The dead-letter queue: executions that failed for good."""


@dlq_group.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def dlq_list(rt: Runtime, limit: int, as_json: bool) -> None:
    """Newest first, with the last error."""
    from policies import dlq

    with db.unit_of_work(rt.engine) as session:
        rows = dlq.items(session, limit)
    if as_json:
        emit_json(rows)
        return
    table(
        ["id", "action", "attempt", "finished", "error"],
        [
            [r["id"], r["action_ref"], r["attempt"], r["finished_at"], (r["error"] or "")[:100]]
            for r in rows
        ],
        "dead-letter queue",
    )


@dlq_group.command("replay")
@click.argument("execution_id", type=int, required=False)
@click.option("--all", "replay_all", is_flag=True, help="replay every item")
@pass_runtime
def dlq_replay(rt: Runtime, execution_id: int | None, replay_all: bool) -> None:
    """Enqueue a dead execution again (at the tail of its line), or --all of them."""
    from policies import dlq

    if (execution_id is None) != replay_all:
        raise click.UsageError("give an execution ID or --all")
    with db.unit_of_work(rt.engine) as session:
        ids = dlq.dead_ids(session) if replay_all else [execution_id]
    for dead_id in ids:
        assert dead_id is not None
        with db.unit_of_work(rt.engine) as session:
            enqueued = dlq.replay(session, rt.settings, dead_id)
        usher_celery.publish(rt.celery, enqueued.grants)
        console.print(f"execution {dead_id} replayed as {enqueued.execution_id}")
    if not ids:
        console.print("the dead-letter queue is empty")


@dlq_group.command("purge")
@click.option("--yes", is_flag=True, help="do not ask")
@pass_runtime
def dlq_purge(rt: Runtime, yes: bool) -> None:
    """Empty the dead-letter queue (the executions and their history are kept)."""
    from policies import dlq

    if not yes and sys.stdin.isatty():
        click.confirm("remove every item from the dead-letter queue?", abort=True)
    with db.unit_of_work(rt.engine) as session:
        purged = dlq.purge(session)
    console.print(f"purged {purged} item(s)")


@main.group("tokens")
def tokens_group() -> None:
    """API tokens (admin, or read-only with --read-only)."""


@tokens_group.command("create")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="may read but not change anything")
@pass_runtime
def tokens_create(rt: Runtime, name: str, read_only: bool) -> None:
    """Create a token and print it once; only its hash is stored."""
    from app import tokens

    with db.unit_of_work(rt.engine) as session:
        token = tokens.create(session, name, read_only)
    err_console.print(
        f"token {name!r} ({'read-only' if read_only else 'admin'}); it is shown only now:"
    )
    click.echo(token)


@tokens_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def tokens_list(rt: Runtime, as_json: bool) -> None:
    """Every token: name, kind, created, last used, revoked."""
    from app import tokens

    with db.unit_of_work(rt.engine) as session:
        rows = tokens.listing(session)
    if as_json:
        emit_json(rows)
        return
    table(
        ["name", "kind", "created", "last used", "revoked"],
        [
            [
                r["name"],
                "read-only" if r["read_only"] else "admin",
                r["created_at"],
                r["last_used_at"],
                r["revoked_at"],
            ]
            for r in rows
        ],
    )


@tokens_group.command("revoke")
@click.argument("name")
@pass_runtime
def tokens_revoke(rt: Runtime, name: str) -> None:
    """Revoke a token: it stops working at once."""
    from app import tokens

    with db.unit_of_work(rt.engine) as session:
        tokens.revoke(session, name)
    console.print(f"token {name!r} revoked")


@main.group("actions")
def actions_group() -> None:
    """Control an action's lines live: pause, resume, limits."""


def _after_control(rt: Runtime, ref: str, grants: list[Any]) -> None:
    from policies import stats

    usher_celery.publish(rt.celery, grants)
    with db.unit_of_work(rt.engine) as session:
        line = stats.action_stats(session, rt.settings, ref)
    console.print(
        f"{ref}: {line['queue_length']} waiting, {line['active_count']}/"
        f"{line['max_concurrent']} active, {len(grants)} granted now"
    )


@actions_group.command("pause")
@click.argument("ref")
@pass_runtime
def actions_pause(rt: Runtime, ref: str) -> None:
    """Grant nothing more; running work finishes, waiting work keeps its place."""
    _set_paused(rt, ref, True)


@actions_group.command("resume")
@click.argument("ref")
@pass_runtime
def actions_resume(rt: Runtime, ref: str) -> None:
    """Resume granting; what fits under the limit starts at once."""
    _set_paused(rt, ref, False)


def _set_paused(rt: Runtime, ref: str, paused: bool) -> None:
    from policies import control

    with db.unit_of_work(rt.engine) as session:
        grants = control.set_paused(session, rt.settings, ref, paused)
    _after_control(rt, ref, grants)


@actions_group.command("set")
@click.argument("ref")
@click.option("--concurrency", type=click.IntRange(1, 10_000))
@click.option("--max-queue-length", type=click.IntRange(1, 10_000_000))
@click.option("--queue-timeout-s", type=click.IntRange(1, 604_800))
@pass_runtime
def actions_set(
    rt: Runtime,
    ref: str,
    concurrency: int | None,
    max_queue_length: int | None,
    queue_timeout_s: int | None,
) -> None:
    """Change limits live (until the pack is loaded again). Raising grants at once."""
    from policies import control

    changes = {
        key: value
        for key, value in (
            ("concurrency", concurrency),
            ("max_queue_length", max_queue_length),
            ("queue_timeout_s", queue_timeout_s),
        )
        if value is not None
    }
    with db.unit_of_work(rt.engine) as session:
        grants = control.update_policy(session, rt.settings, ref, changes)
    _after_control(rt, ref, grants)


@main.command("worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--actions", default="", help="comma-separated action refs or globs (pack.*); default: all"
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_runtime
def worker_cmd(rt: Runtime, actions: str, celery_args: tuple[str, ...]) -> None:
    """A Celery worker consuming every action's queue, or only --actions. Extra options go to
    `celery worker` (e.g. -c 4, -n name@%h)."""
    from tasks import consumers

    app = rt.celery
    app.conf.usher_actions = [a.strip() for a in actions.split(",") if a.strip()]
    app.steps["consumer"].add(consumers.ActionQueueWatcher)
    queues = f"{usher_celery.DEFAULT_QUEUE},{usher_celery.EVENTS_QUEUE}"
    argv = ["worker", "-Q", queues, "--loglevel", "INFO", *celery_args]
    app.worker_main(argv)


@main.command("beat")
@pass_runtime
def beat_cmd(rt: Runtime) -> None:
    """Celery beat: schedules the sweeper (leases, lost messages, queue timeouts)."""
    schedule = rt.settings.home.resolve() / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    rt.celery.start(["beat", "--loglevel", "INFO", "--schedule", str(schedule)])


@main.command("flower")
@pass_runtime
def flower_cmd(rt: Runtime) -> None:
    """Flower on 127.0.0.1:USHER_FLOWER_PORT behind USHER_FLOWER_BASIC_AUTH (user:password)."""
    auth = rt.settings.flower_basic_auth
    if not auth:
        raise UsherError(
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
        ]
    )


@main.command("web")
@pass_runtime
def web_cmd(rt: Runtime) -> None:
    """Serve the dashboard and API with waitress on USHER_WEB_HOST:USHER_WEB_PORT."""
    import waitress

    import web

    flask_app = web.create_app(rt.settings, rt.celery)
    host, port = rt.settings.web_host, rt.settings.web_port
    console.print(f"serving on http://{host}:{port}")
    waitress.serve(flask_app, host=host, port=port, threads=8, _quiet=True)


@main.command("up")
@click.option("--demo", is_flag=True, help="load examples/packs and run demo executions")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@pass_runtime
def up_cmd(rt: Runtime, demo: bool, workers: int, concurrency: int) -> None:
    """Run web + worker(s) + beat on this machine (embedded Postgres and broker by default)."""
    from app import up

    up.run(rt, demo=demo, workers=workers, concurrency=concurrency)


@main.command("bench")
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
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("usher-bench.png"),
    show_default=True,
    help="where to write the PNG plot",
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
    plot: Path,
    as_json: bool,
) -> None:
    """Usher against plain Celery on the same broker and workers (a scratch database)."""
    from app import bench

    if clients:
        from app import bench_postgres

        with err_console.status(f"{clients} clients claiming and finishing {executions:,}"):
            figures = bench_postgres.measure(rt.settings, executions, actions, limit, clients)
        if as_json:
            emit_json(figures)
        else:
            console.print(
                f"Postgres alone: {figures['lifecycles_per_s']:,.1f} lifecycles/s "
                f"(claim + finish; {clients} clients, {actions} lines of limit {limit})"
            )
        return

    report = bench.run(
        rt.settings, executions, actions, limit, workers, concurrency, err_console, plain_queues
    )
    if intake:
        from app import bench_intake

        report.intake = bench_intake.measure(rt.settings, err_console)
    bench.plot(report, plot)
    if as_json:
        emit_json(bench.as_dict(report))
    else:
        bench.show(report, console)


@main.command("bench-web")
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
    from app import bench_web

    report = bench_web.run(rt.settings, actions, executions, requests, database, keep, err_console)
    if as_json:
        emit_json(report)
        return
    bench_web.show(report["endpoints"], console)
    if plans:
        bench_web.show_plans(report["endpoints"], console)
    if keep:
        console.print(f"kept: {report['database']}")


def entry() -> None:
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except UsherError as error:
        err_console.print(f"[red]error:[/red] {error.message}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env)


def terminate_all(processes: list[subprocess.Popen[bytes]], grace_s: float = 15) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    entry()
