"""Per-process access to the settings and the database from inside worker processes."""

from __future__ import annotations

import os
import socket
from functools import cache

from celery import current_app
from sqlalchemy import Engine

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


def worker_name(nodename: str | None = None) -> str:
    """The Celery node name (or host) and the pool process id: ``w1@host/1234``."""
    return f"{nodename or socket.gethostname()}/{os.getpid()}"
