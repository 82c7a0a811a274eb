"""The typed policy (policies.policy) and the pack loader's JSON Schema for it agree."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from policies import pack_schema, policy

SCHEMA = jsonschema.Draft202012Validator(pack_schema.POLICY)
WINDOW = {"count": 5, "per_s": 1}


def _model_accepts(document: Any) -> bool:
    try:
        policy.Policy.model_validate(document)
    except ValidationError:
        return False
    return True


def _in_place(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A policy that is valid but for ``value`` at ``path``."""
    if path[0] == "rate_limit":
        return {"rate_limit": {**WINDOW, path[1]: value}}
    if path[0] == "retry":
        return {"retry": {path[1]: value}}
    return {path[0]: value}


def _fields(schema: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    """(path, property schema) of every leaf of the policy schema."""
    found: list[tuple[Any, ...]] = []
    for name, prop in schema["properties"].items():
        if "properties" in prop:
            found += _fields(prop, (*path, name))
        elif name == "rate_limit":
            found += _fields(pack_schema.WINDOW, (*path, name))
        else:
            found.append(((*path, name), prop))
    return found


def _bound_examples() -> list[dict[str, Any]]:
    """Each bound of the JSON Schema, just inside and just outside it."""
    examples = []
    for path, prop in _fields(pack_schema.POLICY):
        step = 1 if prop.get("type") == "integer" else 0.001
        for key in ("minimum", "maximum", "exclusiveMinimum"):
            if key in prop:
                examples += [_in_place(path, prop[key] + d) for d in (-step, 0, step)]
    return examples


def _type_examples() -> list[dict[str, Any]]:
    """Values of every JSON type (and a few Python ones) for every key."""
    odd = [None, True, False, 0, 1, 2.0, 2.5, "1", "", [], ["a"], {}, [1], -1, 10**20]
    return [_in_place(path, value) for path, _ in _fields(pack_schema.POLICY) for value in odd]


SHAPES: list[Any] = [
    {},
    None,
    [],
    "concurrency: 1",
    {"unknown": 1},
    {"retry": {"unknown": 1}},
    {"retry": None},
    {"retry": {}},
    {"retry": {"strategy": "fixed", "max_retries": 3, "jitter": False, "hold_slot": True}},
    {"retry": {"strategy": "Fixed"}},
    {"rate_limit": WINDOW},
    {"rate_limit": {"count": 5}},
    {"rate_limit": {**WINDOW, "burst": 2}},
    {"rate_limit": []},
    {"rate_limit": [WINDOW] * 5},
    {"rate_limit": [WINDOW] * 6},
    {"rate_limit": [WINDOW, 3]},
    {"rate_limit": [WINDOW, {"count": 0, "per_s": 1}]},
    {"partition_by": []},
    {"partition_by": ["host", "port"]},
    {"partition_by": ("host",)},
    {"partition_by": "host"},
    {"partition_by": ["host", None]},
    {"concurrency": 2, "max_queue_length": 10, "queue_timeout_s": 60, "partition_by": ["h"]},
    {"when_busy": "queue"},
    {"when_busy": "skip", "coalesce": True},
    {"when_busy": "replace", "coalesce": False},
    {"when_busy": "cancel_running"},
    {"when_busy": "Skip"},
    {"when_busy": "wait"},
    {"when_busy": ["skip"]},
    {"coalesce": "true"},
    {"coalesce": 1},
]


@pytest.mark.parametrize("document", SHAPES + _bound_examples() + _type_examples(), ids=repr)
def test_the_model_and_the_json_schema_accept_and_refuse_the_same(document: Any) -> None:
    assert _model_accepts(document) == SCHEMA.is_valid(document)


def test_the_examples_hold_both_verdicts() -> None:
    verdicts = [SCHEMA.is_valid(d) for d in SHAPES + _bound_examples() + _type_examples()]
    assert verdicts.count(True) > 40 and verdicts.count(False) > 100


# Values near every bound, of every type but NaN (JSON has none; the schema's comparisons
# pass it, the model refuses it).
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=3),
    st.sampled_from([0, 1, 5, 9, 10, 11, 99, 100, 101, 10_000, 10_001, 86_400, 300_001]),
    st.floats(min_value=-1, max_value=1e7, allow_nan=False),
    st.sampled_from([1.0, 2.0, 10_000.0, 0.5, "", "a", "fixed", "linear", "exponential"]),
    st.lists(st.sampled_from(["h", 1, None]), max_size=2),
)
WINDOWS = st.fixed_dictionaries({}, optional={"count": VALUES, "per_s": VALUES, "x": VALUES})
RETRIES = st.fixed_dictionaries(
    {}, optional={key: VALUES for key in [*pack_schema.RETRY["properties"], "x"]}
)
POLICIES = st.fixed_dictionaries(
    {},
    optional={
        "concurrency": VALUES,
        "partition_by": VALUES,
        "max_queue_length": VALUES,
        "queue_timeout_s": VALUES,
        "rate_limit": st.one_of(VALUES, WINDOWS, st.lists(WINDOWS, max_size=6)),
        "retry": st.one_of(VALUES, RETRIES),
        "when_busy": st.one_of(VALUES, st.sampled_from(policy.WHEN_BUSY)),
        "coalesce": VALUES,
        "x": VALUES,
    },
)


@settings(max_examples=500, deadline=None)
@given(POLICIES)
def test_random_policies_get_the_same_verdict(document: dict[str, Any]) -> None:
    assert _model_accepts(document) == SCHEMA.is_valid(document)


def test_a_policy_is_parsed_once_per_distinct_text() -> None:
    text = '{"retry": {"max_retries": 2}, "concurrency": 3}'
    first = policy.parse(text)
    assert policy.parse(text) is first
    assert policy.parse({"concurrency": 3, "retry": {"max_retries": 2}}) is policy.parse(
        {"retry": {"max_retries": 2}, "concurrency": 3}
    )
    assert (first.concurrency, first.retry and first.retry.max_retries) == (3, 2)


def test_a_stored_null_is_not_set() -> None:
    parsed = policy.parse({"concurrency": None, "retry": {"max_retries": None}})
    assert parsed.concurrency is None and parsed.retry == policy.Retry()
