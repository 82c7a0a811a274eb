"""``usher beat`` and ``usher flower`` hand their extra options to Celery and Flower."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from app import celery as usher_celery
from app import cli, db


class FakeCelery:
    def __init__(self) -> None:
        self.argv: list[str] = []

    def start(self, argv: list[str]) -> None:
        self.argv = argv


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCelery:
    app = FakeCelery()
    monkeypatch.setenv("USHER_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1:1/none")
    monkeypatch.setenv("USHER_FLOWER_BASIC_AUTH", "admin:a-long-password")
    monkeypatch.setattr(usher_celery, "create", lambda settings: app)
    monkeypatch.setattr(db, "schema_problem", lambda engine: None)  # no database here
    return app


@pytest.mark.parametrize("args", [["--", "--loglevel", "debug"], ["--loglevel", "debug"]])
def test_beat_passes_options_through(fake: Any, args: list[str]) -> None:
    done = CliRunner().invoke(cli.main, ["beat", *args])
    assert done.exit_code == 0, done.output
    # the default first, so the one given wins
    assert fake.argv[:5] == ["beat", "--loglevel", "INFO", "--scheduler", "tasks.beat:Scheduler"]
    assert fake.argv[5:] == ["--loglevel", "debug"]


def test_flower_passes_options_through_and_keeps_its_auth(fake: Any) -> None:
    done = CliRunner().invoke(cli.main, ["flower", "--", "--port", "5556"])
    assert done.exit_code == 0, done.output
    # tornado reads --name=value only
    assert fake.argv[0] == "flower" and fake.argv[-1] == "--port=5556"
    assert "--basic-auth=admin:a-long-password" in fake.argv


def test_flower_options_are_joined_as_tornado_reads_them() -> None:
    from app.cli import serve

    given = ("--port", "5556", "--debug", "--url_prefix=x", "--max_tasks", "9")
    assert serve.tornado_options(given) == [
        "--port=5556",
        "--debug",
        "--url_prefix=x",
        "--max_tasks=9",
    ]
