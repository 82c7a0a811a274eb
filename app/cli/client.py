"""How every ``usher`` command that serves no process reaches Usher: the REST API, through
one client (httpx) over one of two transports.

- ``remote``: over HTTP to ``--url`` / ``USHER_URL`` with ``--token`` / ``USHER_TOKEN``,
  with that token's rights (a read-only token lists; a mutation gets the API's 403);
- ``local`` (no URL given): the same API app in this process (``web.local_app``), on the
  database of the settings, acting as the admin ``cli:<os user>``.

Either way a command sends the same requests and gets the same answers, errors included,
so its tables and ``--json`` are the same. Every request goes through a name of ``ROUTES``,
whose methods and paths ``problems`` checks against the API's OpenAPI document (a test
does, against the document of the app of this version).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from celery import Celery

from app import config
from app.errors import UsherError


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as the OpenAPI document writes it: /api/v1/executions/{execution_id}


ROUTES = {
    "actions": Route("GET", "/api/v1/actions"),
    "action": Route("GET", "/api/v1/actions/{ref}"),
    "pause": Route("POST", "/api/v1/actions/{ref}/pause"),
    "resume": Route("POST", "/api/v1/actions/{ref}/resume"),
    "policy": Route("PATCH", "/api/v1/actions/{ref}/policy"),
    "cancel_waiting": Route("POST", "/api/v1/actions/{ref}/cancel-waiting"),
    "queues": Route("GET", "/api/v1/queues"),
    "submit": Route("POST", "/api/v1/executions"),
    "executions": Route("GET", "/api/v1/executions"),
    "execution": Route("GET", "/api/v1/executions/{execution_id}"),
    "cancel": Route("POST", "/api/v1/executions/{execution_id}/cancel"),
    "rerun": Route("POST", "/api/v1/executions/{execution_id}/rerun"),
    "output": Route("GET", "/api/v1/executions/{execution_id}/output"),
    "send_event": Route("POST", "/api/v1/events"),
    "events": Route("GET", "/api/v1/events"),
    "event": Route("GET", "/api/v1/events/{event_id}"),
    "replay_event": Route("POST", "/api/v1/events/{event_id}/replay"),
    "dlq": Route("GET", "/api/v1/dlq"),
    "replay_dead": Route("POST", "/api/v1/dlq/{execution_id}/replay"),
    "purge_dlq": Route("POST", "/api/v1/dlq/purge"),
    "schedules": Route("GET", "/api/v1/schedules"),
    "pause_schedule": Route("POST", "/api/v1/schedules/{ref}/pause"),
    "resume_schedule": Route("POST", "/api/v1/schedules/{ref}/resume"),
    "webhooks": Route("GET", "/api/v1/webhooks"),
    "pools": Route("GET", "/api/v1/pools"),
    "pool": Route("GET", "/api/v1/pools/{ref}"),
    "set_pool": Route("PATCH", "/api/v1/pools/{ref}"),
    "audit": Route("GET", "/api/v1/audit"),
    "packs": Route("GET", "/api/v1/packs"),
    "load_packs": Route("POST", "/api/v1/packs"),
    "rules": Route("GET", "/api/v1/rules"),
    "rule": Route("GET", "/api/v1/rules/{ref}"),
    "enable_rule": Route("POST", "/api/v1/rules/{ref}/enable"),
    "disable_rule": Route("POST", "/api/v1/rules/{ref}/disable"),
    "tokens": Route("GET", "/api/v1/tokens"),
    "create_token": Route("POST", "/api/v1/tokens"),
    "revoke_token": Route("POST", "/api/v1/tokens/{name}/revoke"),
}
PARAMETER = re.compile(r"{(\w+)}")


class ApiError(UsherError):
    """The API refused the request: its status, code and message, as it answered them."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def exit_code(self) -> int:
        """1: refused (4xx); 2: no answer to give now (5xx: the database is down, say)."""
        return 1 if self.status < 500 else 2


class Unreachable(UsherError):
    """The API at USHER_URL did not answer."""

    code = "unreachable"
    exit_code = 2


@dataclass
class Api:
    """Calls of ``ROUTES`` by name: path values, query and body in, the JSON answer out;
    an error answer raises ApiError with its message."""

    http: httpx.Client
    where: str  # what an error names: the URL, or "this process"

    def call(
        self,
        name: str,
        /,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        **path: Any,
    ) -> Any:
        route = ROUTES[name]
        url = route.path.format(**{key: quote(str(value), safe="") for key, value in path.items()})
        query = params.items() if isinstance(params, dict) else params or []
        kept: list[tuple[str, str | int | float | bool | None]] = [
            (key, _text(value)) for key, value in query if value is not None
        ]
        try:
            answer = self.http.request(route.method, url, json=body, params=kept)
        except httpx.TransportError as error:
            raise Unreachable(
                f"cannot reach the API at {self.where} ({type(error).__name__}: "
                f"{str(error)[:200]}); is `usher web` running there and USHER_URL right?"
            ) from None
        if answer.status_code >= 400:
            raise _refusal(answer, self.where)
        return answer.json()

    def close(self) -> None:
        self.http.close()


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _refusal(answer: httpx.Response, where: str) -> ApiError:
    try:
        error = answer.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code = answer.reason_phrase.lower().replace(" ", "_") or "error"
        message = (
            f"{answer.status_code} {answer.reason_phrase} from {where}: not an answer of "
            "Usher's API (is USHER_URL the address `usher web` serves?)"
        )
    if answer.status_code == 401 and where != LOCAL:
        message += " (give an API token: --token or USHER_TOKEN; `usher tokens create NAME`)"
    return ApiError(answer.status_code, code, message)


LOCAL = "this process"


def remote(url: str, token: str | None) -> Api:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx.Client(
        base_url=url.rstrip("/"),
        headers=headers,
        # An event's answer may wait up to 30 s for its enforcements (?wait=).
        timeout=httpx.Timeout(45.0, connect=10.0),
        follow_redirects=False,
    )
    return Api(http, url)


def local(settings: config.Settings, celery_app: Celery, actor: str) -> Api:
    import web  # the whole app: only a command that needs it pays for the import

    app = web.local_app(settings, celery_app, actor)
    http = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://usher.local")
    return Api(http, LOCAL)


def problems(document: dict[str, Any]) -> list[str]:
    """Each route of ROUTES the OpenAPI document does not have, by path, method and path
    parameters: what would make a command of this client fail against that API."""
    found = []
    paths = document.get("paths", {})
    for name, route in ROUTES.items():
        operation = paths.get(route.path, {}).get(route.method.lower())
        if operation is None:
            found.append(f"{name}: {route.method} {route.path} is not in the document")
            continue
        declared = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "path"}
        wanted = set(PARAMETER.findall(route.path))
        if declared != wanted:
            found.append(f"{name}: path parameters {sorted(wanted)} != {sorted(declared)}")
    return found
