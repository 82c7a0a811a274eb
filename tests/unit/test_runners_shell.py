"""The shell runner: real processes, their output, exit codes, timeouts and clean-up."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from billiard.exceptions import SoftTimeLimitExceeded

from tasks import runners
from tasks.runners import base, shell
from tests.support.schemas import declaring

pytestmark = pytest.mark.timeout(60)

PY = sys.executable

# Ignores SIGTERM (so do its children: an ignored signal stays ignored across fork and exec),
# starts a grandchild shell that starts a sleep, and records the three pids.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1], "a") as pids:
    pids.write(f"{os.getpid()}\\n")
subprocess.Popen(["sh", "-c", 'echo $$ >> "$0"; sleep 60 & echo $! >> "$0"; wait', sys.argv[1]])
print("started", flush=True)
print("warming up", file=sys.stderr, flush=True)
time.sleep(60)
"""


def run_shell(
    config: dict[str, Any], parameters: dict[str, Any] | None = None, timeout_s: float = 30
) -> Any:
    return runners.run(
        "shell",
        config,
        parameters or {},
        schema=declaring(*(parameters or {})),
        timeout_s=timeout_s,
    )


def stubborn(tmp_path: Path) -> tuple[list[str], Path]:
    script, pid_file = tmp_path / "stubborn.py", tmp_path / "pids"
    script.write_text(STUBBORN)
    return [PY, str(script), str(pid_file)], pid_file


def read_pids(pid_file: Path, count: int = 3, within_s: float = 10) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        lines = pid_file.read_text().split() if pid_file.exists() else []
        if len(lines) >= count:
            return [int(line) for line in lines]
        time.sleep(0.02)
    raise AssertionError(f"the command did not record {count} pids")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead; it only waits for its new parent (init) to reap it.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return sys.platform != "linux"  # no /proc to tell a zombie by
    return state != "Z"


def assert_all_gone(pids: list[int], within_s: float = 5) -> None:
    deadline = time.monotonic() + within_s
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if alive(pid)] == []


def test_success_captures_stdout_and_stderr() -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr)"
    assert run_shell({"command": [PY, "-c", code]}) == {
        "exit_code": 0,
        "stdout": "out\n",
        "stderr": "err\n",
    }


def test_string_command_runs_with_sh() -> None:
    result = run_shell({"command": "echo one; echo two | tr a-z A-Z"})
    assert result["stdout"] == "one\nTWO\n"


def test_parameters_as_env_over_a_minimal_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a secret in the worker's environment, and an action env and parameters
    monkeypatch.setenv("USHER_DATABASE_URL", "postgresql://secret")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    config = {"command": [PY, "-c", code], "env": {"MODE": "{{ parameters.mode }}", "N": 2}}
    parameters = {"host": "db1", "count": 3, "tags": ["a"], "mode": "fast", "dotted.name": 1}
    # When it runs in a given directory
    result = run_shell({**config, "cwd": str(tmp_path)}, parameters)
    # Then the child sees the minimal environment, the action env and the parameters
    env = json.loads(result["stdout"])
    assert "USHER_DATABASE_URL" not in env
    assert env["PATH"] == os.environ["PATH"]
    assert env["MODE"] == "fast" and env["N"] == "2"
    assert env["USHER_PARAM_HOST"] == "db1"
    assert env["USHER_PARAM_COUNT"] == "3"
    assert env["USHER_PARAM_TAGS"] == '["a"]'
    assert env["USHER_PARAM_DOTTED_NAME"] == "1"


def test_cwd_is_used(tmp_path: Path) -> None:
    result = run_shell(
        {"command": [PY, "-c", "import os; print(os.getcwd())"], "cwd": str(tmp_path)}
    )
    assert Path(result["stdout"].strip()).resolve() == tmp_path.resolve()


def test_parameters_as_args() -> None:
    parameters = {"host": "db1", "count": 3, "force": True}
    result = run_shell(
        {"command": [PY, "-c", "import sys; print(sys.argv[1:])"], "parameters_as": "args"},
        parameters,
    )
    assert result["stdout"] == "['--host=db1', '--count=3', '--force=true']\n"
    result = run_shell({"command": 'echo "$@"', "parameters_as": "args"}, parameters)
    assert result["stdout"] == "--host=db1 --count=3 --force=true\n"


def test_non_zero_exit_is_permanent_with_output() -> None:
    code = "import sys; print('partial'); print('disk full', file=sys.stderr); sys.exit(3)"
    with pytest.raises(base.RunnerError) as raised:
        run_shell({"command": [PY, "-c", code]})
    assert raised.value.permanent
    assert "exit code 3" in str(raised.value) and "disk full" in str(raised.value)
    assert raised.value.details == {"exit_code": 3, "stdout": "partial\n", "stderr": "disk full\n"}


def test_retryable_makes_any_non_zero_exit_transient() -> None:
    with pytest.raises(base.RunnerError) as raised:
        run_shell({"command": "exit 3", "retryable": True})
    assert not raised.value.permanent


@pytest.mark.parametrize(("code", "permanent"), [(75, False), (3, True)])
def test_retryable_exit_codes(code: int, permanent: bool) -> None:
    with pytest.raises(base.RunnerError) as raised:
        run_shell({"command": f"exit {code}", "retryable_exit_codes": [75, 111]})
    assert raised.value.permanent is permanent
    assert raised.value.details["exit_code"] == code


def test_death_by_signal_is_reported() -> None:
    with pytest.raises(base.RunnerError) as raised:
        run_shell({"command": "kill -9 $$"})
    assert "killed by signal 9" in str(raised.value)
    assert raised.value.details["exit_code"] == -9


def test_timeout_kills_a_child_that_ignores_sigterm_and_its_descendants(tmp_path: Path) -> None:
    # Given a command that ignores SIGTERM and has a child and a grandchild
    command, pid_file = stubborn(tmp_path)
    started = time.monotonic()
    # When it outlives its timeout
    with pytest.raises(base.RunnerTimeout) as raised:
        run_shell({"command": command, "timeout_s": 1, "kill_grace_s": 0.5})
    # Then the runner gave up promptly, kept the output so far, and killed the whole group
    assert time.monotonic() - started < 5
    assert not raised.value.permanent
    assert raised.value.details["stdout"] == "started\n"
    assert raised.value.details["stderr"] == "warming up\n"
    assert raised.value.details["exit_code"] == -signal.SIGKILL
    assert_all_gone(read_pids(pid_file))


def test_timeout_lets_a_child_that_honours_sigterm_exit_early() -> None:
    started = time.monotonic()
    with pytest.raises(base.RunnerTimeout) as raised:
        run_shell({"command": [PY, "-c", "import time; time.sleep(60)"], "timeout_s": 0.5})
    assert time.monotonic() - started < 2
    assert raised.value.details["exit_code"] == -signal.SIGTERM


def test_an_exception_while_the_command_runs_kills_the_group(tmp_path: Path) -> None:
    # Given Celery's soft time limit arriving as SIGUSR1 (its prefork pool does exactly this)
    # while the command runs; SIGALRM is left to pytest-timeout
    assert threading.current_thread() is threading.main_thread()
    command, pid_file = stubborn(tmp_path)

    def soft_time_limit(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded()

    def interrupt_once_started() -> None:
        read_pids(pid_file)
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, soft_time_limit)
    interrupter = threading.Thread(target=interrupt_once_started, daemon=True)
    try:
        interrupter.start()
        # When the runner is interrupted
        with pytest.raises(SoftTimeLimitExceeded):
            run_shell({"command": command, "timeout_s": 50}, timeout_s=55)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        interrupter.join(10)
    # Then nothing it started is left running
    assert_all_gone(read_pids(pid_file))


def test_background_children_do_not_outlive_a_successful_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    run_shell({"command": f"sleep 60 >/dev/null 2>&1 & echo $! > {pid_file}"})
    assert_all_gone(read_pids(pid_file, count=1))


def test_long_output_is_truncated() -> None:
    code = "import sys; sys.stdout.write('a' * 60_000 + 'b' * 60_000)"
    result = run_shell({"command": [PY, "-c", code]})
    stdout = result["stdout"]
    assert "characters cut" in stdout
    assert stdout.startswith("a" * 1000) and stdout.endswith("b" * 1000)
    assert len(stdout) < base.MAX_OUTPUT_CHARS + 100


def test_huge_output_is_bounded_while_read() -> None:
    code = "import sys\nfor _ in range(200): sys.stdout.write('x' * 65536)\nsys.stdout.write('END')"
    result = run_shell({"command": [PY, "-c", code]})
    assert "output cut: 13107203 bytes in all" in result["stdout"]
    assert result["stdout"].endswith("END")
    assert len(result["stdout"]) < base.MAX_OUTPUT_CHARS + 100


def test_timeout_is_kept_below_the_action_timeout() -> None:
    def timeout(config: dict[str, Any], action_timeout_s: float | None) -> float:
        return base.timeout_s(
            base.RunContext(config, {}, action_timeout_s), shell.DEFAULT_TIMEOUT_S, 2
        )

    assert timeout({}, None) == 60
    assert timeout({"timeout_s": 5}, None) == 5
    assert timeout({}, 30) == 27  # 30, less a second, less the SIGTERM grace
    assert timeout({"timeout_s": 10}, 30) == 10
    assert timeout({}, 3) == pytest.approx(1.35)  # never less than half of 2.7


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"command": ""},
        {"command": []},
        {"command": {"a": 1}},
        {"command": ["/no/such/program"]},
        {"command": ["true"], "cwd": "/no/such/directory"},
        {"command": ["true"], "parameters_as": "stdin"},
        {"command": ["true"], "env": ["A=1"]},
        {"command": ["true"], "timeout_s": "soon"},
        {"command": ["true"], "retryable": "yes"},
        {"command": ["true"], "retryable_exit_codes": ["75"]},
    ],
)
def test_invalid_config_is_permanent(config: dict[str, Any]) -> None:
    with pytest.raises(base.RunnerError) as raised:
        run_shell(config)
    assert raised.value.permanent
