"""The ``usher`` command in-process, for tests that point it at their own database with the
``cli_env`` fixture (tests/integration/conftest.py)."""

from __future__ import annotations

from click.testing import CliRunner

from app import cli


def usher(*args: str) -> str:
    """Run ``usher ARGS``; it must succeed. Its standard output."""
    result = CliRunner().invoke(cli.main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout
