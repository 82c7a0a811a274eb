"""Places in a runner_config where a template would let a value choose what runs."""

from __future__ import annotations

from typing import Any

import pytest

from policies import commands

T = "{{ parameters.h }}"


@pytest.mark.parametrize(
    "command",
    [
        f"echo hi {T}",
        [T, "-c", "1"],
        ["sh", "-c", f"echo {T}"],
        ["/bin/bash", "--rcfile", "/dev/null", "-c", f"echo {T}"],
        ["bash", "-o", "pipefail", "-ec", f"echo {T}"],
        ["/usr/bin/env", "sh", "-c", f"echo {T}"],
        ["sudo", "-u", "ops", "bash", "-c", f"echo {T}"],
        ["busybox", "sh", "-c", f"echo {T}"],
        ["ash", "-c", T],
        ["/usr/bin/python3.11", "-c", f"print({T})"],
        ["perl", "-e", T],
        ["node", "--eval", T],
        ["awk", f"{{print {T}}}"],
        ["ssh", "db1", f"ls {T}"],
        ["kubectl", "exec", "pod", "--", "ls", T],
    ],
)
def test_a_template_where_code_is_read_is_refused(command: Any) -> None:
    assert commands.problem("shell", {"command": command}) is not None


@pytest.mark.parametrize(
    "command",
    [
        "echo hi",
        ["echo", "hi", T],
        ["/usr/bin/ping", "-c", "1", "--", T],
        ["sh", "-c", 'ping -c 1 -- "$1"', "sh", T],
        ["bash", "-o", "pipefail", "-c", 'echo "$1"', "bash", T],
        ["python3", "-m", "tool", T],
    ],
)
def test_values_as_arguments_are_accepted(command: Any) -> None:
    assert commands.problem("shell", {"command": command}) is None


def test_the_program_entry_point_and_loader_environment_are_not_templates() -> None:
    assert commands.problem("python", {"entry_point": T}) is not None
    assert commands.problem("python", {"entry_point": "os:getcwd"}) is None
    assert commands.problem("shell", {"command": ["env"], "env": T}) is not None
    assert commands.problem("shell", {"command": ["env"], "env": {T: "x"}}) is not None
    for name in ("LD_PRELOAD", "PATH", "BASH_ENV", "PYTHONPATH", "NODE_OPTIONS"):
        assert commands.problem("shell", {"command": ["env"], "env": {name: T}}) is not None
    assert commands.problem("shell", {"command": ["env"], "env": {"HOST": T}}) is None
