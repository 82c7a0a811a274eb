"""The ``usher`` command: the composition root that wires settings, Postgres, Celery and web.

One module per command group: ``executions`` (run, queues, executions), ``events`` (events,
the DLQ), ``serve`` (the processes and benchmarks), ``admin`` (tokens, live control),
``schedules``, ``webhooks``, ``pools``, ``catalog`` (packs, actions and rules listed; rules
switched); what all commands share (the runtime, tables, JSON) is in
``app.cli.common``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import kombu.exceptions
import sqlalchemy.exc

from app import celery as usher_celery
from app import db
from app.cli import admin as cli_admin
from app.cli import audit as cli_audit
from app.cli import catalog as cli_catalog
from app.cli import events as cli_events
from app.cli import executions as cli_executions
from app.cli import pools as cli_pools
from app.cli import schedules as cli_schedules
from app.cli import serve as cli_serve
from app.cli import webhooks as cli_webhooks
from app.cli.common import Runtime, audited, console, emit_json, err_console, pass_runtime, table
from app.errors import UsherError
from policies import packs


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
@audited("packs load", "path")
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


for command in [
    *cli_executions.COMMANDS,
    *cli_events.COMMANDS,
    *cli_serve.COMMANDS,
    *cli_admin.GROUPS,
    *cli_schedules.GROUPS,
    *cli_webhooks.GROUPS,
    *cli_pools.GROUPS,
    *cli_audit.GROUPS,
    *cli_catalog.GROUPS,
]:
    main.add_command(command)
for command in cli_catalog.PACKS:
    packs_group.add_command(command)
for command in cli_catalog.ACTIONS:
    cli_admin.actions_group.add_command(command)


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
    except sqlalchemy.exc.OperationalError as error:
        # One line, not a traceback: the database named by USHER_DATABASE_URL did not answer.
        reason = str(error.orig or error).strip().splitlines()[0][:300]
        err_console.print(
            f"[red]error:[/red] cannot reach the database ({reason}); is Postgres running "
            "and USHER_DATABASE_URL right?",
            highlight=False,
        )
        sys.exit(2)
    except kombu.exceptions.OperationalError as error:
        err_console.print(
            f"[red]error:[/red] cannot reach the broker ({str(error)[:300]}); is it running "
            "and USHER_BROKER_URL right?",
            highlight=False,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    entry()
