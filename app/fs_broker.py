"""The ``filesystem://`` broker used when no broker is named, made safe to read while written.

Kombu's filesystem channel writes a message in place, and a consumer that lists the folder
at that moment reads half a message: a JSONDecodeError that stops the worker's consumer
(seen under load in the batch and worker tests). This channel writes each message under a
name no consumer matches and renames it into place: a rename is atomic, so a consumer sees
a whole message or none. Registered as the ``usherfs`` transport by ``app.celery``.

Kombu reads a folder's messages in file-name order. Its names start with the millisecond,
then a random uuid, so two messages sent within one millisecond (a batch of grants) came
out in random order. Here a name starts with the monotonic clock in nanoseconds (shared by
every process of the host), padded to a fixed width, and this process's send counter: one
sender's messages keep their order; different senders' keep it to within the time a
message takes to write (the name is taken before the write, seen after the rename).
"""

from __future__ import annotations

import itertools
import os
import uuid
from time import monotonic_ns
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps

ALIAS = "usherfs"

_sent = itertools.count()


def message_name(queue: str) -> str:
    """``<monotonic ns, 20 digits>_<send count, 12 digits>_<uuid>.<queue>.msg``."""
    return f"{monotonic_ns():020d}_{next(_sent):012d}_{uuid.uuid4().hex}.{queue}.msg"


class Channel(filesystem.Channel):
    # kombu names the second parameter "message" in AbstractChannel, "payload" here.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        final = os.path.join(self.data_folder_out, message_name(queue))
        # No queue's name in it: no kombu version's matching can pick it up half-written.
        partial = os.path.join(self.data_folder_out, f"partial-{uuid.uuid4()}.part")
        try:
            with open(partial, "wb") as out:
                out.write(dumps(payload).encode())
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    TRANSPORT_ALIASES[ALIAS] = f"{__name__}:Transport"
