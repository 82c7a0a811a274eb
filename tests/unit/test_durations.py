"""``usher run --in``: durations such as 90s, 10m, 2h, within the bounds of a delay; and the
request model's timing fields. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import pytest

from app import bounds
from app.cli import common
from app.errors import InvalidRequest
from policies import idempotency, requests


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1d", 86_400.0),
        ("500ms", 0.5),
        ("2", 2.0),
        ("1.5m", 90.0),
        (" 3s ", 3.0),
        ("0s", 0.0),
        ("30d", 2_592_000.0),
    ],
)
def test_a_duration_is_seconds(text: str, seconds: float) -> None:
    assert common.duration_s(text) == seconds


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "not a duration"),
        ("soon", "not a duration"),
        ("-5s", "not a duration"),
        ("5 minutes", "not a duration"),
        ("1h30m", "not a duration"),
        ("5w", "not a duration"),
        ("1e3s", "not a duration"),
        ("31d", "more than 30 days"),
    ],
)
def test_a_bad_duration_says_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        common.duration_s(text)


def test_the_option_type_fails_as_click_does() -> None:
    with pytest.raises(click.BadParameter, match="not a duration"):
        common.Duration().convert("later", None, None)
    assert common.Duration().convert("2s", None, None) == 2.0


def test_a_request_takes_run_at_or_delay_s_not_both() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    body = requests.parse(requests.ExecutionRequest, {"action": "a.b", "run_at": at.isoformat()})
    assert body.run_at == at and body.delay_s is None
    assert requests.parse(requests.ExecutionRequest, {"action": "a.b", "delay_s": 2}).delay_s == 2
    for bad in (
        {"run_at": at.isoformat(), "delay_s": 1},
        {"run_at": "2030-01-01T00:00:00"},
        {"run_at": 1_900_000_000},
        {"run_at": None},
        {"delay_s": bounds.DELAY_S.high + 1},
        {"delay_s": float("nan")},
        {"delay_s": "3"},
    ):
        with pytest.raises(InvalidRequest):
            requests.parse(requests.ExecutionRequest, {"action": "a.b", **bad})


def test_a_fingerprint_is_the_request_whatever_its_key_order() -> None:
    one = idempotency.fingerprint({"parameters": {"a": 1, "b": [1, 2]}, "priority": 0})
    two = idempotency.fingerprint({"priority": 0, "parameters": {"b": [1, 2], "a": 1}})
    assert one == two
    assert one != idempotency.fingerprint({"parameters": {"a": 2, "b": [1, 2]}, "priority": 0})
    later = datetime.now(UTC) + timedelta(days=1)
    assert idempotency.fingerprint({"run_at": later.isoformat()}) != idempotency.fingerprint(
        {"run_at": None}
    )
