"""Per-process access to the settings and the database from inside worker processes."""

from __future__ import annotations

import os
import socket
import threading
from functools import cache

from celery import Celery, current_app, signals
from sqlalchemy import Engine

from app import celery as usher_celery
from app import config, db


def settings() -> config.Settings:
    configured = current_app.conf.get("usher_settings")
    return configured if isinstance(configured, config.Settings) else _load()


@cache
def _load() -> config.Settings:
    return config.load()


def engine() -> Engine:
    # db.engine_for keys by pid, so a forked pool child never reuses its parent's pool.
    return db.engine_for(db.database_url(settings()))


def hot() -> db.Hot:
    """This process's connections for single-statement transitions (``db.Hot``)."""
    configured = settings()
    return db.hot_for(db.database_url(configured), durable=configured.durable_transitions)


class _Local(threading.local):
    publisher: usher_celery.Publisher | None = None
    pid: int | None = None


_local = _Local()


def publisher(app: Celery) -> usher_celery.Publisher:
    """This thread's long-lived producer (``app.celery.Publisher``), made on first use."""
    if _local.publisher is None or _local.pid != os.getpid():
        _local.publisher, _local.pid = usher_celery.Publisher(app), os.getpid()
    return _local.publisher


@signals.worker_process_shutdown.connect  # a pool process
@signals.worker_shutdown.connect  # the worker's main process (revokes, killed children)
def _close_publisher(**_: object) -> None:
    if _local.publisher is not None and _local.pid == os.getpid():
        _local.publisher.close()
        _local.publisher = None


def worker_name(nodename: str | None = None) -> str:
    """The Celery node name (or host) and the pool process id: ``w1@host/1234``."""
    return f"{nodename or socket.gethostname()}/{os.getpid()}"
