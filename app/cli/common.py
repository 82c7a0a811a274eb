"""What every ``usher`` command shares: the lazily made runtime and the output helpers."""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import click
import sqlalchemy.exc
from celery import Celery
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from app import bounds, config, db
from app import celery as usher_celery
from app.cli import client
from app.errors import ConfigError

# Piped output is not cut to 80 columns: scripts and logs get the whole table.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line


def int_range(bound: bounds.Range[int]) -> click.IntRange:
    """A command-line option with the bounds the API and the pack files take."""
    return click.IntRange(bound.low, bound.high)


DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_s(text: str, bound: bounds.Range[float] = bounds.DELAY_S) -> float:
    """Seconds in ``90s``, ``10m``, ``2h``, ``1d``, ``500ms`` or a bare number of seconds;
    ValueError naming what is wrong (not a duration, or outside ``bound``)."""
    found = DURATION.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 10m, 2h or 1d")
    seconds = float(found[1]) * UNIT_S[found[2] or "s"]
    if not bound.low <= seconds <= bound.high:
        raise ValueError(f"{text!r} is more than {bound.high / 86_400:g} days")
    return seconds


class Duration(click.ParamType):
    """A command-line duration (``duration_s``), as seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return duration_s(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


@dataclass
class Runtime:
    """What a command needs, made on first use: settings, the database, the Celery app."""

    overrides: dict[str, Any] = field(default_factory=dict)
    embedded: bool = False
    serving: bool = False  # a command that serves a process: on the database, never --url

    @cached_property
    def settings(self) -> config.Settings:
        settings = config.load(**self.overrides)
        if not settings.database_url and (self.serving or not settings.url):
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

    def require_schema(self, wait: bool = False) -> None:
        """Stop with one line (what to do) unless the database's schema is this version's.
        With ``wait`` (a serving process starting), a database that does not answer is
        asked again every second for USHER_START_WAIT_S before the one line."""
        deadline = time.monotonic() + (self.settings.start_wait_s if wait else 0)
        said = ""
        while True:
            try:
                problem = db.schema_problem(self.engine)
                break
            except sqlalchemy.exc.OperationalError as error:
                if time.monotonic() >= deadline:
                    raise
                reason = str(error.orig or error).strip().splitlines()[0][:300]
                if reason != said:  # once per distinct reason, not once a second
                    err_console.print(f"waiting for the database: {reason}", highlight=False)
                    said = reason
                time.sleep(1)
        if problem:
            raise ConfigError(problem)

    def close(self) -> None:
        """At the command's end: the API client's connections (a server keeps them alive)."""
        if "api" in self.__dict__:
            self.api.close()

    @cached_property
    def api(self) -> client.Api:
        """The REST API: of ``--url`` with ``--token``, or this process's own (on the
        database, as ``actor()``)."""
        if self.settings.url and not self.serving:
            return client.remote(self.settings.url, self.settings.token)
        self.require_schema()
        return client.local(self.settings, self.celery, actor())


pass_runtime = click.make_pass_decorator(Runtime, ensure=True)


def actor() -> str:
    """Who a command without ``--url`` acts as: ``cli:<os user>`` (the database's credentials
    say no more), in its audit rows and its executions' ``requested_by`` and ``cancelled_by``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return f"cli:uid-{os.getuid()}"


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
