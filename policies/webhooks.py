"""Webhooks: what a webhook file means, storing it, and taking a delivery.

``POST /hooks/<ref>`` (``web.hooks``) is authenticated by the webhook's own secret, never by
a bearer token: an HMAC-SHA256 of the raw body (GitHub's ``X-Hub-Signature-256:
sha256=<hex>``) or a token header, compared in constant time. The secret is named in the pack
file (``{{ secrets.NAME }}``) and resolved by the web process at request time
(``app.secretstore``): its value is never stored.

A delivery becomes one event (the webhook's trigger, payload ``{"headers", "body"}``). Its
delivery id (a header, ``X-Usher-Delivery`` unless the file names another) is claimed by
inserting (webhook, delivery id) ``ON CONFLICT DO NOTHING``: a second delivery with the same
id waits for the first one's transaction and answers its event, however many arrive at
once. Functions take a session and never commit; publish the event after the commit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import secretstore, sql
from app.errors import InvalidRequest, UsherError
from app.models import Webhook, WebhookRequests
from policies import events, pack_files, parameters

log = logging.getLogger(__name__)
KINDS = ("hmac_sha256", "token")  # exactly one of them in ``auth``
DELIVERY_HEADER = "X-Usher-Delivery"
MAX_DELIVERY_ID = 200
SECRET_REFERENCE = re.compile(r"^\{\{\s*secrets\.(?P<name>[A-Za-z_][A-Za-z0-9_]{0,127})\s*\}\}$")
# Credentials are never stored in an event (nor the webhook's own signature or token).
PRIVATE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$", re.IGNORECASE)

LITERAL_SECRET = (
    "a secret is never written in a pack file: set it as USHER_SECRET_<NAME> (or the file "
    "$USHER_SECRETS_DIR/<NAME>) and write {{ secrets.<NAME> }} here"
)


class Unknown(UsherError):
    """No webhook with that name."""

    code = "not_found"
    status = 404


class BadSignature(UsherError):
    """The request's signature (or token) is missing or does not match this webhook's."""

    code = "unauthorized"
    status = 401


class Unavailable(UsherError):
    """This webhook cannot check requests now: its secret is not configured on the server."""

    code = "webhook_unavailable"
    status = 503


class NotJson(UsherError):
    """The body must be JSON (Content-Type: application/json)."""

    code = "unsupported_media_type"
    status = 415


class Headers(Protocol):
    """A request's headers, looked up case-insensitively (werkzeug's ``Headers``)."""

    def get(self, key: str) -> str | None: ...


@dataclass(frozen=True)
class Hook:
    """A stored webhook, as a request needs it."""

    id: int
    ref: str
    trigger: str
    kind: str
    secret_name: str
    header: str
    prefix: str
    delivery_header: str


@dataclass(frozen=True)
class Received:
    event_id: int
    duplicate: bool  # the delivery id was seen: the first delivery's event


# --- a webhook file -----------------------------------------------------------------------


def _kind(webhook: dict[str, Any]) -> str:
    return next(kind for kind in KINDS if kind in webhook["auth"])


def problem(webhook: dict[str, Any]) -> pack_files.Problem | None:
    """What is wrong with a webhook file its schema took. A message never quotes the secret:
    a literal one would end up in the console and the logs."""
    given = [kind for kind in KINDS if kind in webhook["auth"]]
    if len(given) != 1:
        choice = " or ".join(KINDS)
        if not given:
            return ["auth"], f"give exactly one of {choice}"
        return ["auth", given[1]], f"give exactly one of {choice}, not both"
    auth = webhook["auth"][given[0]]
    where = ["auth", given[0], "secret"]
    secret = auth["secret"]
    if not isinstance(secret, str) or "{{" not in secret:
        return where, LITERAL_SECRET
    found = SECRET_REFERENCE.match(secret)
    if found is None:
        return where, "must be exactly one {{ secrets.NAME }} reference (letters, digits, _)"
    if found["name"] in secretstore.RESERVED:
        return where, f"secret {found['name']} is reserved (USHER_SECRET_{found['name']})"
    delivery = webhook.get("delivery_header", DELIVERY_HEADER)
    if delivery.lower() == auth["header"].lower():
        return ["delivery_header"], f"must differ from auth.{given[0]}.header"
    return None


def store(session: Session, pack_id: int, pack: str, webhooks: list[dict[str, Any]]) -> None:
    """Upsert a pack's webhooks and delete those whose file is gone (with their deliveries and
    their request counts; the events they made stay)."""
    refs = []
    for webhook in webhooks:
        kind = _kind(webhook)
        auth = webhook["auth"][kind]
        found = SECRET_REFERENCE.match(auth["secret"])
        assert found is not None, "checked at load"
        values = {
            "pack_id": pack_id,
            "ref": f"{pack}.{webhook['name']}",
            "name": webhook["name"],
            "description": webhook.get("description", ""),
            "trigger": webhook.get("trigger") or f"{pack}.{webhook['name']}",
            "kind": kind,
            "secret_name": found["name"],
            "header": auth["header"],
            "prefix": auth.get("prefix", ""),
            "delivery_header": webhook.get("delivery_header", DELIVERY_HEADER),
        }
        refs.append(values["ref"])
        update = {k: v for k, v in values.items() if k != "ref"} | {"updated_at": func.now()}
        session.execute(
            insert(Webhook)
            .values(**values)
            .on_conflict_do_update(index_elements=[Webhook.ref], set_=update)
        )
    gone = list(
        session.execute(
            delete(Webhook)
            .where(Webhook.pack_id == pack_id, Webhook.ref.not_in(refs))
            .returning(Webhook.ref)
        ).scalars()
    )
    if gone:
        session.execute(delete(WebhookRequests).where(WebhookRequests.webhook.in_(gone)))


def listing(session: Session) -> list[dict[str, Any]]:
    """Every webhook: its ref, trigger, kind of auth, the secret's name, its headers."""
    return [dict(row) for row in session.execute(sql.query("list_webhooks")).mappings()]


# --- a delivery ---------------------------------------------------------------------------


def find(session: Session, ref: str) -> Hook:
    row = session.execute(sql.query("webhook_by_ref"), {"ref": ref}).one_or_none()
    if row is None:
        raise Unknown(f"no webhook named {ref[:200]!r}")
    return Hook(**row._asdict())


def secret(hook: Hook, secrets_dir: Path | None) -> str:
    """The webhook's secret, resolved now (Unavailable when it is not configured; the
    reason, naming the variable or file but never a value, is the one logged). An empty
    one is not configured: an empty token header would match it."""
    try:
        value = str(secretstore.resolve(hook.secret_name, secrets_dir))
    except secretstore.MissingSecret as error:
        log.error("webhook %s cannot check requests: %s", hook.ref, error.message)
        raise Unavailable() from None
    if not value.strip():
        log.error(
            "webhook %s cannot check requests: secret %s is empty", hook.ref, hook.secret_name
        )
        raise Unavailable()
    return value


def signature(secret_value: str, body: bytes, prefix: str = "") -> str:
    """What an HMAC-SHA256 webhook's header holds for ``body``: ``prefix`` + lower-case hex."""
    digest = hmac.new(secret_value.encode(), body, hashlib.sha256).hexdigest()
    return prefix + digest


def verify(hook: Hook, secret_value: str, headers: Headers, body: bytes) -> None:
    """BadSignature unless the request carries this webhook's signature (or token)."""
    given = headers.get(hook.header)
    if given is None:
        raise BadSignature(f"the {hook.header} header is missing")
    if hook.kind == "hmac_sha256":
        # Hex compares case-insensitively (some senders write upper case); the prefix does too.
        expected = signature(secret_value, body, hook.prefix).lower().encode()
        offered = given.strip().lower().encode("utf-8", "replace")
    else:
        expected, offered = secret_value.encode(), given.encode("utf-8", "replace")
    if not hmac.compare_digest(offered, expected):
        raise BadSignature(f"the {hook.header} header does not match this webhook's secret")


def body(content_type: str | None, raw: bytes) -> Any:
    """The JSON body: NotJson for another type or text that is not JSON, InvalidRequest
    (400) when it is nested deeper than ``parameters.MAX_DEPTH``."""
    mimetype = (content_type or "").partition(";")[0].strip()
    if not JSON_TYPE.match(mimetype):
        given = mimetype[:100] or "no Content-Type"
        raise NotJson(f"the body must be JSON (Content-Type: application/json), not {given}")
    too_deep = InvalidRequest(f"JSON nested deeper than {parameters.MAX_DEPTH} levels")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise too_deep from None
    except ValueError:  # also bad UTF-8
        raise NotJson("the body is not valid JSON") from None
    if parameters.depth(value) > parameters.MAX_DEPTH:
        raise too_deep
    return value


def payload(hook: Hook, headers: Iterable[tuple[str, str]], value: Any) -> dict[str, Any]:
    """The event's payload: the headers by lower-cased name (a repeated one joined with
    ", "), less credentials and the webhook's own signature or token, and the body."""
    hidden = PRIVATE_HEADERS | {hook.header.lower()}
    kept: dict[str, str] = {}
    for name, text in headers:
        key = name.lower()
        if key not in hidden:
            kept[key] = f"{kept[key]}, {text}" if key in kept else text
    return {"headers": kept, "body": value}


def delivery_id(hook: Hook, headers: Headers) -> str | None:
    value = headers.get(hook.delivery_header)
    if value is None or not value.strip():
        return None
    if len(value) > MAX_DELIVERY_ID:
        raise InvalidRequest(
            f"the {hook.delivery_header} header is longer than {MAX_DELIVERY_ID} characters"
        )
    return value.strip()


def receive(
    session: Session,
    hook: Hook,
    delivery: str | None,
    document: dict[str, Any],
    max_payload_bytes: int = events.MAX_PAYLOAD_BYTES,
) -> Received:
    """Store the delivery's event, or answer the event of the first delivery with its id.
    The payload is checked before any statement: a refused one leaves nothing behind, in a
    transaction shared with other deliveries too (``web.groups``)."""
    checked = events.document(hook.trigger, document, max_payload_bytes)
    if delivery is None:
        return Received(events.store_document(session, hook.trigger, checked), False)
    key = {"w": hook.id, "d": delivery}
    # Twice at most: a claim refused by a row that is gone when read (pruned by the sweeper
    # with its event in between) is claimed again.
    for _ in range(2):
        # Waits for a concurrent claim of the same id to commit (then refused) or roll back.
        if session.execute(sql.query("claim_webhook_delivery"), key).one_or_none() is not None:
            event_id = events.store_document(session, hook.trigger, checked)
            session.execute(sql.query("set_webhook_delivery_event"), {**key, "e": event_id})
            return Received(event_id, False)
        first = session.execute(sql.query("webhook_delivery_event"), key).scalar_one_or_none()
        if first is not None:
            return Received(int(first), True)
    # Nothing claimed, nothing to answer: a pack load removed the webhook meanwhile.
    raise Unknown(f"no webhook named {hook.ref!r}")


def count(session: Session, webhook: str, outcome: str, n: int = 1) -> None:
    """``n`` more requests of ``webhook`` (its ref; "" when it names none) ending ``outcome``."""
    session.execute(sql.query("count_webhook_request"), {"w": webhook, "o": outcome, "n": n})
