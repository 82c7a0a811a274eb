"""The email runner against a real SMTP sink (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tasks import runners
from tasks.runners import base
from tasks.runners import email as email_runner
from tests.support.schemas import declaring

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"


class Sink:
    """Accepts every message unless told which reply to give to RCPT or DATA."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, EmailMessage]] = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply: str | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((envelope, message))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler = Sink()
    port = free_port()
    controller = Controller(handler, hostname=HOST, port=port)
    controller.start()
    yield handler, port
    controller.stop()


def config(port: int, **overrides: Any) -> dict[str, Any]:
    return {
        "host": HOST,
        "port": port,
        "from": "Usher <usher@example.org>",
        "to": ["ops@example.org"],
        "subject": "{{ parameters.host }} is down",
        "body": "Host {{ parameters.host }} stopped answering.",
        "local_hostname": "usher.test",
        **overrides,
    }


def send(cfg: dict[str, Any], timeout_s: float | None = 20) -> Any:
    return runners.run("email", cfg, {"host": "db1"}, schema=declaring("host"), timeout_s=timeout_s)


def test_message_reaches_the_sink(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    # When an e-mail with cc and an HTML part is sent
    result = send(
        config(
            port, to="ops@example.org, dba@example.org", cc=["lead@example.org"], html="<b>!</b>"
        )
    )
    # Then the sink got it, with the rendered subject and body, from and to
    (envelope, message) = handler.messages[0]
    assert envelope.mail_from == "usher@example.org"
    assert envelope.rcpt_tos == ["ops@example.org", "dba@example.org", "lead@example.org"]
    assert message["Subject"] == "db1 is down"
    assert message["From"] == "Usher <usher@example.org>"
    assert message["To"] == "ops@example.org, dba@example.org"
    assert message["Cc"] == "lead@example.org"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().strip() == "Host db1 stopped answering."
    assert html.get_content().strip() == "<b>!</b>"
    assert result == {
        "sent_to": ["ops@example.org", "dba@example.org", "lead@example.org"],
        "message_id": message["Message-ID"],
    }
    assert result["message_id"].endswith("@example.org>")


def test_some_recipients_refused_is_reported(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    handler.rcpt_replies["gone@example.org"] = "550 No such user"
    result = send(config(port, to=["ops@example.org", "gone@example.org"]))
    assert result["sent_to"] == ["ops@example.org"]
    assert result["refused"] == {"gone@example.org": "550 No such user"}


@pytest.mark.parametrize(("reply", "permanent"), [("451 Try later", False), ("554 Spam", True)])
def test_data_reply_is_classified(sink: tuple[Sink, int], reply: str, permanent: bool) -> None:
    handler, port = sink
    handler.data_reply = reply
    with pytest.raises(base.RunnerError) as raised:
        send(config(port))
    assert raised.value.permanent is permanent
    assert reply in str(raised.value)


@pytest.mark.parametrize(
    ("reply", "permanent"), [("451 Greylisted", False), ("550 No such user", True)]
)
def test_all_recipients_refused_is_classified(
    sink: tuple[Sink, int], reply: str, permanent: bool
) -> None:
    handler, port = sink
    handler.rcpt_replies["ops@example.org"] = reply
    with pytest.raises(base.RunnerError) as raised:
        send(config(port))
    assert raised.value.permanent is permanent
    assert handler.messages == []


def test_login_without_auth_support_is_permanent(sink: tuple[Sink, int]) -> None:
    _, port = sink
    with pytest.raises(base.RunnerError) as raised:
        send(config(port, username="u", password="p"))
    assert raised.value.permanent


def test_unreachable_port_is_transient() -> None:
    with pytest.raises(base.RunnerError) as raised:
        send(config(free_port()))
    assert not raised.value.permanent


def test_server_that_hangs_up_is_transient() -> None:
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        port = listener.getsockname()[1]

        def hang_up() -> None:
            connection, _ = listener.accept()
            connection.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        with pytest.raises(base.RunnerError) as raised:
            send(config(port))
        thread.join(5)
    assert not raised.value.permanent
    assert not isinstance(raised.value, base.RunnerTimeout)


def test_silent_server_times_out() -> None:
    # A listening socket nobody accepts on: the connection opens, the greeting never comes
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        started = time.monotonic()
        with pytest.raises(base.RunnerTimeout) as raised:
            send(config(listener.getsockname()[1], timeout_s=0.5))
    assert time.monotonic() - started < 5
    assert not raised.value.permanent


@pytest.mark.parametrize(
    "overrides",
    [
        {"host": ""},
        {"from": None},
        {"to": None},
        {"to": []},
        {"to": [1]},
        {"tls": "maybe"},
        {"port": "smtp"},
        {"port": 70000},
        {"subject": "line\nbreak"},
    ],
)
def test_invalid_config_is_permanent(overrides: dict[str, Any]) -> None:
    with pytest.raises(base.RunnerError) as raised:
        send({**config(free_port()), **overrides})
    assert raised.value.permanent


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), True),
        (smtplib.SMTPConnectError(554, b"no service"), False),
        (smtplib.SMTPSenderRefused(553, b"sender rejected", "usher@example.org"), True),
        (smtplib.SMTPSenderRefused(450, b"try later", "usher@example.org"), False),
        (smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server."), True),
        (ConnectionResetError(104, "Connection reset by peer"), False),
    ],
)
def test_classification_of_smtplib_errors(error: Exception, permanent: bool) -> None:
    # Failures a local sink cannot easily produce, classified as a real server's would be
    classified = email_runner._classify(error, "SMTP mail:25")
    assert classified.permanent is permanent
    assert not isinstance(classified, base.RunnerTimeout)
