"""schemathesis against the OpenAPI document: no input gives a 5xx, no route ignores auth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402

import web  # noqa: E402
from app import config  # noqa: E402
from tests.support import packs  # noqa: E402

pytestmark = pytest.mark.timeout(300)
TOKEN = "fuzz-admin-token-0001"


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
        ],
        name="fuzz",
    )
    return fuzz


def test_no_5xx_and_auth_everywhere(api_schema: Any) -> None:
    """Every operation of the document, fuzzed from its own schema (hypothesis strategies)."""
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
            answered = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
            assert answered.status_code < 500, (case.method, case.formatted_path, answered.text)
            if answered.status_code >= 400:
                assert "error" in answered.json()
            anonymous = case.call(headers={"Authorization": ""})
            assert anonymous.status_code == 401, (case.method, case.formatted_path)

        check()
