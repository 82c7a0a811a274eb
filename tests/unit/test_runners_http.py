"""The http and slack runners against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tasks import runners
from tasks.runners import base, slack
from tests.support.schemas import declaring

pytestmark = pytest.mark.timeout(60)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    url: str
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


# path -> (status, content type, body)
ANSWERS: dict[str, tuple[int, str, bytes]] = {
    "/json": (200, "application/json", b'{"ok": true, "n": 1}'),
    "/text": (200, "text/plain; charset=utf-8", b"hello"),
    "/ok": (200, "text/html", b"ok"),
    "/bad-request": (400, "application/json", b'{"error": "bad"}'),
    "/missing": (404, "text/plain", b"no such hook"),
    "/busy": (429, "text/plain", b"slow down"),
    "/down": (503, "text/plain", b"maintenance"),
    "/moved": (302, "text/plain", b""),
    "/huge": (200, "text/plain", b"x" * (3 * base.MAX_OUTPUT_CHARS)),
}


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            state.received.append(
                Received(self.command, self.path, dict(self.headers), self.rfile.read(length))
            )
            if self.path == "/slow":
                state.release.wait(10)
                return
            status, content_type, body = ANSWERS[self.path]
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 302:
                self.send_header("Location", "https://elsewhere.example/hook")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run_http(config: dict[str, Any], parameters: dict[str, Any] | None = None) -> Any:
    return runners.run(
        "http", config, parameters or {}, schema=declaring(*(parameters or {})), timeout_s=20
    )


def test_json_answer_is_parsed_and_templated_body_and_headers_arrive(server: Server) -> None:
    # Given a webhook whose body and headers are templates
    config = {
        "url": server.url + "/json",
        "headers": {"X-Token": "secret", "X-Host": "{{ parameters.host }}"},
        "body": {"host": "{{ parameters.host }}", "count": "{{ parameters.count }}"},
    }
    # When it runs
    result = run_http(config, {"host": "db1", "count": 3})
    # Then the answer is parsed and the rendered request arrived as JSON
    assert result == {"status": 200, "body": {"ok": True, "n": 1}}
    (request,) = server.received
    assert request.method == "POST"
    assert request.headers["X-Token"] == "secret"
    assert request.headers["X-Host"] == "db1"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"host": "db1", "count": 3}


def test_text_body_is_sent_as_text_and_text_answer_kept(server: Server) -> None:
    result = run_http(
        {"method": "put", "url": server.url + "/text", "body": "host={{ parameters.host }}"},
        {"host": "db1"},
    )
    assert result == {"status": 200, "body": "hello"}
    (request,) = server.received
    assert request.method == "PUT"
    assert request.body == b"host=db1"
    assert request.headers["Content-Type"].startswith("text/plain")


def test_get_without_body(server: Server) -> None:
    result = run_http({"method": "GET", "url": server.url + "/json"})
    assert result["status"] == 200
    assert server.received[0].body == b""


def test_long_answer_is_truncated(server: Server) -> None:
    result = run_http({"url": server.url + "/huge"})
    assert "characters cut" in result["body"]
    assert len(result["body"]) < base.MAX_OUTPUT_CHARS + 100


@pytest.mark.parametrize(
    ("path", "permanent"),
    [("/bad-request", True), ("/missing", True), ("/busy", False), ("/down", False)],
)
def test_error_statuses_are_classified(server: Server, path: str, permanent: bool) -> None:
    with pytest.raises(base.RunnerError) as raised:
        run_http({"url": server.url + path})
    assert not isinstance(raised.value, base.RunnerTimeout)
    assert raised.value.permanent is permanent
    status, _, body = ANSWERS[path]
    assert str(status) in str(raised.value)
    assert body.decode()[:10] in str(raised.value)
    assert raised.value.details["status"] == status


def test_redirect_is_not_followed_and_is_permanent(server: Server) -> None:
    with pytest.raises(base.RunnerError) as raised:
        run_http({"url": server.url + "/moved"})
    assert raised.value.permanent
    assert "elsewhere.example" in str(raised.value)


def test_slow_answer_raises_runner_timeout(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(base.RunnerTimeout) as raised:
        run_http({"url": server.url + "/slow", "timeout_s": 0.5})
    assert time.monotonic() - started < 5
    assert not raised.value.permanent


def test_timeout_stays_below_the_action_timeout(server: Server) -> None:
    # Given a runner timeout longer than the action's: the action's (less a margin) wins
    started = time.monotonic()
    with pytest.raises(base.RunnerTimeout):
        runners.run(
            "http", {"url": server.url + "/slow", "timeout_s": 30}, {}, schema={}, timeout_s=3
        )
    assert 2 < time.monotonic() - started < 3


def test_timeout_for_defaults_and_margin() -> None:
    assert base.timeout_s(base.RunContext({}, {}), 30) == 30
    assert base.timeout_s(base.RunContext({}, {}, timeout_s=60), 30) == 59
    assert base.timeout_s(base.RunContext({"timeout_s": 5}, {}, timeout_s=60), 30) == 5
    assert base.timeout_s(base.RunContext({}, {}, timeout_s=2), 30) == pytest.approx(1.8)


def test_connection_refused_is_transient() -> None:
    with pytest.raises(base.RunnerError) as raised:
        run_http({"url": f"http://127.0.0.1:{closed_port()}/hook"})
    assert not raised.value.permanent
    assert not isinstance(raised.value, base.RunnerTimeout)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"url": ""},
        {"url": "ftp://127.0.0.1/x"},
        {"url": "not a url"},
        {"url": "http://127.0.0.1:1/x", "method": "FETCH"},
        {"url": "http://127.0.0.1:1/x", "headers": ["X-A: 1"]},
        {"url": "http://127.0.0.1:1/x", "verify_tls": "no"},
        {"url": "http://127.0.0.1:1/x", "timeout_s": -1},
    ],
)
def test_invalid_config_is_permanent(config: dict[str, Any]) -> None:
    with pytest.raises(base.RunnerError) as raised:
        run_http(config)
    assert raised.value.permanent


def test_messages_do_not_reveal_the_url_path() -> None:
    with pytest.raises(base.RunnerError) as raised:
        run_http({"url": f"http://user:pw@127.0.0.1:{closed_port()}/T0/B1/secret?token=s3"})
    assert "secret" not in str(raised.value) and "s3" not in str(raised.value)
    assert "pw" not in str(raised.value)


def test_slack_posts_the_incoming_webhook_json(server: Server) -> None:
    # Given a Slack action whose text is a template
    config = {"webhook_url": server.url + "/ok", "text": "{{ parameters.host }} is down"}
    # When it runs
    result = runners.run("slack", config, {"host": "db1"}, schema=declaring("host"))
    # Then exactly the incoming-webhook JSON was posted, and Slack's "ok" is the result
    assert result == {"status": 200, "body": "ok"}
    (request,) = server.received
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"text": "db1 is down"}


def test_slack_optional_keys_are_sent_when_set(server: Server) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*down*"}}]
    ctx = base.RunContext(
        {
            "webhook_url": server.url + "/ok",
            "text": "down",
            "channel": "#ops",
            "username": "usher",
            "icon_emoji": ":robot_face:",
            "blocks": blocks,
        },
        {},
    )
    slack.run(ctx)
    assert json.loads(server.received[0].body) == {
        "text": "down",
        "channel": "#ops",
        "username": "usher",
        "icon_emoji": ":robot_face:",
        "blocks": blocks,
    }


def test_slack_errors_are_classified_like_http(server: Server) -> None:
    with pytest.raises(base.RunnerError) as raised:
        runners.run("slack", {"webhook_url": server.url + "/missing", "text": "x"}, {}, schema={})
    assert raised.value.permanent
    with pytest.raises(base.RunnerError) as raised:
        runners.run("slack", {"webhook_url": server.url + "/busy", "text": "x"}, {}, schema={})
    assert not raised.value.permanent


@pytest.mark.parametrize("config", [{"text": "x"}, {"webhook_url": "http://127.0.0.1:1/"}])
def test_slack_requires_url_and_text(config: dict[str, Any]) -> None:
    with pytest.raises(base.RunnerError) as raised:
        runners.run("slack", config, {}, schema={})
    assert raised.value.permanent


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1".split()
    subprocess.run(
        [*command, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True
    )

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}/hook"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_untrusted_certificate_is_permanent_unless_verification_is_off(tls_server: str) -> None:
    with pytest.raises(base.RunnerError) as raised:
        run_http({"url": tls_server})
    assert raised.value.permanent
    assert run_http({"url": tls_server, "verify_tls": False}) == {"status": 200, "body": "ok"}


def test_the_answer_body_goes_to_the_live_output_as_it_arrives(server: Server) -> None:
    got: list[tuple[str, bytes]] = []

    class Sink:
        def add(self, stream: str, data: bytes) -> None:
            got.append((stream, data))

    config = {"method": "GET", "url": server.url + "/text"}
    result = runners.run("http", config, {}, schema=declaring(), timeout_s=20, output=Sink())
    assert result == {"status": 200, "body": "hello"}
    assert b"".join(data for stream, data in got if stream == "stdout") == b"hello"
