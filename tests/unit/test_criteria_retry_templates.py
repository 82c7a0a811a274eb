"""Pure logic: rule criteria per operator, backoff strategies, parameter templates."""

from __future__ import annotations

import random
from typing import Any

import pytest

from app import config
from app.config import RetryStrategy
from app.errors import InvalidParameters
from policies import criteria, retry, templates

EVENT = {
    "trigger": "alert",
    "payload": {
        "severity": "high",
        "host": "db1.example",
        "load": 7.5,
        "tags": ["prod", "eu"],
        "meta": {"team": "dba", "count": 3},
        "nothing": None,
    },
}


@pytest.mark.parametrize(
    ("path", "test", "expected"),
    [
        # eq / ne
        ("payload.severity", {"eq": "high"}, True),
        ("payload.severity", {"eq": "low"}, False),
        ("payload.severity", "high", True),  # bare value means eq
        ("payload.missing", {"eq": None}, False),
        ("payload.severity", {"ne": "low"}, True),
        ("payload.severity", {"ne": "high"}, False),
        ("payload.missing", {"ne": "x"}, True),
        # in / nin
        ("payload.severity", {"in": ["high", "critical"]}, True),
        ("payload.severity", {"in": ["low"]}, False),
        ("payload.missing", {"in": ["x"]}, False),
        ("payload.severity", {"nin": ["low", "medium"]}, True),
        ("payload.severity", {"nin": ["high"]}, False),
        ("payload.missing", {"nin": ["x"]}, True),
        # gt / gte / lt / lte, never true across types or on missing values
        ("payload.load", {"gt": 7}, True),
        ("payload.load", {"gt": 7.5}, False),
        ("payload.load", {"gte": 7.5}, True),
        ("payload.load", {"lt": 8}, True),
        ("payload.load", {"lt": 7.5}, False),
        ("payload.load", {"lte": 7.5}, True),
        ("payload.severity", {"gt": 3}, False),
        ("payload.missing", {"lt": 3}, False),
        ("payload.nothing", {"gte": 0}, False),
        ("payload.meta.count", {"gt": 2, "lt": 4}, True),  # several tests: all must hold
        ("payload.meta.count", {"gt": 2, "lt": 3}, False),
        # contains: substring of a string, member of a list, key of a mapping
        ("payload.host", {"contains": "example"}, True),
        ("payload.host", {"contains": "web"}, False),
        ("payload.tags", {"contains": "prod"}, True),
        ("payload.tags", {"contains": "us"}, False),
        ("payload.meta", {"contains": "team"}, True),
        ("payload.load", {"contains": "7"}, False),
        # regex (search)
        ("payload.host", {"regex": "^db[0-9]"}, True),
        ("payload.host", {"regex": "^web"}, False),
        ("payload.load", {"regex": "7"}, False),
        # exists
        ("payload.host", {"exists": True}, True),
        ("payload.missing", {"exists": True}, False),
        ("payload.missing", {"exists": False}, True),
        ("payload.nothing", {"exists": True}, True),
        # paths: nested, list index, the trigger itself
        ("payload.meta.team", {"eq": "dba"}, True),
        ("payload.tags.1", {"eq": "eu"}, True),
        ("payload.tags.9", {"exists": True}, False),
        ("trigger", {"eq": "alert"}, True),
    ],
)
def test_each_operator(path: str, test: Any, expected: bool) -> None:
    assert criteria.matches({path: test}, EVENT) is expected


def test_all_criteria_must_hold_and_empty_matches_everything() -> None:
    both = {"payload.severity": {"in": ["high"]}, "payload.host": {"regex": "^db"}}
    assert criteria.matches(both, EVENT)
    assert not criteria.matches({**both, "payload.load": {"gt": 100}}, EVENT)
    assert criteria.matches({}, EVENT)


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ({"payload.x": {"between": [1, 2]}}, "unknown operator"),
        ({"payload.x": {"in": "abc"}}, "'in' needs a list"),
        ({"payload.x": {"regex": "("}}, "bad regex"),
    ],
)
def test_bad_criteria_are_reported(block: dict[str, Any], problem: str) -> None:
    problems = criteria.check(block)
    assert problems and problem in problems[0][1] and problems[0][0] == "payload.x"


def _policy(strategy: str, jitter: bool = False) -> retry.RetryPolicy:
    return retry.RetryPolicy(
        max_retries=5,
        strategy=RetryStrategy(strategy),
        initial_delay_ms=100,
        max_delay_ms=1000,
        jitter=jitter,
    )


@pytest.mark.parametrize(
    ("strategy", "delays"),
    [
        ("fixed", [100, 100, 100, 100, 100]),
        ("linear", [100, 200, 300, 400, 500]),
        ("exponential", [100, 200, 400, 800, 1000]),  # capped at max_delay_ms
    ],
)
def test_backoff_strategies(strategy: str, delays: list[int]) -> None:
    policy = _policy(strategy)
    assert [policy.delay_ms(n) for n in range(1, 6)] == delays


def test_jitter_stays_between_half_and_the_full_delay() -> None:
    policy = _policy("exponential", jitter=True)
    rng = random.Random(7)
    for n in range(1, 8):
        full = _policy("exponential").delay_ms(n)
        drawn = [policy.delay_ms(n, rng) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in drawn)
        assert len(set(drawn)) > 100  # actually spread


def test_retry_policy_resolves_action_over_pack_over_settings() -> None:
    settings = config.Settings(retry_max_retries=2, retry_initial_delay_ms=50)
    resolved = retry.resolve(
        {"retry": {"max_retries": 7}},
        {"retry": {"max_retries": 1, "strategy": "fixed", "hold_slot": True}},
        settings,
    )
    assert resolved.max_retries == 7
    assert resolved.strategy is RetryStrategy.fixed
    assert resolved.initial_delay_ms == 50
    assert resolved.hold_slot is True
    assert resolved.allows_retry(7) and not resolved.allows_retry(8)


def test_templates_render_strings_and_keep_types_of_single_expressions() -> None:
    context = {"event": EVENT}
    rendered = templates.render(
        {
            "host": "{{ event.payload.host }}",
            "load": "{{ event.payload.load }}",
            "tags": "{{ event.payload.tags }}",
            "message": "{{ event.payload.severity | upper }} on {{ event.payload.host }}",
            "nested": [{"n": "{{ event.payload.meta.count + 1 }}"}],
            "plain": 5,
        },
        context,
    )
    assert rendered == {
        "host": "db1.example",
        "load": 7.5,
        "tags": ["prod", "eu"],
        "message": "HIGH on db1.example",
        "nested": [{"n": 4}],
        "plain": 5,
    }


@pytest.mark.parametrize(
    "template",
    [
        "{{ event.payload.nope.deeper }}",  # undefined is an error, not an empty string
        "{{ event.payload.nope }}",  # also as a single expression
        "x {{ event.payload.nope }} y",
        "{{ event.__class__.__mro__ }}",  # the sandbox refuses internals
        "{{ ''.__class__.__subclasses__() }}",
        "{% for x in %}",
    ],
)
def test_bad_or_unsafe_templates_are_refused(template: str) -> None:
    with pytest.raises(InvalidParameters, match="template"):
        templates.render({"x": template}, {"event": EVENT})
