"""The README's "Try it" block, run as written against a running ``usher up --demo``."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from app import config
from tests.acceptance.test_up import DASHBOARD, TOKEN, Up, start_up, up_env

__all__ = ["start_up"]  # the fixture, used by name below

pytestmark = pytest.mark.timeout(420)

README = Path(__file__).resolve().parents[2] / "README.md"


def try_it() -> str:
    """The first ``sh`` block after the README's "## Try it" heading."""
    section = README.read_text().split("## Try it", 1)[1]
    found = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert found, "README.md has no sh block under ## Try it"
    return found.group(1)


def test_the_try_it_block_is_there_and_names_usher_commands() -> None:
    commands = [line for line in try_it().splitlines() if line.strip()]
    assert len(commands) >= 8
    assert all("usher " in line for line in commands)


def test_every_command_of_try_it_runs_as_written(
    settings: config.Settings, start_up: Callable[..., Up]
) -> None:
    # Given usher up --demo, as the README's first command leaves it
    env = up_env(settings.home, settings.database_url, settings.broker_url)
    up = start_up(env, "--demo")
    up.wait_for(DASHBOARD)
    up.wait_for(TOKEN)
    # When every line of the block runs in one shell, as a reader pastes it, stopping at the
    # first that fails
    bin_dir = str(Path(sys.executable).parent)  # where pip put the `usher` command
    script = "set -euo pipefail\ntrap 'echo \"failed: $BASH_COMMAND\" >&2' ERR\n" + try_it()
    done = subprocess.run(
        ["bash", "-c", script],
        env=env | {"PATH": f"{bin_dir}:{env.get('PATH', '')}"},
        cwd=settings.home.parent,
        capture_output=True,
        text=True,
        timeout=360,
    )
    # Then each one exited 0
    assert done.returncode == 0, f"{done.stderr[-3000:]}\n--- stdout ---\n{done.stdout[-2000:]}"
    assert "failed:" not in done.stderr
