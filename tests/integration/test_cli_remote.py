"""The CLI through the API (CONTRACT "CLI through the API"), against one deployment: the
demo pack (plus a pool) in the test's Postgres, the API served by waitress on 127.0.0.1.

- every listing run on the database and through ``--url`` gives the same ``--json``, and
  every mutation the same answer (its ``--json``, or its line with the ids in it);
- a read-only token lists, and is refused every mutation with exit code 1 and the API's
  403 message on one line, leaving the deployment as it was and a refused audit row;
- a command through the API needs no database setting: a process with none, and a home
  with no embedded Postgres, works;
- each route ``app.cli.client`` calls is in the OpenAPI document, as it names it.

No worker runs: what is asked to run stays queued or scheduled, which keeps the answers of
the two modes comparable.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from app import cli, config
from app.cli import client
from web import apidoc

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = "error: This token is read-only; use an admin token."
# What changes between two looks with nothing done in between: clocks and a token's use.
VOLATILE = {"oldest_wait_s", "last_used_at", "eta", "eta_s"}
WAITED = re.compile(r"\d+\.\ds")


@pytest.fixture
def settings(api_settings: config.Settings) -> config.Settings:
    return api_settings


@dataclass
class Deployment:
    url: str
    admin: str  # a stored admin token's value
    reader: str  # a read-only one's
    packs: Path
    local_env: dict[str, str | None]

    def env(self, token: str | None) -> dict[str, str | None]:
        """The environment of a command through the API with ``token``: no database, no
        broker, a home with nothing in it."""
        removed: dict[str, str | None] = {k: None for k in self.local_env if k.startswith("USHER")}
        return removed | {
            "USHER_URL": self.url,
            "USHER_TOKEN": token,
            "USHER_HOME": str(self.packs.parent / "empty-home"),
        }


@dataclass
class Done:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def usher(env: dict[str, str | None], *args: str) -> Done:
    """``usher ARGS`` in this process as the ``usher`` script runs it (``app.cli.entry``:
    its exit codes and one-line errors), in ``env``."""
    runner = CliRunner()
    with runner.isolation(env=env) as (out, err, _):
        saved, sys.argv = sys.argv, ["usher", *args]
        try:
            cli.entry()
            code = 0
        except SystemExit as exiting:
            code = exiting.code if isinstance(exiting.code, int) else 1
        finally:
            sys.argv = saved
    return Done(code, out.getvalue().decode(), err.getvalue().decode())


@pytest.fixture
def deployment(
    engine: Engine, settings: config.Settings, served: int, cli_env: None, tmp_path: Path
) -> Deployment:
    packs = tmp_path / "packs"
    shutil.copytree(REPO / "examples" / "packs", packs)
    meta = packs / "demo" / "pack.yaml"
    meta.write_text(meta.read_text() + "pools:\n  reports: 2\n")
    report = packs / "demo" / "actions" / "slow_report.yaml"
    report.write_text(report.read_text() + "  pools: [reports]\n")
    local = {k: v for k, v in os.environ.items() if k.startswith("USHER_")}
    assert usher(local, "packs", "load", str(packs)).code == 0
    admin = usher(local, "tokens", "create", "remote-admin").out.strip()
    reader = usher(local, "tokens", "create", "remote-reader", "--read-only").out.strip()
    return Deployment(f"http://127.0.0.1:{served}", admin, reader, packs, dict(local))


def _steady(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _steady(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_steady(v) for v in value]
    return value


def test_every_listing_gives_the_same_json_on_the_database_and_through_the_api(
    deployment: Deployment,
) -> None:
    # Given executions waiting and one event
    local = deployment.local_env
    for n in range(3):
        assert usher(local, "run", "demo.slow_report", "seconds=1", f"n={n}").code == 0
    assert usher(local, "events", "send", "alert", "--timeout", "0").code == 0
    listings = [
        ["queues"],
        ["actions", "list"],
        ["actions", "show", "demo.slow_report"],
        ["executions", "list"],
        ["executions", "list", "--param", "n=1"],
        ["executions", "show", "2"],
        ["events", "list"],
        ["dlq", "list"],
        ["schedules", "list"],
        ["webhooks", "list"],
        ["pools", "list"],
        ["audit", "list"],
        ["packs", "list"],
        ["rules", "list"],
        ["rules", "show", "demo.hello_on_push"],
        ["tokens", "list"],
    ]
    for token in (deployment.admin, deployment.reader):
        for listing in listings:
            # When each is run in both modes
            here = usher(local, *listing, "--json")
            there = usher(deployment.env(token), *listing, "--json")
            # Then both succeed with the same JSON
            assert (here.code, there.code) == (0, 0), (listing, here.err, there.err)
            assert _steady(here.json()) == _steady(there.json()), listing
        # And the tables are the same too (but for how long the oldest has waited)
        for listing in (["queues"], ["rules", "list"], ["pools", "list"]):
            here, there = usher(local, *listing).out, usher(deployment.env(token), *listing).out
            assert WAITED.sub("", here) == WAITED.sub("", there), listing


def _shape(value: Any) -> Any:
    """A JSON answer's keys, all the way down (the values of two requests differ)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def _same_answer(deployment: Deployment, *args: str, ids: tuple[int, int] | None = None) -> Done:
    """Run ``args`` on the database, then through the API (admin); the two answers must be
    the same but for the ids (``ids``: the one each mode acted on). The API's."""
    here = usher(deployment.local_env, *args)
    there = usher(deployment.env(deployment.admin), *args)
    assert here.code == there.code, (args, here, there)
    if ids is not None:
        there = Done(there.code, there.out.replace(str(ids[1]), str(ids[0])), there.err)
    if args[-1] == "--json" and here.code == 0:
        assert _shape(here.json()) == _shape(there.json()), args
    else:
        assert (here.out, here.err) == (there.out, there.err), args
    return there


def test_every_mutation_answers_the_same_in_both_modes_and_is_audited(
    deployment: Deployment, engine: Engine
) -> None:
    local, remote = deployment.local_env, deployment.env(deployment.admin)
    # Each mode runs every mutation once
    _same_answer(deployment, "packs", "load", str(deployment.packs), "--json")
    first = usher(local, "run", "demo.slow_report", "seconds=1", "--json").json()
    second = usher(remote, "run", "demo.slow_report", "seconds=1", "--json").json()
    assert first.keys() == second.keys() == {"id", "status", "position", "seq"}
    for verb in ("pause", "resume"):
        _same_answer(deployment, "actions", verb, "demo.slow_report")
    _same_answer(deployment, "actions", "set", "demo.slow_report", "--concurrency", "2")
    _same_answer(deployment, "pools", "set", "demo.reports", "--limit", "3")
    _same_answer(deployment, "rules", "disable", "demo.hello_on_push")
    _same_answer(deployment, "rules", "enable", "demo.hello_on_push")
    _same_answer(deployment, "schedules", "pause", "demo.heartbeat")
    assert usher(remote, "schedules", "resume", "demo.heartbeat").code == 0
    _same_answer(deployment, "events", "send", "alert", "--timeout", "0", "--json")
    _same_answer(deployment, "executions", "rerun", str(first["id"]), "seconds=2", "--json")
    here = usher(local, "executions", "cancel", str(first["id"]))
    there = usher(remote, "executions", "cancel", str(second["id"]))
    assert there.out.replace(str(second["id"]), str(first["id"])) == here.out
    _same_answer(deployment, "actions", "cancel-waiting", "demo.slow_report")
    _same_answer(deployment, "dlq", "purge", "--yes")
    # Refusals answer alike, with exit code 1 and the API's message
    refused = _same_answer(deployment, "executions", "cancel", str(first["id"]))
    assert refused.code == 1 and refused.err.strip().endswith("is already cancelled")
    unknown = _same_answer(deployment, "events", "replay", "999999")
    assert unknown.code == 1 and len(unknown.err.strip().splitlines()) == 1
    for name, token_env in (("made-here", local), ("made-there", remote)):
        assert usher(token_env, "tokens", "create", name).code == 0
        assert usher(token_env, "tokens", "revoke", name).code == 0
    # And the audit names who did each: the CLI's user here, the token's name there
    with engine.connect() as connection:
        actors = dict(
            connection.execute(
                text("SELECT actor, count(*) FROM audit GROUP BY actor ORDER BY actor")
            ).all()
        )
    assert set(actors) == {f"cli:{getpass.getuser()}", "remote-admin"}
    assert actors["remote-admin"] >= 17


MUTATIONS = [
    ["run", "demo.hello"],
    ["packs", "load", "{packs}"],
    ["actions", "pause", "demo.hello"],
    ["actions", "set", "demo.hello", "--concurrency", "9"],
    ["actions", "cancel-waiting", "demo.hello"],
    ["pools", "set", "demo.reports", "--limit", "9"],
    ["rules", "disable", "demo.hello_on_push"],
    ["schedules", "pause", "demo.heartbeat"],
    ["events", "send", "alert", "--timeout", "0"],
    ["executions", "cancel", "1"],
    ["executions", "rerun", "1"],
    ["dlq", "purge", "--yes"],
    ["tokens", "create", "sneaky"],
    ["tokens", "revoke", "remote-admin"],
]


def test_a_read_only_token_lists_and_is_refused_every_mutation(
    deployment: Deployment, engine: Engine
) -> None:
    assert usher(deployment.local_env, "run", "demo.hello").code == 0
    reader = deployment.env(deployment.reader)
    before = [
        usher(reader, *listing, "--json").json() for listing in (["queues"], ["rules", "list"])
    ]
    for mutation in MUTATIONS:
        args = [a.format(packs=deployment.packs) for a in mutation]
        # When a read-only token asks for it
        done = usher(reader, *args)
        # Then it exits 1 with the API's message, one line, and nothing on stdout
        assert (done.code, done.err.strip(), done.out) == (1, FORBIDDEN, ""), args
    after = [
        usher(reader, *listing, "--json").json() for listing in (["queues"], ["rules", "list"])
    ]
    assert _steady(after) == _steady(before)
    with engine.connect() as connection:
        refused = connection.execute(
            text("SELECT count(*) FROM audit WHERE actor = 'remote-reader' AND outcome = :o"),
            {"o": "403 forbidden"},
        ).scalar_one()
    assert refused == len(MUTATIONS)


def test_through_the_api_no_database_setting_is_needed(deployment: Deployment) -> None:
    # Given a process with no database, broker or home setting of its own
    home = deployment.packs.parent / "bare-home"
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "USHER_HOME": str(home / ".usher")}
    env |= {"USHER_URL": deployment.url, "USHER_TOKEN": deployment.admin}
    command = [sys.executable, "-m", "app.cli"]
    # When it lists and changes through the API
    listed = subprocess.run(
        [*command, "rules", "list", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    paused = subprocess.run(
        [*command, "actions", "pause", "demo.hello"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then both work, and no embedded Postgres was made for them
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["items"]) == 6
    assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
    assert not (home / ".usher").exists()
    # And without a token, the API's 401 says how to get one
    env.pop("USHER_TOKEN")
    bare = subprocess.run([*command, "queues"], env=env, capture_output=True, text=True, timeout=60)
    assert bare.returncode == 1 and "USHER_TOKEN" in bare.stderr and bare.stdout == ""
    # And a URL where nothing listens is one line, exit code 2
    env |= {"USHER_URL": "http://127.0.0.1:9", "USHER_TOKEN": "x"}
    down = subprocess.run([*command, "queues"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 2 and len(down.stderr.strip().splitlines()) == 1
    assert "cannot reach the API at http://127.0.0.1:9" in down.stderr


def test_every_route_the_client_calls_is_in_the_openapi_document() -> None:
    document = apidoc.document()
    assert client.problems(document) == []
    # The check fails for a route the API does not have
    broken = json.loads(json.dumps(document))
    del broken["paths"]["/api/v1/queues"]
    assert client.problems(broken) == ["queues: GET /api/v1/queues is not in the document"]


def test_a_pack_upload_takes_only_pack_files_and_names_them_as_sent(client: Any) -> None:
    from tests.support import api

    escape = {"files": {"../../tmp/usher-escape/pack.yaml": "name: x\n"}}
    refused = client.post("/api/v1/packs", json=escape, headers=api.AUTH)
    assert refused.status_code == 422
    assert refused.get_json()["error"]["code"] == "invalid_pack"
    assert not Path("/tmp/usher-escape").exists()
    bad = {
        "files": {"shop/pack.yaml": "name: shop\n", "shop/actions/a.yaml": "name: a\nrunner: x\n"}
    }
    answer = client.post("/api/v1/packs", json=bad, headers=api.AUTH)
    assert answer.status_code == 422
    message = answer.get_json()["error"]["message"]
    assert message.startswith("shop/actions/a.yaml:2:") and "usher-packs-" not in message
    listed = client.get("/api/v1/packs", headers=api.AUTH).get_json()["items"]
    assert listed == []  # nothing of a refused upload was loaded
