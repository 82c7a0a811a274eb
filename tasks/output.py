"""Live output: what a runner's process writes, appended to Postgres while it runs.

The runner only adds bytes to a ``Recording`` (memory, under a lock held for microseconds);
one writer thread per process masks them and writes each attempt's new text at most once a
second, and once more when the attempt ends, each piece one short autocommit INSERT. A
slow or absent Postgres stalls that thread, never the runner: a stream keeps at most
``USHER_OUTPUT_MAX_BYTES`` (then one truncation marker), and an ending attempt waits at
most ``FINAL_WAIT_S`` for its last piece.

Secrets are masked piece by piece as they are in the result; the characters that could
begin a secret still arriving are held back until the next piece (``unsafe_tail``).
"""

from __future__ import annotations

import codecs
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app import secretstore, sql
from tasks import context

log = logging.getLogger(__name__)

STREAMS = ("stdout", "stderr")
# The runners that send output; the others' attempts pay nothing for it.
RECORDED = frozenset({"shell", "http"})
FLUSH_S = 1.0
FINAL_WAIT_S = 5.0
TRUNCATED = "\n... [output truncated: USHER_OUTPUT_MAX_BYTES = {} bytes reached] ...\n"
LOST = "\n... [output lost: Postgres did not take it] ...\n"


class _Stream:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.parts: list[str] = []
        self.received = 0
        self.truncated = False
        self.marked = False
        self.note = ""
        self.seq = 0

    def add(self, data: bytes) -> None:
        if self.truncated:
            return
        room = self.max_bytes - self.received
        if len(data) > room:
            data, self.truncated = data[:room], True
        self.received += len(data)
        self.parts.append(self.decoder.decode(data, final=self.truncated))

    def take(self, final: bool) -> tuple[int, str] | None:
        ended = final or self.truncated
        text = "".join(self.parts) + (self.decoder.decode(b"", final=True) if ended else "")
        keep = 0 if ended else secretstore.unsafe_tail(text)
        self.parts = [text[len(text) - keep :]] if keep else []
        chunk = self.note + secretstore.redact_text(text[: len(text) - keep])
        self.note = ""
        if self.truncated and not self.marked:
            chunk, self.marked = chunk + TRUNCATED.format(self.max_bytes), True
        if not chunk:
            return None
        self.seq += 1
        return self.seq, chunk


class Recording:
    """One attempt's output; ``add`` is what the runner calls (``base.Output``)."""

    def __init__(self, execution_id: int, attempt: int, max_bytes: int) -> None:
        self.execution_id, self.attempt = execution_id, attempt
        self._lock = threading.Lock()
        self._streams = {name: _Stream(max_bytes) for name in STREAMS}
        self.closed = False
        self.written_at = 0.0
        self.done = threading.Event()

    def add(self, stream: str, data: bytes) -> None:
        with self._lock:
            self._streams[stream].add(data)

    def close(self) -> None:
        with self._lock:
            self.closed = True

    def take(self) -> tuple[bool, list[dict[str, Any]]]:
        """Whether this is the last take, and the rows of the new pieces."""
        with self._lock:
            final = self.closed
            taken = [(name, stream.take(final)) for name, stream in self._streams.items()]
        rows = [
            {"execution_id": self.execution_id, "attempt": self.attempt, "stream": name}
            | {"seq": piece[0], "chunk": piece[1]}
            for name, piece in taken
            if piece is not None
        ]
        return final, rows

    def lost(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            for row in rows:
                self._streams[row["stream"]].note = LOST


class Writer:
    """This process's recordings and the one thread that writes them (made lazily, so a
    forked pool child makes its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: list[Recording] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner_pid: int | None = None

    @contextmanager
    def recording(
        self, runner: str, execution_id: int, attempt: int, max_bytes: int
    ) -> Iterator[Recording | None]:
        if runner not in RECORDED:
            yield None
            return
        recording = Recording(execution_id, attempt, max_bytes)
        with self._lock:
            self._active.append(recording)
            alive = self._thread is not None and self._thread.is_alive()
            if self._owner_pid != os.getpid() or not alive:
                self._owner_pid = os.getpid()
                self._active = [recording]  # a parent's recordings are not this child's
                self._thread = threading.Thread(target=self._run, name="usher-output", daemon=True)
                self._thread.start()
        try:
            yield recording
        finally:
            recording.close()
            self._wake.set()
            if not recording.done.wait(FINAL_WAIT_S):
                log.warning(
                    "execution %s attempt %s: its output is still being written (Postgres "
                    "is slow); the attempt ends without waiting",
                    execution_id,
                    attempt,
                )

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_S)
            self._wake.clear()
            with self._lock:
                active = list(self._active)
            now = time.monotonic()
            for recording in active:
                if recording.closed or now - recording.written_at >= FLUSH_S:
                    self._write(recording)

    def _write(self, recording: Recording) -> None:
        recording.written_at = time.monotonic()
        final, rows = recording.take()
        if rows:
            try:
                context.hot().run(lambda c: c.cursor().executemany(sql.raw("output_append"), rows))
            except Exception:
                log.exception(
                    "execution %s attempt %s: writing its output failed; that piece is lost",
                    recording.execution_id,
                    recording.attempt,
                )
                recording.lost(rows)
        if final:
            with self._lock:
                if recording in self._active:
                    self._active.remove(recording)
            recording.done.set()


writer = Writer()
