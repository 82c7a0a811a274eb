"""The REST API (``/api/v1``) through Flask's test client, against a real Postgres.

No worker runs: a submitted execution stays ``scheduled`` (it holds a slot) or ``queued``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app import config
from tests.support import invariants, packs
from tests.support.api import AUTH, TOKEN

pytestmark = pytest.mark.timeout(120)

STATS_FIELDS = {
    "action_ref",
    "queue_length",
    "active_count",
    "max_concurrent",
    "total_enqueued",
    "total_completed",
    "total_failed",
    "total_cancelled",
    "total_expired",
    "oldest_enqueued_at",
    "last_updated",
}
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
JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "n": {"type": "integer"},
        "target": {"type": "object", "properties": {"port": {"type": "integer"}}},
    },
}


@pytest.fixture
def settings(api_settings: config.Settings) -> config.Settings:
    return api_settings


@pytest.fixture
def pack(engine: Engine, tmp_path: Path) -> str:
    """A pack (default concurrency 3) with a small line, a free action and a partitioned one."""
    return packs.load(
        engine,
        tmp_path,
        [
            {
                "name": "job",
                "description": "a line of one with room for two waiting",
                "runner": "noop",
                "timeout_s": 30,
                "parameters": JOB_SCHEMA,
                "policy": {"concurrency": 1, "max_queue_length": 2},
            },
            {"name": "free", "runner": "noop"},
            {
                "name": "restart",
                "runner": "noop",
                "parameters": {"type": "object", "properties": {"host": {"type": "string"}}},
                "policy": {"concurrency": 1, "partition_by": ["host"]},
            },
        ],
        policy={"concurrency": 3, "queue_timeout_s": 600},
    )


def submit(client: FlaskClient, action: str, parameters: Any = None, **extra: Any) -> Any:
    body: dict[str, Any] = {"action": action, **extra}
    if parameters is not None:
        body["parameters"] = parameters
    response = client.post("/api/v1/executions", json=body, headers=AUTH)
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """A JSON ``{"error": {"code", "message"}}`` body with this status."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body, dict) and set(body) == {"error"}
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return dict(error)


def execution_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM executions")).scalar_one())


# --- auth -----------------------------------------------------------------------------------


def test_healthz_is_open(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["none", "wrong", "longer", "empty", "basic-scheme", "no-scheme"],
)
def test_reads_and_writes_need_a_valid_token(
    client: FlaskClient, engine: Engine, pack: str, headers: dict[str, str]
) -> None:
    for path in ("/api/v1/actions", f"/api/v1/actions/{pack}.job", "/api/v1/executions"):
        assert_error(client.get(path, headers=headers), 401, "unauthorized")
    # A write without a valid token queues nothing.
    response = client.post("/api/v1/executions", json={"action": f"{pack}.free"}, headers=headers)
    assert_error(response, 401, "unauthorized")
    assert_error(client.post("/api/v1/executions/1/cancel", headers=headers), 401)
    assert execution_count(engine) == 0


def test_the_admin_token_is_accepted(client: FlaskClient, pack: str) -> None:
    assert client.get("/api/v1/actions", headers=AUTH).status_code == 200
    # The scheme is case-insensitive (RFC 7235).
    response = client.get("/api/v1/actions", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


# --- actions and queue stats ----------------------------------------------------------------


def test_list_actions_with_their_queue_stats(client: FlaskClient, pack: str) -> None:
    # Given two executions of the line of one
    first = submit(client, f"{pack}.job", {"n": 1})
    second = submit(client, f"{pack}.job", {"n": 2})
    # When the actions are listed
    response = client.get("/api/v1/actions", headers=AUTH)
    # Then each action shows its definition and its stats
    assert response.status_code == 200
    items = {item["ref"]: item for item in response.get_json()["items"]}
    assert set(items) == {f"{pack}.job", f"{pack}.free", f"{pack}.restart"}
    job = items[f"{pack}.job"]
    assert (job["name"], job["pack"], job["runner"]) == ("job", pack, "noop")
    assert job["description"] == "a line of one with room for two waiting"
    assert job["timeout_s"] == 30
    assert job["policy"] == {"concurrency": 1, "max_queue_length": 2}
    stats = job["queue_stats"]
    assert STATS_FIELDS <= set(stats)
    assert stats["action_ref"] == f"{pack}.job"
    assert (stats["queue_length"], stats["active_count"], stats["max_concurrent"]) == (1, 1, 1)
    assert stats["total_enqueued"] == 2
    assert first["status"] == "scheduled" and second["status"] == "queued"
    unused = items[f"{pack}.free"]["queue_stats"]
    assert unused["max_concurrent"] == 3  # the pack's default
    assert unused["total_enqueued"] == 0 and unused["oldest_enqueued_at"] is None


def test_show_action(client: FlaskClient, pack: str) -> None:
    response = client.get(f"/api/v1/actions/{pack}.job", headers=AUTH)
    assert response.status_code == 200
    action = response.get_json()
    assert action["ref"] == f"{pack}.job"
    assert action["name"] == "job" and action["pack"] == pack
    assert action["runner"] == "noop" and action["timeout_s"] == 30
    assert action["parameters"] == JOB_SCHEMA
    assert action["policy"] == {"concurrency": 1, "max_queue_length": 2}
    assert action["queue_stats"]["action_ref"] == f"{pack}.job"
    assert STATS_FIELDS <= set(action["queue_stats"])


def test_queue_stats_match_what_was_submitted(client: FlaskClient, pack: str) -> None:
    # Given one running slot, two waiting and one of the waiting cancelled
    ids = [submit(client, f"{pack}.job", {"n": i})["id"] for i in range(3)]
    assert client.post(f"/api/v1/executions/{ids[2]}/cancel", headers=AUTH).status_code == 200
    # When the stats are read
    response = client.get(f"/api/v1/actions/{pack}.job/queue-stats", headers=AUTH)
    # Then every field is there with the right value
    assert response.status_code == 200
    stats = response.get_json()
    assert STATS_FIELDS <= set(stats)
    assert "partitions" not in stats
    assert stats["action_ref"] == f"{pack}.job"
    assert stats["queue_length"] == 1
    assert stats["active_count"] == 1
    assert stats["max_concurrent"] == 1
    assert stats["total_enqueued"] == 3
    assert stats["total_cancelled"] == 1
    assert (stats["total_completed"], stats["total_failed"], stats["total_expired"]) == (0, 0, 0)
    oldest = client.get(f"/api/v1/executions/{ids[1]}", headers=AUTH).get_json()
    assert stats["oldest_enqueued_at"] == oldest["enqueued_at"]
    assert stats["last_updated"] is not None


def test_queue_stats_of_an_unused_action(client: FlaskClient, pack: str) -> None:
    response = client.get(f"/api/v1/actions/{pack}.free/queue-stats", headers=AUTH)
    assert response.status_code == 200
    stats = response.get_json()
    assert STATS_FIELDS <= set(stats)
    assert stats["max_concurrent"] == 3
    for key in STATS_FIELDS - {"action_ref", "max_concurrent", "oldest_enqueued_at"}:
        assert stats[key] in (0, None), key
    assert stats["oldest_enqueued_at"] is None


def test_partitioned_queue_stats_list_each_line(client: FlaskClient, pack: str) -> None:
    # Given hosts a, a, b on a line of one per host
    for host in ("a", "a", "b"):
        submit(client, f"{pack}.restart", {"host": host})
    # When the stats are read
    response = client.get(f"/api/v1/actions/{pack}.restart/queue-stats", headers=AUTH)
    # Then the totals add up and each partition has the same fields
    assert response.status_code == 200
    stats = response.get_json()
    assert (stats["queue_length"], stats["active_count"], stats["total_enqueued"]) == (1, 2, 3)
    assert stats["max_concurrent"] == 1
    parts = {p["partition"]: p for p in stats["partitions"]}
    assert set(parts) == {"host=a", "host=b"}
    for part in parts.values():
        assert STATS_FIELDS <= set(part)
        assert part["action_ref"] == f"{pack}.restart"
        assert part["max_concurrent"] == 1
    a, b = parts["host=a"], parts["host=b"]
    assert (a["queue_length"], a["active_count"], a["total_enqueued"]) == (1, 1, 2)
    assert (b["queue_length"], b["active_count"], b["total_enqueued"]) == (0, 1, 1)
    assert a["oldest_enqueued_at"] == stats["oldest_enqueued_at"]
    assert b["oldest_enqueued_at"] is None


@pytest.mark.parametrize("suffix", ["", "/queue-stats"])
def test_unknown_action_is_404(client: FlaskClient, pack: str, suffix: str) -> None:
    response = client.get(f"/api/v1/actions/{pack}.nothing{suffix}", headers=AUTH)
    error = assert_error(response, 404, "unknown_action")
    assert f"{pack}.nothing" in error["message"]


# --- submitting -----------------------------------------------------------------------------


def test_submit_returns_id_status_and_position(client: FlaskClient, pack: str) -> None:
    # Given a line of one
    ref = f"{pack}.job"
    # When three are submitted, the last one with a higher priority
    first = submit(client, ref, {"n": 1})
    second = submit(client, ref, {"n": 2})
    urgent = submit(client, ref, {"n": 3}, priority=10)
    # Then the first holds the slot and the urgent one waits ahead of the second
    assert set(first) == {"id", "status", "position", "seq"}
    assert (first["seq"], second["seq"], urgent["seq"]) == (1, 2, 3)
    assert first["status"] == "scheduled" and first["position"] is None
    assert second["status"] == "queued" and second["position"] == 1
    assert urgent["status"] == "queued" and urgent["position"] == 1
    assert len({first["id"], second["id"], urgent["id"]}) == 3
    shown = client.get(f"/api/v1/executions/{second['id']}", headers=AUTH).get_json()
    assert shown["position"] == 2


def test_submit_without_parameters_uses_an_empty_object(client: FlaskClient, pack: str) -> None:
    created = submit(client, f"{pack}.free")
    shown = client.get(f"/api/v1/executions/{created['id']}", headers=AUTH).get_json()
    assert shown["parameters"] == {}
    assert shown["priority"] == 0


def test_submit_unknown_action_is_404(client: FlaskClient, engine: Engine, pack: str) -> None:
    response = client.post("/api/v1/executions", json={"action": f"{pack}.nothing"}, headers=AUTH)
    error = assert_error(response, 404, "unknown_action")
    assert f"{pack}.nothing" in error["message"]
    assert execution_count(engine) == 0


@pytest.mark.parametrize(
    ("parameters", "path"),
    [
        ({"n": "not a number"}, "parameters.n"),
        ({"target": {"port": "http"}}, "parameters.target.port"),
        ([1, 2], "parameters"),
        ("n=1", "parameters"),
    ],
    ids=["field", "nested-field", "array", "string"],
)
def test_submit_parameters_failing_the_schema_is_422(
    client: FlaskClient, engine: Engine, pack: str, parameters: Any, path: str
) -> None:
    response = client.post(
        "/api/v1/executions",
        json={"action": f"{pack}.job", "parameters": parameters},
        headers=AUTH,
    )
    error = assert_error(response, 422, "invalid_parameters")
    assert error["message"].startswith(path)
    assert execution_count(engine) == 0


def test_submit_to_a_full_line_is_429_and_queues_nothing(
    client: FlaskClient, engine: Engine, pack: str
) -> None:
    # Given a line of one with room for two waiting, full
    for n in range(3):
        submit(client, f"{pack}.job", {"n": n})
    # When one more arrives
    response = client.post(
        "/api/v1/executions", json={"action": f"{pack}.job", "parameters": {}}, headers=AUTH
    )
    # Then it is refused and nothing changed
    error = assert_error(response, 429, "queue_full")
    assert "max_queue_length" in error["message"]
    assert execution_count(engine) == 3
    stats = client.get(f"/api/v1/actions/{pack}.job/queue-stats", headers=AUTH).get_json()
    assert (stats["queue_length"], stats["active_count"], stats["total_enqueued"]) == (2, 1, 3)
    assert invariants.counter_mismatches(engine) == []


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("not json", "application/json"),
        ('{"action": "x.y"', "application/json"),
        ('{"action": "x.y"}', "text/plain"),
        ("[1, 2]", "application/json"),
        ('"x.y"', "application/json"),
        ("", "application/json"),
    ],
    ids=["garbage", "truncated", "text-plain", "array", "string", "empty"],
)
def test_submit_needs_a_json_object(
    client: FlaskClient, engine: Engine, pack: str, data: str, content_type: str
) -> None:
    response = client.post("/api/v1/executions", data=data, content_type=content_type, headers=AUTH)
    assert_error(response, 400, "invalid_request")
    assert execution_count(engine) == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"parameters": {}},
        {"action": ""},
        {"action": 7},
        {"action": None},
        {"action": ["x.y"]},
    ],
    ids=["empty", "no-action", "blank", "number", "null", "list"],
)
def test_submit_without_an_action_is_400(
    client: FlaskClient, engine: Engine, pack: str, body: dict[str, Any]
) -> None:
    response = client.post("/api/v1/executions", json=body, headers=AUTH)
    error = assert_error(response, 400, "invalid_request")
    assert "action" in error["message"]
    assert execution_count(engine) == 0


@pytest.mark.parametrize("priority", ["high", 1.5, True, None, 1001, -1001, 10**30, [1]], ids=repr)
def test_submit_with_a_bad_priority_is_400(
    client: FlaskClient, engine: Engine, pack: str, priority: Any
) -> None:
    response = client.post(
        "/api/v1/executions",
        json={"action": f"{pack}.free", "priority": priority},
        headers=AUTH,
    )
    error = assert_error(response, 400, "invalid_request")
    assert "priority" in error["message"]
    assert execution_count(engine) == 0


# --- listing and showing --------------------------------------------------------------------


def test_list_executions_newest_first_with_filters(client: FlaskClient, pack: str) -> None:
    # Given three on the line of one (1 scheduled, 2 queued) and two free ones (scheduled)
    job = [submit(client, f"{pack}.job", {"n": n})["id"] for n in range(3)]
    free = [submit(client, f"{pack}.free")["id"] for _ in range(2)]

    def ids(query: str) -> list[int]:
        response = client.get(f"/api/v1/executions{query}", headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert set(body) == {"items", "next"}
        return [item["id"] for item in body["items"]]

    # Then
    assert ids("") == sorted(job + free, reverse=True)
    assert ids("?status=queued") == [job[2], job[1]]
    assert ids(f"?action={pack}.free") == [free[1], free[0]]
    assert ids(f"?action={pack}.job&status=scheduled") == [job[0]]
    assert ids(f"?action={pack}.free&status=queued") == []
    assert ids("?action=nobody.nothing") == []
    assert ids("?status=&action=&limit=&before=") == sorted(job + free, reverse=True)
    items = client.get("/api/v1/executions", headers=AUTH).get_json()["items"]
    for item in items:
        assert EXECUTION_FIELDS <= set(item)


def test_list_executions_pages_with_the_cursor(client: FlaskClient, pack: str) -> None:
    # Given five executions
    created = [submit(client, f"{pack}.free", {"i": i})["id"] for i in range(5)]
    # When they are read two at a time, following `next`
    pages: list[list[int]] = []
    query = "?limit=2"
    for _ in range(5):
        body = client.get(f"/api/v1/executions{query}", headers=AUTH).get_json()
        pages.append([item["id"] for item in body["items"]])
        if body["next"] is None:
            break
        assert body["next"] == pages[-1][-1]
        query = f"?limit=2&before={body['next']}"
    # Then every execution comes once, newest first, and the last page says there is no more
    newest_first = sorted(created, reverse=True)
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]


def test_show_execution_has_the_contract_fields(client: FlaskClient, pack: str) -> None:
    # Given an execution that holds the slot and one waiting behind it
    first = submit(client, f"{pack}.job", {"n": 1}, priority=5)
    second = submit(client, f"{pack}.job", {"n": 2, "target": {"port": 22}})
    # When they are shown
    one = client.get(f"/api/v1/executions/{first['id']}", headers=AUTH)
    two = client.get(f"/api/v1/executions/{second['id']}", headers=AUTH)
    # Then every field is there with what was submitted
    assert one.status_code == two.status_code == 200
    one_body, two_body = one.get_json(), two.get_json()
    assert EXECUTION_FIELDS <= set(one_body)
    assert one_body["id"] == first["id"]
    assert one_body["action_ref"] == f"{pack}.job"
    assert one_body["status"] == "scheduled"
    assert one_body["parameters"] == {"n": 1}
    assert one_body["priority"] == 5
    assert one_body["seq"] == 1 and one_body["attempt"] == 1
    assert one_body["enqueued_at"] is not None and one_body["scheduled_at"] is not None
    assert one_body["started_at"] is None and one_body["finished_at"] is None
    assert one_body["worker"] is None and one_body["result"] is None
    assert one_body["error"] is None
    assert two_body["status"] == "queued" and two_body["seq"] == 2
    assert two_body["parameters"] == {"n": 2, "target": {"port": 22}}
    assert two_body["scheduled_at"] is None
    assert two_body["position"] == 1


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/executions/987654",
        "/api/v1/executions/99999999999999999999",
        "/api/v1/executions/abc",
        "/api/v1/executions/-1",
    ],
)
def test_unknown_execution_is_404(client: FlaskClient, pack: str, path: str) -> None:
    assert_error(client.get(path, headers=AUTH), 404)
    assert_error(client.post(f"{path}/cancel", headers=AUTH), 404)


def test_unknown_execution_has_its_own_code(client: FlaskClient, pack: str) -> None:
    error = assert_error(client.get("/api/v1/executions/987654", headers=AUTH), 404)
    assert error["code"] == "unknown_execution"
    assert "987654" in error["message"]


# --- cancelling -----------------------------------------------------------------------------


def test_cancel_then_cancel_again_is_409(client: FlaskClient, engine: Engine, pack: str) -> None:
    # Given one holding the slot and one waiting
    running = submit(client, f"{pack}.job", {"n": 1})
    waiting = submit(client, f"{pack}.job", {"n": 2})
    # When the one holding the slot is cancelled
    response = client.post(f"/api/v1/executions/{running['id']}/cancel", headers=AUTH)
    # Then it is cancelled and the next in line gets the slot
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == running["id"] and body["status"] == "cancelled"
    assert body["finished_at"] is not None
    shown = client.get(f"/api/v1/executions/{waiting['id']}", headers=AUTH).get_json()
    assert shown["status"] == "scheduled" and shown["position"] is None
    # And a second cancel is refused
    again = client.post(f"/api/v1/executions/{running['id']}/cancel", headers=AUTH)
    error = assert_error(again, 409, "already_finished")
    assert "cancelled" in error["message"]
    assert invariants.counter_mismatches(engine) == []


def test_cancel_a_queued_execution(client: FlaskClient, engine: Engine, pack: str) -> None:
    submit(client, f"{pack}.job", {"n": 1})
    waiting = submit(client, f"{pack}.job", {"n": 2})
    response = client.post(f"/api/v1/executions/{waiting['id']}/cancel", headers=AUTH)
    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    listed = client.get("/api/v1/executions?status=cancelled", headers=AUTH).get_json()
    assert [item["id"] for item in listed["items"]] == [waiting["id"]]
    assert invariants.counter_mismatches(engine) == []


# --- bad query parameters never give a 5xx --------------------------------------------------


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=-3", "limit"),
        ("limit=1001", "limit"),
        ("limit=1.5", "limit"),
        ("limit=99999999999999999999999", "limit"),
        ("before=abc", "before"),
        ("before=0", "before"),
        ("before=99999999999999999999999", "before"),
        ("status=bogus", "status"),
        ("status=QUEUED", "status"),
    ],
)
def test_bad_list_query_params_are_400(
    client: FlaskClient, pack: str, query: str, name: str
) -> None:
    response = client.get(f"/api/v1/executions?{query}", headers=AUTH)
    error = assert_error(response, 400, "invalid_request")
    assert name in error["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/api/v1/executions"),
        ("GET", "/api/v1/executions/1/cancel"),
        ("PUT", "/api/v1/actions"),
        ("GET", "/api/v1/no-such-thing"),
    ],
)
def test_wrong_method_or_path_is_a_json_4xx(
    client: FlaskClient, pack: str, method: str, path: str
) -> None:
    response = client.open(path, method=method, headers=AUTH)
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param(
            "GET",
            "/api/v1/executions?action=%00",
            None,
            id="list-action-nul",
        ),
        pytest.param(
            "GET",
            "/api/v1/actions/a%00b",
            None,
            id="show-action-nul",
        ),
        pytest.param(
            "GET",
            "/api/v1/actions/a%00b/queue-stats",
            None,
            id="queue-stats-nul",
        ),
        pytest.param(
            "POST",
            "/api/v1/executions",
            '{"action": "a\\u0000b"}',
            id="submit-action-nul",
        ),
        pytest.param(
            "POST",
            "/api/v1/executions",
            '{"action": "PACK.free", "parameters": {"x": "\\u0000"}}',
            id="submit-parameter-nul",
        ),
        pytest.param(
            "POST",
            "/api/v1/executions",
            '{"action": "PACK.free", "parameters": {"x": NaN}}',
            id="submit-parameter-nan",
        ),
        pytest.param(
            "POST",
            "/api/v1/executions",
            '{"action": "PACK.free", "parameters": {"x": 1}}',
            id="control-valid",
        ),
    ],
)
def test_hostile_input_never_gives_a_5xx(
    client: FlaskClient, engine: Engine, pack: str, method: str, path: str, body: str | None
) -> None:
    data = body.replace("PACK", pack) if body else None
    response = client.open(
        path, method=method, data=data, content_type="application/json", headers=AUTH
    )
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert_error(response, response.status_code)
