"""The OpenAPI document is true to the code: the same routes and methods as the URL map, and
a valid document (every schema valid JSON Schema, every reference resolved)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

import web
from app import config
from web import apidoc

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


def _schemas(node: Any) -> Iterator[Any]:
    """Every schema of the document: its components and those of its operations."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" or (key == "schemas" and isinstance(value, dict)):
                yield from (value.values() if key == "schemas" else [value])
            else:
                yield from _schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_document_is_valid(settings: config.Settings, celery_app: Any) -> None:
    document = web.create_app(settings, celery_app).test_client().get("/api/v1/openapi.json")
    document = document.get_json()
    assert document == apidoc.document()  # the app serves what docs/api.md is made from
    schemas = list(_schemas(document))
    assert len(schemas) > 40
    for schema in schemas:
        jsonschema.Draft202012Validator.check_schema(schema)
    components = document["components"]["schemas"]
    for ref in set(_refs(document)):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_docs_api_md_is_generated_from_the_document() -> None:
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs" / "api.md"
    expected = apidoc.markdown(apidoc.document())
    assert docs.read_text() == expected, "run: python -m web.apidoc > docs/api.md"
