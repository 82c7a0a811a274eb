"""Runs a command in a process group of its own, with the parameters as environment or args.

On timeout the group gets SIGTERM, then SIGKILL after ``kill_grace_s``. The group is also
killed when the command exits and whenever the runner is interrupted (Celery's
SoftTimeLimitExceeded, any exception), so nothing the command started outlives the attempt.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from app import secretstore
from tasks.runners import base

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_KILL_GRACE_S = 2.0
# After SIGKILL, how long to keep reading what is left in the pipes: a process that moved
# itself out of the group could hold them open for ever.
DRAIN_S = 1.0
CHUNK_BYTES = 64 * 1024
STDERR_TAIL_CHARS = 500


class _Capture:
    """The first and last ``keep`` bytes of a stream: a chatty command must not fill memory."""

    def __init__(
        self, keep: int = base.MAX_OUTPUT_CHARS, live: base.Output | None = None, name: str = ""
    ) -> None:
        self.keep = keep
        # Everything read goes to the live output too, as it arrives.
        self.live, self.name = live, name
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        if self.live is not None:
            self.live.add(self.name, data)
        self.total += len(data)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > self.keep:
            del self.tail[: len(self.tail) - self.keep]

    def text(self) -> str:
        if self.total == len(self.head) + len(self.tail):
            return base.truncate(bytes(self.head + self.tail).decode(errors="replace"))
        half = base.MAX_OUTPUT_CHARS // 2
        head = secretstore.redact_text(self.head.decode(errors="replace"))[:half]
        tail = secretstore.redact_text(self.tail.decode(errors="replace"))[-half:]
        return base.cut(head, f"\n... [output cut: {self.total} bytes in all] ...\n", tail)


def run(ctx: base.RunContext) -> Any:
    argv = _command(ctx)
    env = _environment(ctx)
    parameters_as = ctx.config.get("parameters_as", "env")
    if parameters_as == "env":
        env.update(_parameters_env(ctx.parameters))
    elif parameters_as == "args":
        argv += [f"--{name}={_text(value)}" for name, value in ctx.parameters.items()]
    else:
        raise base.RunnerError("runner_config.parameters_as must be env or args", permanent=True)
    grace = _seconds(ctx.config.get("kill_grace_s", DEFAULT_KILL_GRACE_S), "kill_grace_s")
    timeout = base.timeout_s(ctx, DEFAULT_TIMEOUT_S, grace)
    retryable, retryable_codes = _retry_policy(ctx)
    stdout = _Capture(live=ctx.output, name="stdout")
    stderr = _Capture(live=ctx.output, name="stderr")
    process = _start(argv, env, ctx.config.get("cwd"))
    try:
        finished = _supervise(process, stdout, stderr, timeout, grace)
    finally:
        # Still unreaped, the leader keeps its pid and so the group id from being reused.
        _signal_group(process, signal.SIGKILL)
        process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    output = {"stdout": stdout.text(), "stderr": stderr.text()}
    if not finished:
        raise base.RunnerTimeout(
            f"the command did not finish within {timeout:g}s",
            details={"exit_code": process.returncode, **output},
        )
    code = process.returncode
    if code == 0:
        return {"exit_code": 0, **output}
    ended = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    tail = output["stderr"][-STDERR_TAIL_CHARS:].strip() or "(nothing on stderr)"
    raise base.RunnerError(
        f"{ended}: {tail}",
        permanent=not (retryable or code in retryable_codes),
        details={"exit_code": code, **output},
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _command(ctx: base.RunContext) -> list[str]:
    command = ctx.config.get("command")
    if isinstance(command, str) and command.strip():
        # "sh" is $0, so that appended --name=value arguments are "$@".
        return ["/bin/sh", "-c", command, "sh"]
    if isinstance(command, list) and command and all(arg is not None for arg in command):
        return [_text(arg) for arg in command]
    raise base.RunnerError(
        "runner_config.command must be a list of arguments or a string", permanent=True
    )


def _environment(ctx: base.RunContext) -> dict[str, str]:
    """A minimal environment: the worker's own (database URL, tokens, ...) is not passed on."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    configured = ctx.config.get("env") or {}
    if not isinstance(configured, Mapping):
        raise base.RunnerError("runner_config.env must be a mapping", permanent=True)
    env.update({str(name): _text(value) for name, value in configured.items()})
    return env


def _parameters_env(parameters: dict[str, Any]) -> dict[str, str]:
    return {
        "USHER_PARAM_" + re.sub(r"[^A-Z0-9_]", "_", name.upper()): _text(value)
        for name, value in parameters.items()
    }


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise base.RunnerError(f"runner_config.{key} must be a number of seconds", permanent=True)
    return float(value)


def _retry_policy(ctx: base.RunContext) -> tuple[bool, set[int]]:
    retryable = ctx.config.get("retryable", False)
    codes = ctx.config.get("retryable_exit_codes") or []
    if not isinstance(retryable, bool):
        raise base.RunnerError("runner_config.retryable must be true or false", permanent=True)
    if not isinstance(codes, list) or not all(
        isinstance(code, int) and not isinstance(code, bool) for code in codes
    ):
        raise base.RunnerError(
            "runner_config.retryable_exit_codes must be a list of integers", permanent=True
        )
    return retryable, set(codes)


def _start(argv: list[str], env: dict[str, str], cwd: Any) -> subprocess.Popen[bytes]:
    if cwd is not None and not isinstance(cwd, str):
        raise base.RunnerError("runner_config.cwd must be a path", permanent=True)
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd or None,
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as error:
        raise base.RunnerError(f"cannot start {argv[0]!r}: {error}", permanent=True) from error
    except OSError as error:
        raise base.RunnerError(f"cannot start {argv[0]!r}: {error}") from error


def _supervise(
    process: subprocess.Popen[bytes],
    stdout: _Capture,
    stderr: _Capture,
    timeout: float,
    grace: float,
) -> bool:
    """Read the output until the command exits (True) or the timeout passes (False; the
    group has been sent SIGTERM and then SIGKILL)."""
    assert process.stdout is not None and process.stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout.fileno(), selectors.EVENT_READ, stdout)
        selector.register(process.stderr.fileno(), selectors.EVENT_READ, stderr)
        deadline = time.monotonic() + timeout
        if _pump(selector, deadline) and _exited(process, deadline):
            return True
        _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        if _pump(selector, deadline):
            _exited(process, deadline)
        _signal_group(process, signal.SIGKILL)
        _pump(selector, time.monotonic() + DRAIN_S)
        return False


def _pump(selector: selectors.BaseSelector, deadline: float) -> bool:
    """Copy output into the captures until both pipes are closed (True) or the deadline."""
    while selector.get_map():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        for key, _ in selector.select(remaining):
            data = os.read(key.fd, CHUNK_BYTES)
            if data:
                key.data.add(data)
            else:
                selector.unregister(key.fileobj)
    return True


def _exited(process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait for the leader to exit without reaping it (WNOWAIT), until the deadline."""
    delay = 0.001
    while True:
        try:
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                return True
        except ChildProcessError:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        delay = min(delay * 2, remaining, 0.05)
        time.sleep(delay)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
