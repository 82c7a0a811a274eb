"""API tokens: random secrets, stored only as their SHA-256, admin or read-only; and the
dashboard's server-side sessions opened with them."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from app import queries, sql
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
        sql.query("create_token"),
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
    # last_used_at is kept to the minute (identify_token says why).
    row = session.execute(sql.query("identify_token"), {"hash": wanted}).one_or_none()
    if row is not None and row.stale:
        session.execute(sql.query("touch_token"), {"hash": wanted})
    if row is None or not hmac.compare_digest(row.token_hash, wanted):
        return None
    return Identity(row.name, admin=not row.read_only)


def listing(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(sql.query("list_tokens")).mappings()
    return [queries.iso_row(r) for r in rows]


def revoke(session: Session, name: str) -> None:
    done = session.execute(sql.query("revoke_token"), {"name": name}).one_or_none()
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
    session.execute(sql.query("drop_expired_web_sessions"))
    nonce = secrets.token_urlsafe(32)
    session.execute(
        sql.query("open_web_session"),
        {"hash": digest(nonce), "name": token_name, "lifetime": lifetime.total_seconds()},
    )
    return nonce


def session_identity(
    session: Session, nonce: str, mac: str, key: bytes, admin_token: str | None
) -> Identity | None:
    """Who holds an open session: it exists, was not ended, has not expired, and its token is
    still valid (not revoked, or still the USHER_API_TOKEN) and is the one it was opened with."""
    row = session.execute(sql.query("web_session_identity"), {"hash": digest(nonce)}).one_or_none()
    if row is None:
        return None
    if row.token_name == ADMIN_NAME and admin_token:
        if _same(mac, session_mac(key, digest(admin_token))):
            return Identity(ADMIN_NAME, admin=True)
    if row.token_hash is not None and _same(mac, session_mac(key, row.token_hash)):
        return Identity(row.token_name, admin=not row.read_only)
    return None


def end_session(session: Session, nonce: str) -> None:
    session.execute(sql.query("end_web_session"), {"hash": digest(nonce)})


class Recent:
    """The identities of the tokens this process checked in the last ``ttl_s``: a request
    whose token was checked that recently is not checked in Postgres again (the API's
    requests then make one transaction, their own, not two). A revocation reaches a process
    within ``ttl_s``; at once in the process that revoked (``forget``). Only valid tokens
    are kept (a refused one is checked each time, and counts towards the throttle), by their
    digest, at most ``size`` of them."""

    def __init__(self, ttl_s: float, size: int = 10_000) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._seen: dict[str, tuple[float, Identity]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Identity | None:
        key = digest(token)
        with self._lock:
            found = self._seen.get(key)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, token: str, identity: Identity) -> None:
        with self._lock:
            if len(self._seen) >= self.size:
                self._seen.clear()
            self._seen[digest(token)] = (time.monotonic() + self.ttl_s, identity)

    def forget(self) -> None:
        with self._lock:
            self._seen.clear()
