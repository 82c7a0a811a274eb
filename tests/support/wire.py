"""Requests below Flask's test client: a body nothing may read, and a raw HTTP exchange with
a server on a port (waitress, as ``usher web`` runs it)."""

from __future__ import annotations

import io
import socket
from typing import Any


class Unreadable(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise AssertionError("the body was read")


def exchange(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send ``request`` and read the answer until the server closes (it must, by itself):
    its status line, its headers (names in lower case) and its body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body
