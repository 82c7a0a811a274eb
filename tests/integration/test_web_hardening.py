"""Hostile requests to the web process: bodies too big for memory, JSON nested too deep,
values too big for a list, query values that are not ASCII integers, /metrics scraped hard."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

import web
from app import config, queries
from tests.support import packs
from tests.support.api import AUTH, TOKEN, log_in, settings_with_token
from tests.support.flow import submit
from tests.support.wire import Unreadable, exchange

pytestmark = pytest.mark.timeout(120)

LIMIT = 4096


@pytest.fixture
def settings(db_url: str, broker_url: str | None, tmp_path: Path) -> config.Settings:
    return settings_with_token(
        db_url, broker_url, tmp_path, max_body_bytes=LIMIT, insecure_cookies=True
    )


@pytest.fixture
def ref(engine: Engine, tmp_path: Path) -> str:
    return packs.load(engine, tmp_path, [{"name": "job", "runner": "noop"}]) + ".job"


def _payload_too_large(response: Any) -> None:
    assert response.status_code == 413, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "payload_too_large"
    assert "USHER_MAX_BODY_BYTES" in error["message"] and f"{LIMIT:,}" in error["message"]


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/v1/executions", AUTH),
        ("/api/v1/executions", {}),  # unauthenticated: refused before the 401
        ("/api/v1/events", {"Authorization": "Bearer wrong-token"}),
        ("/login", {}),  # the dashboard's form (CSRF would read it)
        ("/hooks/any.hook", {}),
        ("/no/such/route", {}),
    ],
)
def test_a_body_over_the_limit_is_refused_from_its_length_alone(
    client: FlaskClient, path: str, headers: dict[str, str]
) -> None:
    response = client.post(
        path,
        environ_overrides={"wsgi.input": Unreadable(), "CONTENT_LENGTH": str(LIMIT + 1)},
        content_type="application/json",
        headers=headers,
    )
    _payload_too_large(response)


def test_a_chunked_body_stops_being_read_at_the_limit(client: FlaskClient, ref: str) -> None:
    body = json.dumps({"action": ref, "parameters": {"pad": "x" * LIMIT}}).encode()
    response = client.post(
        "/api/v1/executions",
        # No Content-Length, as with Transfer-Encoding: chunked
        environ_overrides={"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True},
        content_type="application/json",
        headers=AUTH,
    )
    _payload_too_large(response)
    fits = client.post(
        "/api/v1/executions", json={"action": ref, "parameters": {"pad": "x" * 100}}, headers=AUTH
    )
    assert fits.status_code == 202


def test_waitress_refuses_a_big_body_as_json_without_reading_it(served: int) -> None:
    # Only the headers are sent: an answer proves that nothing waited for the 100 MB.
    status, headers, body = exchange(
        served,
        b"POST /api/v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n",
    )
    assert status.startswith("HTTP/1.1 413"), status
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large" and "USHER_MAX_BODY_BYTES" in error["message"]
    assert f"{LIMIT:,}" in error["message"]


def test_waitress_refuses_chunks_past_the_limit_and_serves_a_body_at_it(
    served: int, ref: str
) -> None:
    chunk = b"x" * 1000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5))
    status, _, body = exchange(
        served,
        b"POST /api/v1/executions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks,
    )
    assert status.startswith("HTTP/1.1 413") and json.loads(body)["error"]["code"]
    exact = json.dumps({"action": ref, "parameters": {}}).encode()
    exact = exact[:-1] + b" " * (LIMIT - len(exact)) + b"}"
    assert len(exact) == LIMIT
    status, _, body = exchange(
        served,
        b"POST /api/v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n".encode()
        + b"Content-Length: %d\r\n\r\n" % len(exact)
        + exact,
    )
    assert status.startswith("HTTP/1.1 202"), (status, body)


def _nested(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


@pytest.mark.parametrize("levels", [65, 990, 100_000])
def test_json_nested_too_deep_is_a_400(
    client: FlaskClient, engine: Engine, ref: str, levels: int
) -> None:
    bodies = {
        "/api/v1/executions": f'{{"action": "{ref}", "parameters": {_nested(levels)}}}',
        "/api/v1/events": f'{{"trigger": "t", "payload": {_nested(levels)}}}',
    }
    big = LIMIT < max(len(b) for b in bodies.values())
    client.application.config["MAX_CONTENT_LENGTH"] = 10_000_000 if big else LIMIT
    for path, body in bodies.items():
        response = client.post(path, data=body, content_type="application/json", headers=AUTH)
        assert response.status_code == 400, (path, response.get_data(as_text=True)[:300])
        error = response.get_json()["error"]
        assert error == {"code": "invalid_request", "message": "JSON nested deeper than 64 levels"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM executions")).scalar_one() == 0


def test_json_nested_64_deep_is_accepted(client: FlaskClient, ref: str) -> None:
    body = f'{{"action": "{ref}", "parameters": {{"p": {_nested(62)}}}}}'  # 64 with the body
    response = client.post(
        "/api/v1/executions", data=body, headers=AUTH, content_type="application/json"
    )
    assert response.status_code == 202, response.get_data(as_text=True)


def test_lists_truncate_big_values_in_postgres(
    client: FlaskClient, engine: Engine, settings: config.Settings, ref: str
) -> None:
    small, big = submit(engine, settings, None, ref, [{"n": 1}, {"n": 2}])
    huge = "y" * 50_000
    with engine.begin() as conn:
        conn.execute(
            text("""UPDATE execution_requests
                    SET parameters = jsonb_build_object('blob', CAST(:v AS text))
                    WHERE id = :id"""),
            {"v": huge, "id": big},
        )
        conn.execute(
            text("""UPDATE execution_state SET result = to_jsonb(CAST(:v AS text)), error = :v
                    WHERE id = :id"""),
            {"v": huge, "id": big},
        )
    listed = client.get("/api/v1/executions?limit=50", headers=AUTH)
    assert len(listed.get_data()) < 20_000
    items = {item["id"]: item for item in listed.get_json()["items"]}
    assert items[small]["parameters"] == {"n": 1}
    size = len(json.dumps({"blob": huge}))
    assert items[big]["parameters"] == {"_truncated": True, "bytes": size}
    assert items[big]["result"] == {"_truncated": True, "bytes": len(huge) + 2}
    assert len(items[big]["error"]) < 1100 and "50,000" not in items[big]["error"]
    assert items[big]["error"].endswith("(truncated: 50000 bytes)")
    whole = client.get(f"/api/v1/executions/{big}", headers=AUTH).get_json()
    assert whole["parameters"] == {"blob": huge} and whole["error"] == huge
    assert queries.LIST_VALUE_BYTES == 4096
    # And the dashboard's action page lists it by its size
    log_in(client, TOKEN)
    page = client.get(f"/actions/{ref}").get_data(as_text=True)
    assert huge not in page and huge[:5000] not in page and f"{size:,} bytes" in page


@pytest.mark.parametrize("value", ["²", "--5", "٣", "1_000", " 5", "+5", "9" * 30, "-1"])
def test_integer_query_values_are_ascii_digits_only(client: FlaskClient, value: str) -> None:
    log_in(client, TOKEN)
    for path in ["/dlq", "/events", "/actions/x.y"]:
        answer = client.get(path, query_string={"before": value, "wp": value, "ws": value})
        assert answer.status_code in (200, 404), (path, answer.status_code)
    api = client.get("/api/v1/executions", query_string={"before": value}, headers=AUTH)
    assert api.status_code == 400 and api.get_json()["error"]["code"] == "invalid_request"


def test_a_login_target_with_control_characters_is_ignored(client: FlaskClient) -> None:
    for target in ["/\r\nSet-Cookie: x=1", "/dlq\n", "/\x00", "/ü", "/\x7f"]:
        page = client.get("/login", query_string={"next": target})
        assert page.status_code == 200 and "Set-Cookie: x" not in page.get_data(as_text=True)
        import re

        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
        assert csrf
        data = {"token": TOKEN, "csrf_token": csrf.group(1), "next": target}
        answer = client.post("/login", data=data)
        assert answer.status_code == 303 and answer.location == "/", repr(target)


def test_metrics_are_computed_once_per_window(
    settings: config.Settings, celery_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from web import metrics

    calls: list[float] = []
    real = metrics.render

    def counted(engine: Engine, *args: Any) -> bytes:
        calls.append(time.monotonic())
        time.sleep(0.2)  # slow enough for the scrapers below to arrive while it runs
        return real(engine, *args)

    monkeypatch.setattr(metrics, "render", counted)
    client = web.create_app(settings.model_copy(update={"metrics_cache_s": 1.0}), celery_app)
    scrapes: list[bytes] = []

    def scrape() -> None:
        scrapes.append(client.test_client().get("/metrics").get_data())

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    scrape()  # within the window: the same text
    assert len(calls) == 1 and len(set(scrapes)) == 1 and len(scrapes) == 9
    assert b"usher_dlq_items" in scrapes[0]
    time.sleep(1.0)
    scrape()
    assert len(calls) == 2
