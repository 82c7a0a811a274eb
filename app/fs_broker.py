"""The ``filesystem://`` broker used when no broker is named, made safe to read while written.

Kombu's filesystem channel writes a message in place, and a consumer that lists the folder
at that moment reads half a message: a JSONDecodeError that stops the worker's consumer
(seen under load in the batch and worker tests). This channel writes each message under a
name no consumer matches and renames it into place: a rename is atomic, so a consumer sees
a whole message or none. Registered as the ``usherfs`` transport by ``app.celery``.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps

ALIAS = "usherfs"


class Channel(filesystem.Channel):
    # kombu names the second parameter "message" in AbstractChannel, "payload" here.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
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
