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

from app import db
from app.cli import admin as cli_admin
from app.cli import audit as cli_audit
from app.cli import catalog as cli_catalog
from app.cli import client
from app.cli import events as cli_events
from app.cli import executions as cli_executions
from app.cli import pools as cli_pools
from app.cli import schedules as cli_schedules
from app.cli import serve as cli_serve
from app.cli import webhooks as cli_webhooks
from app.cli.common import Runtime, console, emit_json, err_console, pass_runtime, table
from app.errors import ConfigError, UsherError

# The commands that serve a process (or its schema): on the database always, never --url.
SERVING = frozenset({"db", "worker", "beat", "web", "flower", "up", "bench", "bench-web"})


@click.group()
@click.version_option(package_name="usher")
@click.option(
    "--url",
    metavar="URL",
    help="run the command through the REST API of the Usher at URL (or USHER_URL), with "
    "--token's rights; without it, on the database",
)
@click.option(
    "--token",
    metavar="TOKEN",
    help="the API token for --url (better: USHER_TOKEN, which `ps` does not show)",
)
@click.pass_context
def main(ctx: click.Context, url: str | None, token: str | None) -> None:
    """Usher: automation actions on Celery under strict FIFO lines and global limits."""
    rt = ctx.ensure_object(Runtime)
    rt.overrides.update({k: v for k, v in (("url", url), ("token", token)) if v is not None})
    rt.serving = ctx.invoked_subcommand in SERVING
    ctx.call_on_close(rt.close)


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
    from policies import pack_files

    files, origins = pack_files.bundle(path)
    try:
        loaded = rt.api.call("load_packs", {"files": files})["items"]
    except client.ApiError as error:
        error.args = (pack_files.here(error.message, origins),)  # the files by their paths here
        raise
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
        # 1: refused (by the API, or before asking it); 2: it cannot run here at all (a bad
        # setting) or got no answer (the API, database or broker down), as for usage errors.
        err_console.print(f"[red]error:[/red] {error.message}", highlight=False)
        sys.exit(2 if isinstance(error, ConfigError) else getattr(error, "exit_code", 1))
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
