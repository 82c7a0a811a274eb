"""SQLAlchemy 2 typed models. The schema itself is made only by Alembic (migrations/)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Statuses that hold a concurrency slot.
ACTIVE = ("scheduled", "running")
FINISHED = ("succeeded", "failed", "timed_out", "dead", "cancelled", "expired")
STATUSES = ("queued", *ACTIVE, "retrying", *FINISHED)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Pack(Base):
    __tablename__ = "packs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, server_default="")
    policy: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    actions: Mapped[list[Action]] = relationship(back_populates="pack")


class Action(Base):
    __tablename__ = "actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pack_id: Mapped[int] = mapped_column(ForeignKey("packs.id", ondelete="CASCADE"), index=True)
    ref: Mapped[str] = mapped_column(String(401), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    runner: Mapped[str] = mapped_column(String(50))
    runner_config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    parameters_schema: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    timeout_s: Mapped[int | None] = mapped_column(Integer)
    policy: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    pack: Mapped[Pack] = relationship(back_populates="actions")


class Queue(Base):
    """One waiting line: an action, or one partition of it. The row lock is the semaphore."""

    __tablename__ = "queues"
    __table_args__ = (UniqueConstraint("action_id", "partition_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"))
    partition_key: Mapped[str] = mapped_column(Text, server_default="")
    next_seq: Mapped[int] = mapped_column(BigInteger, server_default="0")
    queue_length: Mapped[int] = mapped_column(Integer, server_default="0")
    active_count: Mapped[int] = mapped_column(Integer, server_default="0")
    total_enqueued: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_completed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_failed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_cancelled: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_expired: Mapped[int] = mapped_column(BigInteger, server_default="0")
    last_updated: Mapped[datetime] = _now()


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = (
        # The waiting line, in grant order: a partial index holds only waiting rows.
        Index(
            "ix_executions_waiting",
            "queue_id",
            text("priority DESC"),
            "seq",
            postgresql_where=text("status = 'queued'"),
        ),
        Index(
            "ix_executions_active",
            "status",
            "lease_expires_at",
            postgresql_where=text("status IN ('scheduled', 'running')"),
        ),
        Index("ix_executions_action_id_id", "action_id", text("id DESC")),
        Index("ix_executions_status_id", "status", text("id DESC")),
        UniqueConstraint("queue_id", "seq"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"))
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(20))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    attempt: Mapped[int] = mapped_column(Integer, server_default="1")
    enqueued_at: Mapped[datetime] = _now()
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(300))
    result: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)

    action: Mapped[Action] = relationship()
