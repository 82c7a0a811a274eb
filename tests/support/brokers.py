"""Each test run gets a broker namespace of its own, and each test a clean one.

RabbitMQ: a vhost made for the run with ``rabbitmqctl`` (the server runs on this machine)
and deleted with everything in it at the end; between tests the queues every deployment
shares (``usher.default``, ``usher.events``) are purged, kept with their bindings (a test
may publish before its workers declare anything), so no sweep, event batch or wake-up a
test left behind reaches the next test's workers (action queues are per test already:
every test's pack has its own name). Redis: a database of its own for the run, claimed
with SETNX, flushed at the end; between tests its shared queues and unacked messages are
emptied, its bindings kept. Where the vhost cannot be made (no ``rabbitmqctl`` here: a
remote broker) the URL is used as given.
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

from app import celery as usher_celery

SHARED_QUEUES = (usher_celery.DEFAULT_QUEUE, usher_celery.EVENTS_QUEUE)
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
    """Empty what deployments share, between two tests: the messages, never the queues or
    their bindings (a test may publish before its workers declare anything)."""
    if url.split("://", 1)[0].startswith("redis"):
        client = redis.Redis.from_url(url)
        # A queue's list and its priority lists; the unacked messages a killed worker left,
        # which the next worker would restore. The exchange bindings stay.
        keys = [k for name in SHARED_QUEUES for k in client.scan_iter(match=f"{name}*")]
        keys += [k for k in ("unacked", "unacked_index", "unacked_mutex") if client.exists(k)]
        if keys:
            client.delete(*keys)
        client.close()
        return
    with kombu.Connection(url, connect_timeout=5) as connection:
        for name in SHARED_QUEUES:
            channel = connection.channel()
            try:
                channel.queue_purge(name)
            except connection.channel_errors:
                pass  # not declared in this vhost yet
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
