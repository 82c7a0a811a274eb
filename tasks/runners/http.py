"""Webhooks: one HTTP request with httpx; the answer's status decides success and retries.

``send`` (the request and its classification) is shared with the Slack runner. Messages
name the scheme and host only: webhook URLs often carry a secret in their path or query.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from tasks.runners import base

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DEFAULT_TIMEOUT_S = 30.0
# Read at most this much of an answer: a runaway response must not fill the worker's memory.
MAX_BODY_BYTES = 4 * base.MAX_OUTPUT_CHARS
MESSAGE_BODY_CHARS = 500


def run(ctx: base.RunContext) -> Any:
    method = ctx.config.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise base.RunnerError(
            f"runner_config.method must be one of {', '.join(sorted(METHODS))}, not {method!r}",
            permanent=True,
        )
    verify_tls = ctx.config.get("verify_tls", True)
    if not isinstance(verify_tls, bool):
        raise base.RunnerError("runner_config.verify_tls must be true or false", permanent=True)
    return send(
        method.upper(),
        ctx.require("url"),
        headers=ctx.config.get("headers"),
        body=ctx.config.get("body"),
        timeout_s=base.timeout_s(ctx, DEFAULT_TIMEOUT_S),
        verify_tls=verify_tls,
        allow_hosts=_allow_hosts(ctx.config.get("allow_hosts")),
        output=ctx.output,
    )


def _allow_hosts(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(h, str) and h for h in value):
        raise base.RunnerError("runner_config.allow_hosts must be a list of host names", True)
    return tuple(h.lower().rstrip(".") for h in value)


def _allowed(host: str, allow_hosts: tuple[str, ...]) -> bool:
    """``host`` is one of ``allow_hosts``, or below a ``*.domain`` entry."""
    host = host.lower().rstrip(".")
    return any(
        host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:]))
        for allowed in allow_hosts
    )


def send(
    method: str,
    url: str,
    *,
    headers: Any = None,
    body: Any = None,
    timeout_s: float,
    verify_tls: bool = True,
    allow_hosts: tuple[str, ...] | None = None,
    output: base.Output | None = None,
) -> dict[str, Any]:
    """Send one request; return ``{"status", "body"}`` for a 1xx/2xx answer, raise otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise base.RunnerError("runner_config.url must be an http(s) URL", permanent=True)
    where = f"{method} {parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    if allow_hosts is not None and not _allowed(parts.hostname, allow_hosts):
        raise base.RunnerError(
            f"{where}: host {parts.hostname!r} is not in runner_config.allow_hosts",
            permanent=True,
        )
    request_headers = _headers(headers)
    payload = _payload(body, request_headers)
    deadline = time.monotonic() + timeout_s
    try:
        with (
            httpx.Client(timeout=timeout_s, verify=verify_tls, follow_redirects=False) as client,
            client.stream(method, url, headers=request_headers, **payload) as response,
        ):
            raw = _read(response, deadline, output)
    except httpx.TimeoutException as error:
        raise base.RunnerTimeout(
            f"{where}: no answer within {timeout_s:g}s ({type(error).__name__})"
        ) from error
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError) as error:
        raise base.RunnerError(f"{where}: invalid request: {error}", permanent=True) from error
    except httpx.RequestError as error:
        raise base.RunnerError(
            f"{where}: {type(error).__name__}: {error}", permanent=_certificate_rejected(error)
        ) from error
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    result = {"status": response.status_code, "body": _body(response, text)}
    if response.status_code < 300:
        return result
    details = {**result, "body": base.truncate(text)}
    message = f"{where} answered {response.status_code}: {base.truncate(text, MESSAGE_BODY_CHARS)}"
    if response.status_code < 400:
        location = response.headers.get("location", "")
        raise base.RunnerError(
            f"{message} (redirect to {location!r}; point url at the final address)",
            permanent=True,
            details=details,
        )
    transient = response.status_code >= 500 or response.status_code == 429
    raise base.RunnerError(message, permanent=not transient, details=details)


def _certificate_rejected(error: BaseException | None) -> bool:
    # Retrying will not make an untrusted, expired or mismatched certificate acceptable.
    while error is not None:
        if isinstance(error, ssl.SSLCertVerificationError):
            return True
        error = error.__cause__ or error.__context__
    return False


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise base.RunnerError("runner_config.headers must be a mapping", permanent=True)
    return {str(name): _text(header) for name, header in value.items()}


def _payload(body: Any, headers: dict[str, str]) -> dict[str, Any]:
    if body is None:
        return {}
    if isinstance(body, dict | list):
        return {"json": body}
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "text/plain; charset=utf-8"
    return {"content": _text(body).encode()}


def _read(response: httpx.Response, deadline: float, output: base.Output | None) -> bytes:
    """The body, at most MAX_BODY_BYTES of it; each piece also to ``output`` (as stdout)
    as it arrives."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the answer took too long to arrive")
        if output is not None:
            output.add("stdout", chunk[: MAX_BODY_BYTES - size])
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY_BYTES:
            break
    return b"".join(chunks)[:MAX_BODY_BYTES]


def _body(response: httpx.Response, text: str) -> Any:
    if "json" in response.headers.get("content-type", "") and len(text) <= base.MAX_OUTPUT_CHARS:
        try:
            return json.loads(text)
        except ValueError:
            pass
    return base.truncate(text)
