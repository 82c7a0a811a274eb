"""The ``usher`` command against a real Postgres: packs, run, queues, executions.

Happy paths go through click's CliRunner (one ``Runtime`` per invocation, so settings are read
from the environment each time); error paths run the real entry point in a subprocess to see
its exit code and stderr. No worker runs: executions stay ``scheduled`` or ``queued``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from app import cli, config, db, queries
from tests.support import invariants, workers

# Every command here runs against this test's database, broker and home (the cli_env fixture).
pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("cli_env")]

REPO = Path(__file__).resolve().parents[2]
EXECUTION_FIELDS = {
    "id",
    "action_ref",
    "status",
    "parameters",
    "priority",
    "seq",
    "attempt",
    "enqueued_at",
    "scheduled_at",
    "started_at",
    "finished_at",
    "worker",
    "result",
    "error",
}
LINE_FIELDS = {
    "action_ref",
    "partition",
    "queue_length",
    "active_count",
    "max_concurrent",
    "total_enqueued",
    "total_completed",
    "total_failed",
    "total_cancelled",
    "total_expired",
    "oldest_enqueued_at",
    "oldest_wait_s",
}


def write_pack(
    root: Path, actions: list[dict[str, Any]], policy: dict[str, Any] | None = None
) -> tuple[str, Path]:
    """Write a pack directory under ``root`` (not loaded); return its name and path."""
    name = f"c{uuid.uuid4().hex[:8]}"
    directory = root / name
    (directory / "actions").mkdir(parents=True)
    meta = {"name": name, "description": "from the CLI tests", "policy": policy or {}}
    (directory / "pack.yaml").write_text(yaml.safe_dump(meta))
    for action in actions:
        (directory / "actions" / f"{action['name']}.yaml").write_text(yaml.safe_dump(action))
    return name, directory


LINE_OF_ONE = {
    "name": "job",
    "runner": "noop",
    "policy": {"concurrency": 1},
    "parameters": {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "host": {"type": "string"}},
    },
}


def usher(*args: str) -> Result:
    """Run ``usher ARGS`` in-process; it must succeed."""
    result = CliRunner().invoke(cli.main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def usher_json(*args: str) -> Any:
    return json.loads(usher(*args, "--json").stdout)


def usher_process(settings: config.Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``usher`` entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=workers.environment(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.fixture
def pack(tmp_path: Path) -> str:
    """A loaded pack with a line of one (``job``) and a free action (``free``)."""
    name, directory = write_pack(
        tmp_path / "packs", [LINE_OF_ONE, {"name": "free", "runner": "noop"}]
    )
    usher("packs", "load", str(directory))
    return name


def run(ref: str, *args: str) -> int:
    result = usher("run", ref, *args)
    return int(result.stdout.strip())


# --- packs load -----------------------------------------------------------------------------


def test_packs_load_registers_actions(engine: Engine, tmp_path: Path) -> None:
    # Given a pack directory on disk
    name, directory = write_pack(
        tmp_path, [LINE_OF_ONE, {"name": "free", "runner": "noop"}], policy={"concurrency": 2}
    )
    # When it is loaded
    loaded = usher_json("packs", "load", str(directory))
    # Then the command reports it and the actions are registered
    assert loaded == [{"pack": name, "actions": ["free", "job"]}]
    with db.unit_of_work(engine) as session:
        job = queries.action_row(session, f"{name}.job")
        free = queries.action_row(session, f"{name}.free")
    assert job["runner"] == "noop" and job["policy"] == {"concurrency": 1}
    assert job["pack_policy"] == {"concurrency": 2}
    assert free["parameters"] == {}


def test_packs_load_a_directory_of_packs_and_reload(engine: Engine, tmp_path: Path) -> None:
    # Given two packs under one directory
    root = tmp_path / "many"
    first, _ = write_pack(root, [{"name": "a", "runner": "noop"}])
    second, second_dir = write_pack(root, [{"name": "b", "runner": "noop"}])
    # When the directory is loaded (table output)
    out = usher("packs", "load", str(root)).stdout
    assert first in out and second in out
    # And one pack is changed and loaded again
    action = {"name": "b", "runner": "sleep", "description": "changed"}
    (second_dir / "actions" / "b.yaml").write_text(yaml.safe_dump(action))
    usher("packs", "load", str(second_dir))
    # Then the action is updated in place
    with db.unit_of_work(engine) as session:
        row = queries.action_row(session, f"{second}.b")
        refs = [a["ref"] for a in queries.actions(session)]
    assert (row["runner"], row["description"]) == ("sleep", "changed")
    assert refs == sorted([f"{first}.a", f"{second}.b"])


def test_packs_load_refuses_an_invalid_pack(settings: config.Settings, tmp_path: Path) -> None:
    _, directory = write_pack(tmp_path, [{"name": "bad", "runner": "teleport"}])
    done = usher_process(settings, "packs", "load", str(directory))
    assert done.returncode == 1
    # (rich may wrap the line; see test_error_messages_are_one_unwrapped_line)
    message = "".join(done.stderr.splitlines())
    assert "actions/bad.yaml" in message and "teleport" in message
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_error_messages_are_one_unwrapped_line(settings: config.Settings, tmp_path: Path) -> None:
    _, directory = write_pack(tmp_path, [{"name": "bad", "runner": "teleport"}])
    done = usher_process(settings, "packs", "load", str(directory))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(directory / "actions" / "bad.yaml") in lines[0]


# --- run ------------------------------------------------------------------------------------


def test_run_prints_the_new_execution_id(engine: Engine, pack: str) -> None:
    # When two executions are requested on a line of one
    first = run(f"{pack}.job", "n=1", "host=db1")
    second = run(f"{pack}.job", "n=2", "--priority", "7")
    # Then each id is printed and the parameters and priority are stored
    assert second > first
    with db.unit_of_work(engine) as session:
        one = queries.execution(session, first)
        two = queries.execution(session, second)
    assert (one["status"], one["parameters"], one["priority"]) == (
        "scheduled",
        {"n": 1, "host": "db1"},
        0,
    )
    assert (two["status"], two["parameters"], two["priority"]) == ("queued", {"n": 2}, 7)


def test_run_json(pack: str) -> None:
    first = usher_json("run", f"{pack}.free")
    second = usher_json("run", f"{pack}.free")
    # The API's answer: id, status, place in line (none for one granted at once)
    assert first == {"id": first["id"], "status": "scheduled", "position": None, "seq": 1}
    assert second["id"] > first["id"] and second["seq"] == 2
    shown = [usher_json("executions", "show", str(e["id"]))["seq"] for e in (first, second)]
    assert shown == [1, 2]


def test_run_errors_are_one_message_and_exit_1(settings: config.Settings, pack: str) -> None:
    unknown = usher_process(settings, "run", f"{pack}.nothing")
    assert unknown.returncode == 1
    assert f"{pack}.nothing" in unknown.stderr and "Traceback" not in unknown.stderr
    invalid = usher_process(settings, "run", f"{pack}.job", "n=notanumber")
    assert invalid.returncode == 1
    assert "parameters.n" in invalid.stderr and "Traceback" not in invalid.stderr
    malformed = usher_process(settings, "run", f"{pack}.job", "novalue")
    assert malformed.returncode == 2
    assert "key=value" in malformed.stderr


# --- queues ---------------------------------------------------------------------------------


def test_queues_json_shows_each_line(pack: str) -> None:
    # Given three on the line of one
    for n in range(3):
        run(f"{pack}.job", f"n={n}")
    # When the lines are listed
    rows = {row["action_ref"]: row for row in usher_json("queues")}
    # Then
    job, free = rows[f"{pack}.job"], rows[f"{pack}.free"]
    assert LINE_FIELDS <= set(job)
    assert job["partition"] == ""
    assert (job["queue_length"], job["active_count"], job["max_concurrent"]) == (2, 1, 1)
    assert (job["total_enqueued"], job["total_completed"], job["total_cancelled"]) == (3, 0, 0)
    assert job["oldest_enqueued_at"] is not None and job["oldest_wait_s"] >= 0
    assert (free["total_enqueued"], free["max_concurrent"]) == (0, 10)
    assert free["oldest_wait_s"] is None


def test_queues_table(pack: str) -> None:
    run(f"{pack}.job")
    out = usher("queues").stdout
    job_line = next(line for line in out.splitlines() if f"{pack}.job" in line)
    assert "1/1" in job_line


# --- executions -----------------------------------------------------------------------------


def test_executions_list_json_newest_first_with_filters(pack: str) -> None:
    job = [run(f"{pack}.job", f"n={n}") for n in range(3)]
    free = [run(f"{pack}.free") for _ in range(2)]

    def ids(*args: str) -> list[int]:
        return [row["id"] for row in usher_json("executions", "list", *args)]

    assert ids() == sorted(job + free, reverse=True)
    assert ids("--action", f"{pack}.free") == [free[1], free[0]]
    assert ids("--status", "queued") == [job[2], job[1]]
    assert ids("--action", f"{pack}.job", "--status", "scheduled") == [job[0]]
    assert ids("--limit", "2") == sorted(job + free, reverse=True)[:2]
    for row in usher_json("executions", "list"):
        assert EXECUTION_FIELDS <= set(row)


def test_executions_list_table(pack: str) -> None:
    execution_id = run(f"{pack}.job")
    out = usher("executions", "list").stdout
    line = next(line for line in out.splitlines() if f"{pack}.job" in line)
    assert str(execution_id) in line and "scheduled" in line


def test_executions_show_json(pack: str) -> None:
    # Given one holding the slot and one waiting
    first = run(f"{pack}.job", "n=1", "--priority", "3")
    second = run(f"{pack}.job", "n=2")
    # When shown
    one = usher_json("executions", "show", str(first))
    two = usher_json("executions", "show", str(second))
    # Then every field is there
    assert EXECUTION_FIELDS <= set(one)
    assert (one["id"], one["action_ref"], one["status"]) == (first, f"{pack}.job", "scheduled")
    assert (one["parameters"], one["priority"], one["seq"], one["attempt"]) == ({"n": 1}, 3, 1, 1)
    assert one["scheduled_at"] is not None and one["finished_at"] is None
    assert one["position"] is None
    assert (two["status"], two["seq"], two["position"]) == ("queued", 2, 1)


def test_executions_show_table(pack: str) -> None:
    execution_id = run(f"{pack}.job", "n=5")
    out = usher("executions", "show", str(execution_id)).stdout
    assert f"{pack}.job" in out and "scheduled" in out and '{"n": 5}' in out


def test_executions_cancel(engine: Engine, settings: config.Settings, pack: str) -> None:
    # Given one holding the slot and one waiting
    first = run(f"{pack}.job", "n=1")
    second = run(f"{pack}.job", "n=2")
    # When the one holding the slot is cancelled
    out = usher("executions", "cancel", str(first)).stdout
    # Then it is cancelled, the next gets the slot, and the counters agree
    assert f"execution {first}: cancelled (was scheduled)" in out
    assert usher_json("executions", "show", str(first))["status"] == "cancelled"
    assert usher_json("executions", "show", str(second))["status"] == "scheduled"
    assert invariants.counter_mismatches(engine) == []
    # And cancelling again is refused with one message
    again = usher_process(settings, "executions", "cancel", str(first))
    assert again.returncode == 1
    assert "already cancelled" in again.stderr and "Traceback" not in again.stderr


def test_executions_cancel_a_queued_one(pack: str) -> None:
    run(f"{pack}.job")
    waiting = run(f"{pack}.job")
    out = usher("executions", "cancel", str(waiting)).stdout
    assert f"execution {waiting}: cancelled (was queued)" in out
    assert usher_json("executions", "list", "--status", "cancelled")[0]["id"] == waiting


def test_unknown_execution_is_one_message(settings: config.Settings, pack: str) -> None:
    for command in ("show", "cancel"):
        done = usher_process(settings, "executions", command, "987654")
        assert done.returncode == 1
        assert "987654" in done.stderr and "Traceback" not in done.stderr
