"""The OpenAPI document is true to the code: the same routes and methods as the URL map."""

from __future__ import annotations

import re
from typing import Any

import pytest

import web
from app import config

pytestmark = pytest.mark.timeout(60)


def test_openapi_lists_exactly_the_api_routes(settings: config.Settings, celery_app: Any) -> None:
    app = web.create_app(settings, celery_app)
    response = app.test_client().get("/api/v1/openapi.json")  # public
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint == "api.openapi":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            served.add((method, path))
    assert documented == served
    # Every documented operation names its error answers
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "401" in operation["responses"], (method, path)
            if method != "get":
                assert "403" in operation["responses"], (method, path)


def test_docs_api_md_is_generated_from_the_document() -> None:
    from pathlib import Path

    from web import openapi

    docs = Path(__file__).resolve().parents[2] / "docs" / "api.md"
    assert docs.read_text() == openapi.markdown(), "run: python -m web.openapi > docs/api.md"
