"""Bounds on what a request may carry, and settings that refuse weak secrets."""

from __future__ import annotations

import pytest

from app import config
from app.errors import ConfigError, InvalidRequest, TooLarge
from policies import events, parameters


def nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def test_depth_counts_without_recursion() -> None:
    assert parameters.depth(1) == 0
    assert parameters.depth({"a": [1, {"b": 2}]}) == 3
    # Far past Python's recursion limit: measured without a RecursionError
    assert parameters.depth(nested(100_000)) > parameters.MAX_DEPTH


def test_event_payloads_are_bounded_in_size_and_depth() -> None:
    events.document("t", {"x": "y" * 100}, max_bytes=1024)
    with pytest.raises(TooLarge) as raised:
        events.document("t", {"x": "y" * 2000}, max_bytes=1024)
    assert raised.value.status == 413 and "USHER_MAX_PAYLOAD_BYTES" in raised.value.message
    with pytest.raises(InvalidRequest) as deep:
        events.document("t", {"x": nested(950)}, max_bytes=10**6)
    assert "64 levels" in deep.value.message


def test_a_short_admin_token_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USHER_API_TOKEN", "abc")
    with pytest.raises(ConfigError) as raised:
        config.load()
    message = raised.value.message
    assert message.startswith("USHER_API_TOKEN='***' is invalid") and "abc" not in message
    assert "\n" not in message
