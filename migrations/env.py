"""Alembic environment: the URL comes from the caller (``usher db upgrade``) or the settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from app import config as app_config
from app import db
from app.models import Base

config = context.config
url = config.attributes.get("url") or db.database_url(app_config.load())


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool, connect_args=db.keepalives(url))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            # Several processes may start at once (usher up, test workers): one migrates.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(724311)")
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
