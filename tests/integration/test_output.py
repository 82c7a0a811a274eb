"""Live output against a real worker: a shell action's stdout grows in Postgres while it runs,
masked and bounded, and the API, the CLI's tail and the dashboard's page read it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

import web
from app import config
from app.cli import processes
from tests.support import packs
from tests.support.flow import status, submit, wait_until
from tests.support.schemas import declaring
from tests.support.workers import Pool, tear_down

# Not marked broker: its subject is the output's store, so the Redis pass leaves it out.
pytestmark = [pytest.mark.timeout(180), pytest.mark.processes]

SECRET = "live-output-secret-4417"
TOKEN = "output-test-admin-token-0123456789"
# A line every 0.3 s for about 2 s; the secret in a line of its own, and split in two by a pause.
TICKS = (
    'for i in 1 2 3 4 5 6 7; do echo "line $i"; sleep 0.3; done; echo "token=$TOKEN"; '
    'printf "half=%s" "$(echo "$TOKEN" | cut -c1-9)"; sleep 1.2; '
    'echo "$TOKEN" | cut -c10-; echo "<b>bold</b>"; echo done >&2'
)
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def output_settings(settings: config.Settings, tmp_path: Path) -> config.Settings:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "X").write_text(SECRET + "\n")
    return settings.model_copy(
        update={
            "secrets_dir": secrets_dir,
            "api_token": TOKEN,
            "output_max_bytes": 4096,
            "insecure_cookies": True,
        }
    )


@pytest.fixture
def pool(output_settings: config.Settings, tmp_path: Path) -> Any:
    pool = Pool(output_settings, tmp_path / "logs")
    yield pool
    tear_down(pool)


def _action(name: str, command: str) -> dict[str, Any]:
    return {
        "name": name,
        "runner": "shell",
        "runner_config": {"command": command, "env": {"TOKEN": "{{ secrets.X }}"}},
        "parameters": declaring(),
        "policy": {"retry": {"max_retries": 0}},
    }


def test_output_grows_while_it_runs_masked_and_bounded(
    engine: Engine,
    output_settings: config.Settings,
    celery_app: Any,
    pool: Pool,
    tmp_path: Path,
) -> None:
    # Given a worker and a shell action that prints a line every 0.3 s, and its secret
    name = packs.load(
        engine,
        tmp_path,
        [_action("ticks", TICKS), _action("chatty", "yes 0123456789 | head -c 20000")],
    )
    pool.start(concurrency=2)
    client = web.create_app(output_settings, celery_app).test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def read(execution_id: int, query: str = "") -> dict[str, Any]:
        answer = client.get(f"/api/v1/executions/{execution_id}/output{query}", headers=headers)
        assert answer.status_code == 200, answer.get_json()
        body: dict[str, Any] = answer.get_json()
        return body

    # When it runs
    [ticks] = submit(engine, output_settings, celery_app, f"{name}.ticks", [{}])
    wait_until(lambda: "line 1" in read(ticks)["stdout"], 15, 0.1, what="the first line")
    early = read(ticks)

    # Then the first lines are there before the end, and the output is not finished
    assert early["finished"] is False and early["attempt"] == 1
    assert "line 7" not in early["stdout"]
    assert status(engine, ticks) == "running"
    wait_until(lambda: read(ticks)["finished"], 30, 0.2, what="the end")
    final = read(ticks)
    assert status(engine, ticks) == "succeeded"
    lines = [f"line {i}" for i in range(1, 8)]
    assert final["stdout"] == "\n".join(lines) + "\ntoken=***\nhalf=***\n<b>bold</b>\n"
    assert final["stderr"] == "done\n"
    assert SECRET[:9] not in final["stdout"] and SECRET[9:] not in final["stdout"]
    assert read(ticks, "?attempt=1") == final

    # And a chatty command's output stops at the bound, with one marker
    [chatty] = submit(engine, output_settings, celery_app, f"{name}.chatty", [{}])
    wait_until(lambda: read(chatty)["finished"], 30, 0.2, what="the chatty one")
    out = read(chatty)["stdout"]
    assert out.startswith("0123456789\n" * 10)
    assert out.count("output truncated") == 1 and len(out.split("\n... [")[0]) == 4096

    # And the dashboard's page and its feed carry it, escaped
    login = CSRF.search(client.get("/login").get_data(as_text=True))
    assert login is not None
    data = {"token": TOKEN, "csrf_token": login.group(1), "next": "/"}
    assert client.post("/login", data=data).status_code == 303
    page = client.get(f"/executions/{ticks}").get_data(as_text=True)
    assert "line 7\ntoken=***" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<b>bold</b>" not in page and SECRET not in page
    feed = client.get(f"/ui/executions/{ticks}/output.json").get_json()
    assert feed["stdout"] == final["stdout"] and feed["finished"] is True

    # And `usher executions tail` prints it all and exits 0 for a succeeded execution
    env = processes.environment(output_settings)
    tail = subprocess.run(
        [sys.executable, "-m", "app.cli", "executions", "tail", str(ticks)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=processes.REPO,
    )
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout == final["stdout"] and "done" in tail.stderr


def test_tail_follows_a_running_execution_until_it_ends(
    engine: Engine,
    output_settings: config.Settings,
    celery_app: Any,
    pool: Pool,
    tmp_path: Path,
) -> None:
    # Given a running shell action that fails at the end, which the test lets come
    go = tmp_path / "go"
    command = (
        'for i in 1 2 3 4 5 6; do echo "step $i"; sleep 0.3; done; '
        f"while [ ! -e {go} ]; do sleep 0.1; done; exit 4"
    )
    name = packs.load(engine, tmp_path, [_action("fails", command)])
    pool.start(concurrency=1)
    [execution] = submit(engine, output_settings, celery_app, f"{name}.fails", [{}])
    # When `usher executions tail` follows it from the start
    tail = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "executions", "tail", str(execution)],
        env=processes.environment(output_settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=processes.REPO,
    )
    assert tail.stdout is not None
    first = tail.stdout.readline()
    while_first = status(engine, execution)
    go.touch()
    assert tail.stderr is not None
    out, err = tail.stdout.read(), tail.stderr.read()
    tail.wait(timeout=60)
    # Then it prints the first line before the end, every line, and exits 1 (dead: it failed)
    assert first == "step 1\n"
    assert while_first == "running"
    assert first + out == "".join(f"step {i}\n" for i in range(1, 7))
    assert tail.returncode == 1 and f"execution {execution}: dead" in err
