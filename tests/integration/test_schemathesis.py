"""schemathesis against the OpenAPI document: no input gives a 5xx, no route ignores auth, and
every answer is what the document says (its status, content type, headers and body schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import web  # noqa: E402
from app import config  # noqa: E402
from tests.support import packs  # noqa: E402

pytestmark = pytest.mark.timeout(300)
TOKEN = "fuzz-admin-token-0001"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(
    db_url: str, broker_url: str | None, tmp_path: Path, engine_for_fuzz: Any, celery_app: Any
) -> Any:
    app = web.create_app(engine_for_fuzz, celery_app)
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


@pytest.fixture
def engine_for_fuzz(db_url: str, broker_url: str | None, tmp_path: Path) -> config.Settings:
    fuzz = config.load(
        database_url=db_url, broker_url=broker_url, home=tmp_path / "home", api_token=TOKEN
    )
    from app import db

    packs.load(
        db.engine_for(db_url),
        tmp_path,
        [
            {
                "name": "job",
                "runner": "noop",
                "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}},
                "policy": {"concurrency": 2, "max_queue_length": 5},
            },
            {"name": "by_host", "runner": "noop", "policy": {"partition_by": ["host"]}},
        ],
        name="fuzz",
    )
    return fuzz


def test_no_5xx_auth_everywhere_and_answers_as_documented(api_schema: Any) -> None:
    """Every operation of the document, fuzzed from its own schema (hypothesis strategies);
    each answer, the anonymous one too, validated against the document."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: Any) -> None:
            if case.query and "wait" in case.query:
                case.query["wait"] = 0  # waiting for a worker that does not run here
            admin = {"Authorization": f"Bearer {TOKEN}"}
            answered = case.call(headers=admin)
            assert answered.status_code < 500, (case.method, case.formatted_path, answered.text)
            if answered.status_code >= 400:
                assert "error" in answered.json()
            case.validate_response(answered, checks=CHECKS, headers=admin)
            anonymous = case.call(headers={"Authorization": ""})
            assert anonymous.status_code == 401, (case.method, case.formatted_path)
            case.validate_response(anonymous, checks=CHECKS)

        check()


def test_answers_to_good_requests_are_as_documented(api_schema: Any) -> None:
    """What fuzzing seldom reaches (an action that exists, its executions, an event), from
    requests that succeed or fail as they should, each answer validated against the document."""
    admin = {"Authorization": f"Bearer {TOKEN}"}

    def call(method: str, path: str, status: int, **parts: Any) -> Any:
        case = api_schema[f"/api/v1{path}"][method].Case(**parts)
        answered = case.call(headers=admin)
        assert answered.status_code == status, (method, path, answered.text)
        case.validate_response(answered, checks=CHECKS, headers=admin)
        return answered.json()

    job = {"ref": "fuzz.job"}
    first = call("POST", "/executions", 202, body={"action": "fuzz.job", "parameters": {"n": 1}})
    for n in range(2):
        last = call("POST", "/executions", 202, body={"action": "fuzz.job", "priority": n})
    one = {"execution_id": first["id"]}
    call("GET", "/executions/{execution_id}", 200, path_parameters=one)
    call("GET", "/executions/{execution_id}", 200, path_parameters={"execution_id": last["id"]})
    for host in ("a", "b"):
        call(
            "POST",
            "/executions",
            202,
            body={"action": "fuzz.by_host", "parameters": {"host": host}},
        )
    call("GET", "/actions/{ref}/queue-stats", 200, path_parameters={"ref": "fuzz.by_host"})
    call("GET", "/executions", 200, query={"action": "fuzz.job", "status": "queued", "limit": 2})
    call("GET", "/actions", 200)
    call("GET", "/actions/{ref}", 200, path_parameters=job)
    call("GET", "/actions/{ref}/queue-stats", 200, path_parameters=job)
    call("POST", "/actions/{ref}/pause", 200, path_parameters=job)
    call("PATCH", "/actions/{ref}/policy", 200, path_parameters=job, body={"concurrency": 3})
    call("POST", "/actions/{ref}/resume", 200, path_parameters=job)
    batch = {"items": [{"action": "fuzz.job"}, {"action": "fuzz.nope"}, {"action": ""}]}
    call("POST", "/executions/batch", 202, body=batch)
    call("POST", "/executions/{execution_id}/cancel", 200, path_parameters=one)
    call("POST", "/executions/{execution_id}/cancel", 409, path_parameters=one)
    call("POST", "/dlq/{execution_id}/replay", 409, path_parameters=one)
    call("POST", "/executions/batch", 202, body={"items": [{"action": "fuzz.job"}] * 5})
    call("POST", "/executions", 429, body={"action": "fuzz.job"})  # the line is full
    call("POST", "/executions", 422, body={"action": "fuzz.job", "parameters": {"n": "x"}})
    event = call("POST", "/events", 202, body={"trigger": "fuzz", "payload": {"n": 1}})
    stored = {"event_id": event["event_id"]}
    call("GET", "/events/{event_id}", 200, path_parameters=stored)
    call("POST", "/events/{event_id}/replay", 409, path_parameters=stored)
    call("POST", "/events/batch", 202, body={"events": [{"trigger": "fuzz"}] * 2})
    call("GET", "/dlq", 200, query={"limit": 10})
    call("POST", "/dlq/purge", 200)
