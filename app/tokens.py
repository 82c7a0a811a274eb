"""API tokens: random secrets, stored only as their SHA-256, admin or read-only."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app import queries
from app.errors import InvalidRequest, NotFound

PREFIX = "ush_"


@dataclass(frozen=True)
class Identity:
    name: str
    admin: bool


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(session: Session, name: str, read_only: bool = False) -> str:
    """Store a new token and return it: the only time it is ever shown."""
    if not name or len(name) > 200:
        raise InvalidRequest("a token needs a name of 1 to 200 characters")
    token = PREFIX + secrets.token_urlsafe(32)
    inserted = session.execute(
        text("""INSERT INTO api_tokens (name, token_hash, read_only)
                VALUES (:name, :hash, :read_only) ON CONFLICT (name) DO NOTHING RETURNING id"""),
        {"name": name, "hash": digest(token), "read_only": read_only},
    ).one_or_none()
    if inserted is None:
        raise InvalidRequest(f"a token named {name!r} exists; revoke it or pick another name")
    return token


def identify(session: Session, token: str, admin_token: str | None) -> Identity | None:
    """Who holds ``token``: the USHER_API_TOKEN admin, a stored token, or nobody."""
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Identity("USHER_API_TOKEN", admin=True)
    wanted = digest(token)
    # last_used_at is kept to the minute: a write (and a WAL flush) per request would make
    # every GET pay a commit and contend on the token's row.
    row = session.execute(
        text("""SELECT name, token_hash, read_only,
                       last_used_at IS NULL OR last_used_at < now() - interval '1 minute'
                           AS stale
                FROM api_tokens WHERE token_hash = :hash AND revoked_at IS NULL"""),
        {"hash": wanted},
    ).one_or_none()
    if row is not None and row.stale:
        session.execute(
            text("UPDATE api_tokens SET last_used_at = now() WHERE token_hash = :hash"),
            {"hash": wanted},
        )
    if row is None or not hmac.compare_digest(row.token_hash, wanted):
        return None
    return Identity(row.name, admin=not row.read_only)


def listing(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        text("""SELECT name, read_only, created_at, last_used_at, revoked_at
                FROM api_tokens ORDER BY name""")
    ).mappings()
    return [queries.iso_row(r) for r in rows]


def revoke(session: Session, name: str) -> None:
    done = session.execute(
        text("""UPDATE api_tokens SET revoked_at = now()
                WHERE name = :name AND revoked_at IS NULL RETURNING id"""),
        {"name": name},
    ).one_or_none()
    if done is None:
        raise NotFound(f"no active token named {name!r}")
