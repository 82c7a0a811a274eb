"""Sends one e-mail over SMTP (smtplib), optionally with STARTTLS or implicit TLS and a login.

A 4xx reply, a dropped or refused connection and a timeout are transient; a 5xx reply,
refused recipients, a failed login and a bad config are permanent.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from typing import Any

from tasks.runners import base

TLS_MODES = ("none", "starttls", "ssl")
DEFAULT_TIMEOUT_S = 30.0
QUIT_TIMEOUT_S = 2.0


def run(ctx: base.RunContext) -> Any:
    tls = ctx.config.get("tls", "none")
    if tls not in TLS_MODES:
        raise base.RunnerError(
            f"runner_config.tls must be one of {', '.join(TLS_MODES)}, not {tls!r}", permanent=True
        )
    host = ctx.require("host")
    port = _port(ctx.config.get("port", 465 if tls == "ssl" else 25))
    to, cc = _addresses(ctx, "to"), _addresses(ctx, "cc")
    message = _message(ctx, to, cc)
    recipients = [address for _, address in getaddresses(to + cc)]
    where = f"SMTP {host}:{port}"
    try:
        refused = _send(ctx, message, host, port, tls)
    except (smtplib.SMTPException, OSError) as error:
        raise _classify(error, where) from error
    result: dict[str, Any] = {
        "sent_to": [address for address in recipients if address not in refused],
        "message_id": message["Message-ID"],
    }
    if refused:
        result["refused"] = {address: _reply(*reply) for address, reply in refused.items()}
    return result


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise base.RunnerError("runner_config.port must be a port number", permanent=True)
    if not 0 < int(value) < 65536:
        raise base.RunnerError("runner_config.port must be a port number", permanent=True)
    return int(value)


def _addresses(ctx: base.RunContext, key: str) -> list[str]:
    value = ctx.config.get(key)
    templated = key in ctx.templated
    if templated and not _one_per_entry(ctx.source.get(key), value):
        raise base.RunnerError(
            f"runner_config.{key}: a templated recipient must be exactly one address",
            permanent=True,
        )
    if isinstance(value, str):
        # The pack's own text may list several addresses; a rendered value is one recipient.
        value = [value] if templated else [part for part in value.split(",") if part.strip()]
    if value in (None, []) and key != "to":
        return []
    if not value or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise base.RunnerError(
            f"runner_config.{key} must be an address or a list of addresses", permanent=True
        )
    if templated:
        for address in value:
            _one_address(address, key)
    return [address.strip() for address in value]


def _one_per_entry(source: Any, rendered: Any) -> bool:
    """Each entry of the pack's ``to`` rendered to one string: ``"{{ parameters.who }}"``
    given a list would otherwise add every address in it."""
    if isinstance(source, str):
        return isinstance(rendered, str)
    return (
        isinstance(source, list)
        and isinstance(rendered, list)
        and len(source) == len(rendered)
        and all(isinstance(entry, str) for entry in rendered)
    )


def _one_address(value: str, key: str) -> None:
    """A templated recipient is exactly one address: a value such as ``a@x, b@y`` (or one
    with a line break) would add recipients the action did not name."""
    parsed = getaddresses([value])
    if (
        len(parsed) != 1
        or "@" not in parsed[0][1]
        or any(c in value for c in ",;\r\n")
        or any(c.isspace() for c in parsed[0][1])
    ):
        raise base.RunnerError(
            f"runner_config.{key}: a templated recipient must be exactly one address",
            permanent=True,
        )


def _message(ctx: base.RunContext, to: list[str], cc: list[str]) -> EmailMessage:
    sender = ctx.require("from")
    message = EmailMessage()
    try:
        message["From"] = sender
        message["To"] = ", ".join(to)
        if cc:
            message["Cc"] = ", ".join(cc)
        message["Subject"] = str(ctx.config.get("subject") or "")
        message["Date"] = formatdate(localtime=True)
        # The sender's domain, not socket.getfqdn(): that can block on a slow resolver.
        domain = getaddresses([sender])[0][1].rpartition("@")[2] or "localhost"
        message["Message-ID"] = make_msgid(domain=domain)
        message.set_content(str(ctx.config.get("body") or ""))
        html = ctx.config.get("html")
        if html:
            message.add_alternative(str(html), subtype="html")
    except (ValueError, TypeError) as error:
        raise base.RunnerError(f"cannot build the message: {error}", permanent=True) from error
    return message


def _send(
    ctx: base.RunContext, message: EmailMessage, host: str, port: int, tls: str
) -> dict[str, tuple[int, bytes]]:
    context = ssl.create_default_context()
    if ctx.config.get("verify_tls", True) is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    timeout = base.timeout_s(ctx, DEFAULT_TIMEOUT_S)
    local_hostname = ctx.config.get("local_hostname") or None
    smtp: smtplib.SMTP
    if tls == "ssl":
        smtp = smtplib.SMTP_SSL(
            host, port, local_hostname=local_hostname, timeout=timeout, context=context
        )
    else:
        smtp = smtplib.SMTP(host, port, local_hostname=local_hostname, timeout=timeout)
    try:
        if tls == "starttls":
            smtp.starttls(context=context)
        username = ctx.config.get("username")
        if username:
            smtp.login(str(username), str(ctx.config.get("password") or ""))
        refused = smtp.send_message(message)
    except BaseException:
        # Not `with smtp`: its QUIT could wait out another timeout while Celery's limit runs.
        smtp.close()
        raise
    # The message is accepted: a slow or failed goodbye must not turn that into a retry.
    try:
        if smtp.sock is not None:
            smtp.sock.settimeout(min(timeout, QUIT_TIMEOUT_S))
        smtp.quit()
    except OSError:  # smtplib.SMTPException included
        pass
    finally:
        smtp.close()
    return refused


def _reply(code: int, text: bytes | str) -> str:
    return f"{code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"


def _classify(error: Exception, where: str) -> base.RunnerError:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        replies = {address: _reply(*reply) for address, reply in error.recipients.items()}
        # Every refusal a 4xx (greylisting, a full mailbox): the same message may pass later.
        temporary = bool(replies) and all(
            400 <= code < 500 for code, _ in error.recipients.values()
        )
        return base.RunnerError(
            f"{where}: every recipient was refused: {replies}",
            permanent=not temporary,
            details={"refused": replies},
        )
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return base.RunnerError(
            f"{where}: login failed: {_reply(error.smtp_code, error.smtp_error)}", permanent=True
        )
    if isinstance(error, smtplib.SMTPConnectError):
        return base.RunnerError(
            f"{where}: refused the connection: {_reply(error.smtp_code, error.smtp_error)}"
        )
    if isinstance(error, smtplib.SMTPResponseException):
        reply = _reply(error.smtp_code, error.smtp_error)
        return base.RunnerError(
            f"{where} answered {reply}",
            permanent=500 <= error.smtp_code < 600,
            details={"reply": reply},
        )
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return base.RunnerError(f"{where}: {error}", permanent=True)
    # smtplib reports a reply that never came as SMTPServerDisconnected("... timed out").
    if isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError):
        return base.RunnerTimeout(f"{where}: no answer in time: {error}")
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return base.RunnerError(f"{where}: connection lost: {error}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return base.RunnerError(f"{where}: TLS certificate rejected: {error}", permanent=True)
    return base.RunnerError(f"{where}: {type(error).__name__}: {error}")
