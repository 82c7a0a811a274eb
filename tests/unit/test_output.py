"""Live output without a database: what a recording gives its writer, piece by piece."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app import secretstore
from tasks import output, runners
from tests.support.schemas import declaring

SECRET = "hunter2-live-secret"


@pytest.fixture(autouse=True)
def known_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USHER_SECRET_LIVE_OUT", SECRET)
    secretstore.preload(None)


def pieces(recording: output.Recording) -> dict[str, str]:
    _, rows = recording.take()
    found: dict[str, str] = {}
    for row in rows:
        found[row["stream"]] = found.get(row["stream"], "") + row["chunk"]
    return found


def test_a_secret_split_across_two_pieces_is_masked() -> None:
    # Given a recording that gets the first half of a secret, then is read
    recording = output.Recording(1, 1, 1 << 20)
    recording.add("stdout", b"line one\ntoken=" + SECRET[:7].encode())
    first = pieces(recording)
    # When the rest arrives and the attempt ends
    recording.add("stdout", SECRET[7:].encode() + b"\nbye\n")
    recording.close()
    second = pieces(recording)
    # Then no piece holds any part of it; together they read as the result would
    assert first == {"stdout": "line one\ntoken="}
    assert second == {"stdout": "***\nbye\n"}


def test_a_multibyte_character_split_across_reads_is_kept_whole() -> None:
    recording = output.Recording(1, 1, 1 << 20)
    data = "café ☕\n".encode()
    recording.add("stderr", data[:4])
    recording.add("stderr", data[4:8])
    recording.add("stderr", data[8:])
    recording.close()
    _, rows = recording.take()
    assert "".join(r["chunk"] for r in rows) == "café ☕\n"


def test_past_the_bound_one_marker_and_nothing_more() -> None:
    recording = output.Recording(1, 1, 2048)
    for _ in range(10):
        recording.add("stdout", b"x" * 1000)
    first = pieces(recording)["stdout"]
    recording.add("stdout", b"y" * 1000)
    recording.close()
    assert first.startswith("x" * 2048 + "\n... [output truncated")
    assert first.count("truncated") == 1
    assert pieces(recording) == {}


def test_each_piece_is_numbered_per_stream() -> None:
    recording = output.Recording(7, 2, 1 << 20)
    recording.add("stdout", b"a\n")
    recording.add("stderr", b"b\n")
    _, first = recording.take()
    recording.add("stdout", b"c\n")
    _, second = recording.take()
    assert [(r["stream"], r["seq"], r["execution_id"], r["attempt"]) for r in first + second] == [
        ("stdout", 1, 7, 2),
        ("stderr", 1, 7, 2),
        ("stdout", 2, 7, 2),
    ]


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []

    def add(self, stream: str, data: bytes) -> None:
        self.got.append((stream, data))


def test_the_shell_runner_sends_both_streams_as_they_are_read() -> None:
    sink = Sink()
    config: dict[str, Any] = {"command": "echo out; echo err >&2"}
    result = runners.run("shell", config, {}, schema=declaring(), output=sink)
    assert result["stdout"] == "out\n"
    assert b"".join(d for s, d in sink.got if s == "stdout") == b"out\n"
    assert b"".join(d for s, d in sink.got if s == "stderr") == b"err\n"


def test_a_slow_postgres_never_blocks_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a writer whose Postgres answers each statement after 1.5 s
    taken: list[float] = []

    def slow(work: Any) -> None:
        taken.append(time.monotonic())
        time.sleep(1.5)

    monkeypatch.setattr(output.context, "hot", lambda: type("Hot", (), {"run": staticmethod(slow)}))
    monkeypatch.setattr(output, "FINAL_WAIT_S", 0.2)
    writer = output.Writer()
    # When a runner sends a lot of output and ends
    started = time.monotonic()
    with writer.recording("shell", 1, 1, 1 << 16) as recording:
        assert recording is not None
        for _ in range(1000):
            recording.add("stdout", b"x" * 100)
        time.sleep(0.3)
    # Then adding never waited for Postgres, and the end waited only FINAL_WAIT_S for it
    assert time.monotonic() - started < 1.2
    assert taken, "the writer wrote while the runner ran"


def test_other_runners_record_nothing() -> None:
    with output.Writer().recording("noop", 1, 1, 1024) as recording:
        assert recording is None
