"""Each test run gets a broker namespace of its own, and each test a clean one.

RabbitMQ: a vhost made for the run with ``rabbitmqctl`` (the server runs on this machine)
and deleted with everything in it at the end. Redis: a database of its own for the run,
claimed with SETNX, flushed at the end. Within the run, each test's database is a new
installation, whose queues carry its id (``usher.<installation>.events``, ...): no sweep,
event batch or wake-up a test left behind can reach the next test's workers. Between tests
only Redis's unacked messages (one hash for every queue of a database) are emptied. Where
the vhost cannot be made (no ``rabbitmqctl`` here: a remote broker) the URL is used as
given.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import kombu
import redis
from kombu.utils.url import maybe_sanitize_url

REDIS_DATABASES = range(1, 16)
CLAIM = "usher-test-claimed-by"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def _amqp_vhost(url: str) -> Iterator[str]:
    if shutil.which("rabbitmqctl") is None or os.geteuid() != 0:
        # Not a warning: the suite turns warnings into errors, and a remote broker is allowed.
        print(f"no rabbitmqctl here: this run shares {maybe_sanitize_url(url)}", file=sys.stderr)
        yield url
        return
    vhost = f"usher-test-{uuid.uuid4().hex[:10]}"
    given = kombu.Connection(url)
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, given.userid or "guest", ".*", ".*", ".*")
        yield given.clone(virtual_host=vhost).as_uri(include_password=True)
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@contextlib.contextmanager
def _redis_database(url: str) -> Iterator[str]:
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    mine = uuid.uuid4().hex
    for number in REDIS_DATABASES:
        client = redis.Redis.from_url(f"{base}/{number}")
        if client.dbsize() == 0 and client.set(CLAIM, mine, nx=True):
            try:
                yield f"{base}/{number}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise RuntimeError(f"every Redis database 1..15 of {base} is in use by another test run")


@contextlib.contextmanager
def namespace(url: str) -> Iterator[str]:
    """The run's own namespace on the broker at ``url``."""
    scheme = url.split("://", 1)[0]
    made = _redis_database(url) if scheme.startswith("redis") else _amqp_vhost(url)
    with made as own:
        yield own


def clean(url: str) -> None:
    """Between two tests: the unacked messages a killed worker left in Redis, which the next
    worker would restore (to the queues of the installation before, which nobody reads)."""
    if url.split("://", 1)[0].startswith("redis"):
        client = redis.Redis.from_url(url)
        keys = [k for k in ("unacked", "unacked_index", "unacked_mutex") if client.exists(k)]
        if keys:
            client.delete(*keys)
        client.close()
