"""Where a template may not stand in an action's runner_config: places a program would read
as code (a shell's command string, an interpreter's ``-c`` script, a remote command) or that
choose what runs (the program, the entry point, the loader's environment).

A value rendered into any of them would let an event payload or a request decide what is
executed. Checked at pack load (``policies.packs``) and again by the worker (``tasks.runners``),
for actions stored before the check existed. Values belong in argv elements after the
script (``[sh, -c, 'ping -c 1 -- "$1"', sh, "{{ parameters.host }}"]``) or in ``env``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from policies import templates

Problem = tuple[list[Any], str]  # (the path of the value in runner_config, what is wrong)

# Programs that run their ``-c`` (or ``-e``, ...) argument as code: flag letters per program.
_INLINE_FLAGS = {
    **dict.fromkeys(("sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "yash", "posh"), "c"),
    **dict.fromkeys(("csh", "tcsh", "fish", "su", "runuser", "pwsh", "busybox"), "c"),
    **dict.fromkeys(("python", "pypy", "tclsh"), "c"),
    **dict.fromkeys(("perl", "ruby", "node", "nodejs", "deno", "lua", "luajit"), "eE"),
    "php": "r",
}
_LONG_INLINE = frozenset({"--command", "--eval", "--print", "--exec"})
# Programs whose first operand is code, flag or not.
_PROGRAM_FIRST = frozenset({"awk", "gawk", "mawk", "nawk", "sed", "jq", "xargs", "eval"})
# Programs that hand the rest of the line to a shell elsewhere.
_REMOTE = frozenset({"ssh", "rsh", "docker", "kubectl", "podman", "nsenter", "script"})
# Options whose value is the next argument (not the script).
_VALUE_OPTIONS = frozenset({"-o", "+o", "-O", "+O", "--rcfile", "--init-file", "-W", "-X"})
# Environment variables that choose what is loaded or run.
_DANGEROUS_ENV = re.compile(
    r"^(LD_\w+|DYLD_\w+|PATH|IFS|ENV|BASH_ENV|BASH_FUNC_\w+|SHELLOPTS|BASHOPTS|PS4|PROMPT_COMMAND"
    r"|PYTHON\w*|PERL5?\w*|RUBY\w*|NODE_\w+|GCONV_PATH|GIT_\w+|HOME|TMPDIR)$"
)
_VERSION = re.compile(r"[\d.]+$")

STRING_COMMAND = (
    "a template in a string command is run by /bin/sh, which would interpret the value; "
    'use the argv form (command: [/usr/bin/ping, -c, "1", --, "{{ parameters.host }}"]) '
    'or parameters_as: env ("$USHER_PARAM_HOST", quoted, in the command)'
)
INLINE_SCRIPT = (
    "a template in code that a program interprets (a shell's -c script, an interpreter's "
    "-c/-e, a remote command) would run the value as code; pass it as an argument after "
    'the script ([sh, -c, \'ping -c 1 -- "$1"\', sh, "{{ parameters.host }}"]) or in env'
)
PROGRAM = "the program to run cannot be a template: a value would choose what runs"
ENTRY_POINT = "the entry point cannot be a template: a value would choose the function called"
ENV = "cannot be a template: a value would choose what the program loads or runs"


def _program(argument: Any) -> str:
    return _VERSION.sub("", os.path.basename(str(argument)))


def _script_index(argv: list[Any], start: int, flags: str) -> int | None:
    """The index of the code argument of the program at ``start`` (None if it has none)."""
    inline, skip = not flags, False
    for index in range(start + 1, len(argv)):
        text = str(argv[index])
        if skip:
            skip = False
            continue
        if text == "--":
            continue
        if text in _VALUE_OPTIONS:
            skip = True
            continue
        if text in _LONG_INLINE:
            inline = True
            continue
        if len(text) > 1 and text[0] in "-+":
            inline |= text[0] == "-" and not text.startswith("--") and any(f in text for f in flags)
            continue
        return index if inline else None
    return None


def _argv_problem(argv: list[Any]) -> Problem | None:
    if argv and templates.has_template(argv[0]):
        return ["command", 0], PROGRAM
    for start, argument in enumerate(argv):
        name = _program(argument)
        if name in _REMOTE:
            for index in range(start + 1, len(argv)):
                if templates.has_template(argv[index]):
                    return ["command", index], INLINE_SCRIPT
            return None
        flags = "" if name in _PROGRAM_FIRST else _INLINE_FLAGS.get(name)
        if flags is None:
            continue
        script = _script_index(argv, start, flags)
        if script is not None and templates.has_template(argv[script]):
            return ["command", script], INLINE_SCRIPT
    return None


def problem(runner: str, config: Any) -> Problem | None:
    """Why ``config`` (an action's runner_config) lets a value choose what runs, or None."""
    if not isinstance(config, dict):
        return None
    if runner == "python" and templates.has_template(config.get("entry_point")):
        return ["entry_point"], ENTRY_POINT
    if runner != "shell":
        return None
    command = config.get("command")
    if isinstance(command, str) and templates.has_template(command):
        return ["command"], STRING_COMMAND
    if isinstance(command, list):
        found = _argv_problem(command)
        if found is not None:
            return found
    env = config.get("env")
    if templates.has_template(env):
        return ["env"], ENV
    for name, value in (env or {}).items() if isinstance(env, dict) else ():
        if templates.has_template(name):
            return ["env", name], ENV
        if _DANGEROUS_ENV.match(str(name)) and templates.has_template(value):
            return ["env", name], ENV
    if templates.has_template(config.get("cwd")):
        return ["cwd"], "the working directory cannot be a template"
    return None
