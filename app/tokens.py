"""API tokens: random secrets, stored only as their SHA-256, admin or read-only; and the
dashboard's server-side sessions opened with them."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app import queries
from app.errors import InvalidRequest, NotFound

PREFIX = "ush_"
ADMIN_NAME = "USHER_API_TOKEN"


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
        return Identity(ADMIN_NAME, admin=True)
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


def session_mac(key: bytes, token_hash: str) -> str:
    """What a session cookie carries of its token: a keyed MAC of the stored hash, so the
    cookie holds neither the token nor the value in Postgres."""
    return hmac.new(key, token_hash.encode(), hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def open_session(session: Session, token_name: str, lifetime: timedelta) -> str:
    """Store a new dashboard session and return its nonce (the cookie's; Postgres keeps only
    its SHA-256). Expired sessions are removed on the way."""
    session.execute(text("DELETE FROM web_sessions WHERE expires_at < now()"))
    nonce = secrets.token_urlsafe(32)
    session.execute(
        text("""INSERT INTO web_sessions (nonce_hash, token_name, expires_at)
                VALUES (:hash, :name, now() + make_interval(secs => :lifetime))"""),
        {"hash": digest(nonce), "name": token_name, "lifetime": lifetime.total_seconds()},
    )
    return nonce


def session_identity(
    session: Session, nonce: str, mac: str, key: bytes, admin_token: str | None
) -> Identity | None:
    """Who holds an open session: it exists, was not ended, has not expired, and its token is
    still valid (not revoked, or still the USHER_API_TOKEN) and is the one it was opened with."""
    row = session.execute(
        text("""SELECT s.token_name, t.token_hash, t.read_only
                FROM web_sessions s
                LEFT JOIN api_tokens t ON t.name = s.token_name AND t.revoked_at IS NULL
                WHERE s.nonce_hash = :hash AND s.ended_at IS NULL AND s.expires_at > now()"""),
        {"hash": digest(nonce)},
    ).one_or_none()
    if row is None:
        return None
    if row.token_name == ADMIN_NAME and admin_token:
        if _same(mac, session_mac(key, digest(admin_token))):
            return Identity(ADMIN_NAME, admin=True)
    if row.token_hash is not None and _same(mac, session_mac(key, row.token_hash)):
        return Identity(row.token_name, admin=not row.read_only)
    return None


def end_session(session: Session, nonce: str) -> None:
    session.execute(
        text("""UPDATE web_sessions SET ended_at = now()
                WHERE nonce_hash = :hash AND ended_at IS NULL"""),
        {"hash": digest(nonce)},
    )
