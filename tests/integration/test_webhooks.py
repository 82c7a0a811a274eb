"""Webhooks end to end: ``POST /hooks/<ref>`` signed as GitHub signs (HMAC-SHA256 of the raw
body) or with a token, against a real Postgres; the rule's execution runs on a real worker.
Deliveries sent twice, or by racing requests, make one event; bodies too big, not JSON or
too deep are refused; the secret never reaches Postgres, an answer or a log line."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import shutil
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

import web
from app import cli, config, db
from app.cli import serve as cli_serve
from policies import events, packs, webhooks
from tests.support.flow import status, wait_for_lock_waits, wait_until
from tests.support.wire import Unreadable, exchange
from tests.support.workers import Pool
from web import groups

pytestmark = pytest.mark.timeout(120)

ADMIN = "admin-token-for-webhook-tests"
GITHUB_SECRET = "gh-hook-secret-7f3a9c2e51"
TOKEN_SECRET = "hook-token-b81d44e0c9"
MIB = 1024 * 1024


@pytest.fixture
def settings(
    db_url: str, broker_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> config.Settings:
    # One secret from the environment, one from the secrets folder (the Docker convention).
    monkeypatch.setenv("USHER_SECRET_WH_TEST_GITHUB", GITHUB_SECRET)
    monkeypatch.delenv("USHER_SECRET_WH_TEST_UNSET", raising=False)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "WH_TEST_TOKEN").write_text(TOKEN_SECRET + "\n")
    return config.load(
        database_url=db_url,
        broker_url=broker_url,
        home=tmp_path / "home",
        api_token=ADMIN,
        secrets_dir=secrets,
    )


def _yaml(document: Any) -> str:
    return json.dumps(document)  # JSON is YAML


@pytest.fixture
def pack(engine: Engine, tmp_path: Path) -> str:
    """A pack with GitHub's push webhook and a rule on it, a token webhook, and one whose
    secret is set nowhere."""
    name = f"gh{uuid.uuid4().hex[:8]}"
    root = tmp_path / "packs" / name
    files = {
        "pack.yaml": {"name": name},
        "actions/record.yaml": {
            "name": "record",
            "runner": "noop",
            "parameters": {
                "type": "object",
                "properties": {"ref": {"type": "string"}, "pusher": {"type": "string"}},
            },
        },
        "rules/on_push.yaml": {
            "name": "on_push",
            "trigger": "github.push",
            "criteria": {"payload.headers.x-github-event": {"eq": "push"}},
            "action": f"{name}.record",
            "parameters": {
                "ref": "{{ event.payload.body.ref }}",
                "pusher": "{{ event.payload.body.pusher.name }}",
            },
        },
        "webhooks/github_push.yaml": {
            "name": "github_push",
            "trigger": "github.push",
            "auth": {
                "hmac_sha256": {
                    "secret": "{{ secrets.WH_TEST_GITHUB }}",
                    "header": "X-Hub-Signature-256",
                    "prefix": "sha256=",
                }
            },
            "delivery_header": "X-GitHub-Delivery",
        },
        "webhooks/tokened.yaml": {
            "name": "tokened",
            "auth": {"token": {"secret": "{{ secrets.WH_TEST_TOKEN }}", "header": "X-Usher-Token"}},
        },
        "webhooks/unset.yaml": {
            "name": "unset",
            "auth": {"hmac_sha256": {"secret": "{{ secrets.WH_TEST_UNSET }}", "header": "X-Sig"}},
        },
    }
    for path, document in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(_yaml(document))
    with db.unit_of_work(engine) as session:
        packs.load(session, root)
    return name


def _signed(body: bytes, secret: str = GITHUB_SECRET) -> str:
    """As GitHub signs a delivery: X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body, hex>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _push(
    client: FlaskClient,
    pack: str,
    body: bytes,
    delivery: str | None = None,
    signature: str | None = None,
    content_type: str = "application/json",
    **headers: str,
) -> Any:
    sent = {"X-GitHub-Event": "push", **headers}
    if signature is not None:
        sent["X-Hub-Signature-256"] = signature
    if delivery is not None:
        sent["X-GitHub-Delivery"] = delivery
    return client.post(
        f"/hooks/{pack}.github_push", data=body, content_type=content_type, headers=sent
    )


PUSH = json.dumps({"ref": "refs/heads/main", "pusher": {"name": "octocat"}}).encode()


def _error(response: Any, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) == {"code", "message"}
    if code is not None:
        assert error["code"] == code
    return str(error["message"])


def _events(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT id, trigger, payload FROM events ORDER BY id")))


@pytest.mark.broker
@pytest.mark.timeout(180)
def test_a_github_signed_push_is_202_and_the_rule_runs_with_a_value_from_the_body(
    engine: Engine, client: FlaskClient, pack: str, worker_pool: Pool
) -> None:
    worker_pool.start(concurrency=1)
    # When GitHub delivers a push, signed with the webhook's secret
    response = _push(client, pack, PUSH, "d-1", _signed(PUSH), Authorization="Bearer nothing")
    # Then it is taken: one event of the webhook's trigger, headers lower-cased, the signature
    # and credentials left out
    assert response.status_code == 202, response.get_data(as_text=True)
    event_id = response.get_json()["event_id"]
    assert response.get_json() == {"event_id": event_id}
    (event,) = _events(engine)
    assert (event.id, event.trigger) == (event_id, "github.push")
    assert event.payload["body"] == json.loads(PUSH)
    headers = event.payload["headers"]
    assert headers["x-github-event"] == "push" and headers["x-github-delivery"] == "d-1"
    assert headers["content-type"] == "application/json"
    assert not {"x-hub-signature-256", "authorization", "cookie"} & set(headers)
    # And a worker matches the rule: the execution runs with values from the body
    with db.unit_of_work(engine) as session:
        wait_until(lambda: events.processed(session, event_id), 60, what="event processed")
    with db.unit_of_work(engine) as session:
        (enforcement,) = events.enforcements(session, event_id)
    assert enforcement["rule"] == f"{pack}.on_push" and enforcement["status"] == "executed"
    execution_id = enforcement["execution_id"]
    wait_until(lambda: status(engine, execution_id) == "succeeded", 60, what="the run")
    with engine.connect() as conn:
        parameters = conn.execute(
            text("SELECT parameters FROM executions WHERE id = :i"), {"i": execution_id}
        ).scalar_one()
    assert parameters == {"ref": "refs/heads/main", "pusher": "octocat"}


def test_a_bad_or_missing_signature_is_401_and_no_bearer_token_stands_in(
    engine: Engine, client: FlaskClient, pack: str
) -> None:
    assert "missing" in _error(_push(client, pack, PUSH, "d-1"), 401, "unauthorized")
    wrong = _signed(PUSH, "another secret")
    assert "does not match" in _error(_push(client, pack, PUSH, "d-1", wrong), 401)
    # Signed for another body, or the right hex without GitHub's prefix
    _error(_push(client, pack, PUSH + b" ", "d-1", _signed(PUSH)), 401)
    _error(_push(client, pack, PUSH, "d-1", _signed(PUSH).removeprefix("sha256=")), 401)
    # An admin bearer token is no webhook credential
    _error(_push(client, pack, PUSH, "d-1", Authorization=f"Bearer {ADMIN}"), 401)
    assert _events(engine) == []
    # And the delivery id of a refused request was not taken
    assert _push(client, pack, PUSH, "d-1", _signed(PUSH)).status_code == 202


def test_failed_signatures_and_unknown_names_are_throttled_like_failed_tokens(
    settings: config.Settings, celery_app: Any, pack: str
) -> None:
    throttled = settings.model_copy(update={"auth_failures_per_minute": 3})
    client = web.create_app(throttled, celery_app).test_client()
    _error(_push(client, pack, PUSH, None, "sha256=00"), 401)
    _error(client.post("/hooks/no.such", json={}), 404)
    _error(_push(client, pack, PUSH, None, "sha256=00"), 401)
    # Then even a good signature from that address waits for the minute to end
    response = _push(client, pack, PUSH, None, _signed(PUSH))
    assert _error(response, 429, "too_many_auth_failures")
    assert int(response.headers["Retry-After"]) >= 1


def test_the_same_delivery_twice_makes_one_event_and_answers_it_again(
    engine: Engine, client: FlaskClient, pack: str
) -> None:
    first = _push(client, pack, PUSH, "72d3162e-cc78-11e3-81ab-4c9367dc0958", _signed(PUSH))
    again = _push(client, pack, PUSH, "72d3162e-cc78-11e3-81ab-4c9367dc0958", _signed(PUSH))
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json() == first.get_json()
    # Another delivery id is another event, and so is each delivery without one
    other = _push(client, pack, PUSH, "another", _signed(PUSH))
    plain = [_push(client, pack, PUSH, None, _signed(PUSH)) for _ in range(2)]
    assert [r.status_code for r in (other, *plain)] == [202, 202, 202]
    assert len({r.get_json()["event_id"] for r in (first, other, *plain)}) == 4
    assert len(_events(engine)) == 4
    # The same id on another webhook is that webhook's own
    token = client.post(
        f"/hooks/{pack}.tokened",
        json={},
        headers={"X-Usher-Token": TOKEN_SECRET, "X-Usher-Delivery": "another"},
    )
    assert token.status_code == 202


def _post_in_threads(app: Flask, pack: str, delivery: str, n: int) -> tuple[list[Any], Any]:
    """``n`` threads sending the same delivery at once; (their answers, a join)."""
    answers: list[Any] = []
    start = threading.Barrier(n)

    def send() -> None:
        client = app.test_client()
        start.wait(timeout=20)
        answers.append(_push(client, pack, PUSH, delivery, _signed(PUSH)))

    threads = [threading.Thread(target=send) for _ in range(n)]
    for thread in threads:
        thread.start()

    def join() -> None:
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a request never finished"

    return answers, join


@pytest.mark.parametrize("first_commits", [True, False])
def test_racing_deliveries_of_one_id_make_one_event(
    engine: Engine, app: Flask, pack: str, first_commits: bool
) -> None:
    # Given a delivery claimed by a transaction still open
    with db.unit_of_work(engine) as session:
        hook = webhooks.find(session, f"{pack}.github_push")
    with db.sessions(engine)() as holder:
        held = webhooks.receive(holder, hook, "race", {"headers": {}, "body": {}})
        # When two requests with the same id arrive meanwhile, they wait on that claim: the
        # batch that stores them (or the first one's, the second waiting in its group behind
        # it, web.groups) waits in Postgres
        answers, join = _post_in_threads(app, pack, "race", 2)
        wait_for_lock_waits(
            engine, 1, timeout=20, what="the requests never came to wait on the first claim"
        )
        # And the first one commits, or rolls back
        if first_commits:
            holder.commit()
        else:
            holder.rollback()
    join()
    ids = {a.get_json()["event_id"] for a in answers}
    statuses = sorted(a.status_code for a in answers)
    # Then there is one event of that delivery whichever way the first one ended
    assert len(ids) == 1
    if first_commits:
        assert ids == {held.event_id} and statuses == [200, 200]
    else:
        assert ids != {held.event_id} and statuses == [200, 202]
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT event_id FROM webhook_deliveries WHERE delivery_id = 'race'")
        ).scalars()
        assert list(stored) == list(ids)
    assert [e.id for e in _events(engine)] == list(ids)


def test_many_requests_racing_one_delivery_make_one_event(
    engine: Engine, app: Flask, pack: str
) -> None:
    answers, join = _post_in_threads(app, pack, "stampede", 8)
    join()
    assert sorted(a.status_code for a in answers) == [200] * 7 + [202]
    assert len({a.get_json()["event_id"] for a in answers}) == 1
    assert len(_events(engine)) == 1


@pytest.mark.timeout(180)
def test_racing_deliveries_are_grouped_and_each_answer_is_stored_and_counted(
    engine: Engine, app: Flask, settings: config.Settings, pack: str
) -> None:
    # Given the app behind waitress with a request thread for each of 32 clients
    server = cli_serve.create_server(app, settings.max_body_bytes, "127.0.0.1", 0, 32)
    serving = threading.Thread(target=server.run, name="waitress", daemon=True)
    serving.start()
    base = f"http://127.0.0.1:{server.effective_port}"
    local = threading.local()
    late: list[int] = []

    def deliver(n: int) -> tuple[str | None, int, int]:
        http = getattr(local, "http", None) or httpx.Client(base_url=base, timeout=60)
        local.http = http
        # 100 delivery ids, each sent by three clients; one request in eight without an id
        delivery = None if n % 8 == 0 else f"g{n % 100}"
        body = json.dumps({"ref": f"refs/heads/b{n}", "pusher": {"name": "octocat"}}).encode()
        headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": _signed(body)}
        if delivery is not None:
            headers["X-GitHub-Delivery"] = delivery
        answer = http.post(
            f"/hooks/{pack}.github_push",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert answer.status_code in (200, 202), answer.text
        event_id: int = answer.json()["event_id"]
        with engine.connect() as conn:  # answered only once committed
            if not conn.execute(
                text("SELECT 1 FROM events WHERE id = :i"), {"i": event_id}
            ).first():
                late.append(event_id)
        return delivery, answer.status_code, event_id

    # When 32 clients send 320 deliveries at once
    try:
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(deliver, range(320)))
    finally:
        server.close()
        serving.join(timeout=10)
    # Then each answer came after its commit, each delivery id made one event (answered
    # 202 once, then 200 with the same event), and a request without an id made its own
    assert late == []
    by_id: dict[str, set[int]] = {}
    for delivery, _, event_id in answers:
        if delivery is not None:
            by_id.setdefault(delivery, set()).add(event_id)
    assert all(len(ids) == 1 for ids in by_id.values())
    accepted = [a for a in answers if a[1] == 202]
    assert len(accepted) == len(by_id) + sum(1 for a in answers if a[0] is None)
    assert len(_events(engine)) == len(accepted)
    # And each request was counted and audited in the transaction that stored it
    with engine.connect() as conn:
        counted = dict(
            (r.outcome, r.count)
            for r in conn.execute(text("SELECT outcome, count FROM webhook_requests"))
        )
        audited = conn.execute(
            text("SELECT count(*) FROM audit WHERE target LIKE '/hooks/%'")
        ).scalar_one()
    assert counted == {"accepted": len(accepted), "duplicate": 320 - len(accepted)}
    assert audited == 320
    # And the deliveries were grouped: fewer transactions than requests
    with app.app_context():
        group = groups.deliveries()
    assert group.items == 320 and group.batches < group.items


def test_a_body_of_2_mib_is_413_before_it_is_read(
    engine: Engine, client: FlaskClient, pack: str
) -> None:
    big = json.dumps({"pad": "x" * 2 * MIB}).encode()
    # From its Content-Length alone: nothing reads the body
    response = client.post(
        f"/hooks/{pack}.github_push",
        environ_overrides={"wsgi.input": Unreadable(), "CONTENT_LENGTH": str(len(big))},
        content_type="application/json",
        headers={"X-Hub-Signature-256": _signed(big)},
    )
    assert "USHER_MAX_BODY_BYTES" in _error(response, 413, "payload_too_large")
    # Sent whole, and chunked (no Content-Length: reading stops at the limit)
    _error(_push(client, pack, big, "big", _signed(big)), 413, "payload_too_large")
    chunked = client.post(
        f"/hooks/{pack}.github_push",
        environ_overrides={"wsgi.input": io.BytesIO(big), "wsgi.input_terminated": True},
        content_type="application/json",
        headers={"X-Hub-Signature-256": _signed(big)},
    )
    _error(chunked, 413, "payload_too_large")
    assert _events(engine) == []


def test_a_body_within_the_limit_but_past_the_payload_cap_is_413(
    engine: Engine, client: FlaskClient, pack: str
) -> None:
    body = json.dumps({"pad": "x" * 300 * 1024}).encode()  # USHER_MAX_PAYLOAD_BYTES: 256 KiB
    message = _error(_push(client, pack, body, "d", _signed(body)), 413, "payload_too_large")
    assert "USHER_MAX_PAYLOAD_BYTES" in message
    assert _events(engine) == []


def test_waitress_answers_413_to_a_2_mib_delivery_from_its_headers(served: int, pack: str) -> None:
    # Only the headers are sent: an answer proves nothing waited for the 2 MiB.
    request = (
        f"POST /hooks/{pack}.github_push HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {2 * MIB}\r\n\r\n"
    ).encode()
    status_line, _, body = exchange(served, request)
    assert status_line.startswith("HTTP/1.1 413"), status_line
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_a_body_that_is_not_json_is_415_and_json_too_deep_is_400(
    engine: Engine, client: FlaskClient, pack: str
) -> None:
    form = b"payload=%7B%7D"
    response = _push(client, pack, form, "f", _signed(form), "application/x-www-form-urlencoded")
    assert "application/json" in _error(response, 415, "unsupported_media_type")
    broken = b'{"ref": '
    _error(_push(client, pack, broken, "b", _signed(broken)), 415, "unsupported_media_type")
    deep = b"[" * 65 + b"]" * 65
    assert "64 levels" in _error(_push(client, pack, deep, "n", _signed(deep)), 400)
    assert _events(engine) == []
    # Any JSON value is a body: a list too
    listed = b"[1, 2]"
    assert _push(client, pack, listed, "l", _signed(listed)).status_code == 202


def test_an_unknown_webhook_is_404_and_nothing_else_is_served_under_hooks(
    client: FlaskClient, pack: str
) -> None:
    assert "no webhook named 'no.such'" in _error(client.post("/hooks/no.such", json={}), 404)
    _error(client.post(f"/hooks/{pack}", json={}), 404)
    _error(client.post("/hooks/", json={}), 404)
    _error(client.get(f"/hooks/{pack}.github_push"), 405)
    _error(client.post("/hooks/x/../../api/v1/events", json={}, headers={}), 404)
    # The webhook's routes answer nothing of the API, even to an admin token
    bearer = {"Authorization": f"Bearer {ADMIN}"}
    _error(client.post("/hooks/api/v1/events", json={"trigger": "t"}, headers=bearer), 404)


def test_a_token_webhook_takes_its_token_from_the_secrets_folder(
    engine: Engine, client: FlaskClient, pack: str
) -> None:
    url = f"/hooks/{pack}.tokened"
    _error(client.post(url, json={"a": 1}, headers={"X-Usher-Token": "nope"}), 401)
    _error(client.post(url, json={"a": 1}), 401)
    taken = client.post(url, json={"a": 1}, headers={"X-Usher-Token": TOKEN_SECRET})
    assert taken.status_code == 202
    (event,) = _events(engine)
    # The default trigger is the webhook's ref; the token is not kept
    assert event.trigger == f"{pack}.tokened" and event.payload["body"] == {"a": 1}
    assert "x-usher-token" not in event.payload["headers"]


def test_a_webhook_whose_secret_is_not_configured_is_503_and_logged_with_its_name(
    client: FlaskClient, pack: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = client.post(f"/hooks/{pack}.unset", json={}, headers={"X-Sig": "x"})
    message = _error(response, 503, "webhook_unavailable")
    assert "WH_TEST_UNSET" not in message and "secret is not configured" in message
    assert "USHER_SECRET_WH_TEST_UNSET" in caplog.text


def test_the_secrets_reach_neither_postgres_nor_an_answer_nor_a_log_line(
    engine: Engine, client: FlaskClient, pack: str, caplog: pytest.LogCaptureFixture
) -> None:
    answers = []
    with caplog.at_level(logging.DEBUG):
        answers.append(_push(client, pack, PUSH, "s1", _signed(PUSH)))
        answers.append(_push(client, pack, PUSH, "s1", _signed(PUSH)))
        answers.append(_push(client, pack, PUSH, "s2", "sha256=00"))
        for token in (TOKEN_SECRET, "wrong"):
            answers.append(
                client.post(f"/hooks/{pack}.tokened", json={}, headers={"X-Usher-Token": token})
            )
        answers.append(client.get("/metrics"))
    assert [a.status_code for a in answers] == [202, 200, 401, 202, 401, 200]
    for answer in answers:
        text_ = answer.get_data(as_text=True) + str(answer.headers)
        assert GITHUB_SECRET not in text_ and TOKEN_SECRET not in text_
    assert GITHUB_SECRET not in caplog.text and TOKEN_SECRET not in caplog.text
    # Every row of every table, as text
    with engine.connect() as conn:
        tables = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        dump = "".join(
            str(
                conn.execute(
                    text(f"SELECT coalesce(string_agg(t::text, ''), '') FROM \"{t}\" t")
                ).scalar_one()
            )
            for t in list(tables)
        )
        events_text = conn.execute(text("SELECT string_agg(payload::text, '') FROM events"))
        assert "x-github-event" in events_text.scalar_one()
    assert "WH_TEST_GITHUB" in dump  # the secret's name is stored, its value is not
    assert GITHUB_SECRET not in dump and TOKEN_SECRET not in dump


def test_requests_are_counted_by_webhook_and_outcome_in_metrics(
    client: FlaskClient, pack: str
) -> None:
    _push(client, pack, PUSH, "m1", _signed(PUSH))
    _push(client, pack, PUSH, "m1", _signed(PUSH))
    _push(client, pack, PUSH, "m2", "sha256=00")
    client.post("/hooks/no.such", json={})
    metrics = client.get("/metrics").get_data(as_text=True)
    ref = f"{pack}.github_push"
    for outcome, webhook in (
        ("accepted", ref),
        ("duplicate", ref),
        ("unauthorized", ref),
        ("unknown", ""),
    ):
        line = f'usher_webhook_requests_total{{outcome="{outcome}",webhook="{webhook}"}} 1.0'
        assert line in metrics, metrics[-2000:]


def test_a_pack_load_updates_and_removes_its_webhooks(
    engine: Engine, client: FlaskClient, pack: str, tmp_path: Path
) -> None:
    root = tmp_path / "packs" / pack
    (root / "webhooks" / "tokened.yaml").unlink()
    path = root / "webhooks" / "github_push.yaml"
    path.write_text(path.read_text().replace("github.push", "github.any"))
    with db.unit_of_work(engine) as session:
        packs.load(session, root)
        listed = webhooks.listing(session)
    assert [(w["ref"], w["trigger"]) for w in listed] == [
        (f"{pack}.github_push", "github.any"),
        (f"{pack}.unset", f"{pack}.unset"),
    ]
    _error(
        client.post(f"/hooks/{pack}.tokened", json={}, headers={"X-Usher-Token": TOKEN_SECRET}), 404
    )
    assert _push(client, pack, PUSH, "x", _signed(PUSH)).status_code == 202
    assert [e.trigger for e in _events(engine)] == ["github.any"]


def test_usher_webhooks_lists_them_with_their_counts(
    settings: config.Settings, client: FlaskClient, pack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _push(client, pack, PUSH, "c1", _signed(PUSH))
    _push(client, pack, PUSH, "c2", "sha256=00")
    assert settings.database_url
    monkeypatch.setenv("USHER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("USHER_HOME", str(settings.home))
    result = CliRunner().invoke(cli.main, ["webhooks", "list", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    listed = {w["ref"]: w for w in json.loads(result.stdout)}
    assert set(listed) == {f"{pack}.{n}" for n in ("github_push", "tokened", "unset")}
    github = listed[f"{pack}.github_push"]
    assert (github["trigger"], github["kind"], github["secret"]) == (
        "github.push",
        "hmac_sha256",
        "WH_TEST_GITHUB",
    )
    assert (github["header"], github["prefix"], github["delivery_header"]) == (
        "X-Hub-Signature-256",
        "sha256=",
        "X-GitHub-Delivery",
    )
    assert (github["accepted"], github["refused"]) == (1, 1)
    assert listed[f"{pack}.tokened"]["delivery_header"] == "X-Usher-Delivery"
    assert GITHUB_SECRET not in result.stdout
    table = CliRunner().invoke(cli.main, ["webhooks", "list"], catch_exceptions=False).stdout
    assert f"/hooks/{pack}.github_push" in table


DOCS = Path(__file__).resolve().parents[2] / "docs" / "triggers.md"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "packs"


def _docs_curl() -> str:
    """The shell block of docs/triggers.md that signs and sends a push with curl."""
    text = DOCS.read_text()
    blocks = text.split("```sh\n")[1:]
    found = [b.split("```", 1)[0] for b in blocks if "openssl dgst" in b]
    assert len(found) == 1, "docs/triggers.md: one ```sh block signs a push with openssl"
    return found[0]


@pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("curl")), reason="needs openssl and curl"
)
def test_the_docs_curl_command_delivers_a_push_to_the_demos_webhook_and_its_rule_matches(
    engine: Engine,
    settings: config.Settings,
    app: Flask,
    served: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the demo pack loaded and its secret set in the web process
    with db.unit_of_work(engine) as session:
        packs.load(session, EXAMPLES)
    secret = "a-long-random-string-for-the-docs"
    monkeypatch.setenv("USHER_SECRET_GITHUB_HOOK", secret)
    script = _docs_curl().replace("http://127.0.0.1:5000", f"http://127.0.0.1:{served}")
    env = {"PATH": os.environ["PATH"], "USHER_SECRET_GITHUB_HOOK": secret}
    # When the documented commands run, twice (a redelivery)
    answers = [
        subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        for _ in range(2)
    ]
    # Then one event, answered twice, and the demo's rule enforces it
    first, second = (json.loads(a.strip().splitlines()[-1]) for a in answers)
    assert first == second and set(first) == {"event_id"}
    with db.unit_of_work(engine) as session:
        processed = events.process(session, settings, first["event_id"])
    assert [(e.rule, e.status) for e in processed.enforcements] == [
        ("demo.hello_on_push", "executed")
    ]
    with engine.connect() as conn:
        who = conn.execute(
            text("SELECT parameters->>'who' FROM executions WHERE id = :i"),
            {"i": processed.enforcements[0].execution_id},
        ).scalar_one()
    assert who.startswith("octocat, who pushed ")
