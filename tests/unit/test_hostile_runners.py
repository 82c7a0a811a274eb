"""What a hostile parameter (from an event payload or an API request) can make a runner do:
nothing beyond what the action says. Each test reproduces a finding of the hardening issue."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app import secretstore
from policies import templates
from tasks import runners
from tasks.runners import base
from tests.support.schemas import declaring

pytestmark = pytest.mark.timeout(60)

INJECTION = "db1`id`; touch {marker}; $(touch {marker})"


@pytest.fixture
def seen() -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """An HTTP server on 127.0.0.1 that answers 200 to any path and records what it got."""
    received: list[tuple[str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append((self.path, dict(self.headers)))
            body = json.dumps({"path": self.path, "auth": self.headers.get("Authorization")})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        do_POST = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}", received
    httpd.shutdown()
    httpd.server_close()


def test_a_templated_string_command_never_reaches_the_shell(tmp_path: Path) -> None:
    # Given an action stored before pack load refused it: a string command with a template
    marker = tmp_path / "owned"
    config = {"command": "echo hi {{ parameters.msg }}"}
    # When a payload carrying shell syntax is rendered into it
    with pytest.raises(base.RunnerError) as raised:
        runners.run(
            "shell", config, {"msg": INJECTION.format(marker=marker)}, schema=declaring("msg")
        )
    # Then the runner refuses to start it: nothing ran
    assert raised.value.permanent and "argv form" in str(raised.value)
    assert not marker.exists()


def test_argv_and_env_forms_pass_values_as_data(tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    value = INJECTION.format(marker=marker)
    # The argv form: the value is one argument
    result = runners.run(
        "shell",
        {"command": ["echo", "hi", "{{ parameters.msg }}"]},
        {"msg": value},
        schema=declaring("msg"),
    )
    assert result["stdout"] == f"hi {value}\n"
    # The env form: the script reads a variable, quoted, and the shell never parses its value
    result = runners.run(
        "shell",
        {"command": 'echo "hi $USHER_PARAM_MSG"', "parameters_as": "env"},
        {"msg": value},
        schema=declaring("msg"),
    )
    assert result["stdout"] == f"hi {value}\n"
    assert not marker.exists()


def test_undeclared_parameters_never_reach_a_runner(tmp_path: Path) -> None:
    # Given a schema that declares `host` but does not forbid other keys
    schema = {"type": "object", "properties": {"host": {"type": "string"}}}
    marker = tmp_path / "owned"
    # When a request adds a key the action never declared
    result = runners.run(
        "shell",
        {"command": ["/bin/echo"], "parameters_as": "args"},
        {"host": "db1", "extra": f"$(touch {marker})"},
        schema=schema,
    )
    # Then only the declared one is passed on
    assert result["stdout"] == "--host=db1\n"
    # And the python runner gets only declared keyword arguments
    result = runners.run(
        "python",
        {"entry_point": "tests.unit.test_hostile_runners:keywords"},
        {"host": "db1", "__class__": "x", "extra": 1},
        schema=schema,
    )
    assert result == {"host": "db1"}


def keywords(**kwargs: Any) -> dict[str, Any]:
    return kwargs


@pytest.mark.parametrize("host", ["../../admin?x=1#", "..", ".", "a/../b", "..\\admin"])
def test_dot_segments_are_refused_in_url_values(
    seen: tuple[str, list[tuple[str, dict[str, str]]]], host: str
) -> None:
    address, received = seen
    config = {"url": f"http://{address}/api/{{{{ parameters.host }}}}/status", "method": "GET"}
    with pytest.raises(base.RunnerError) as raised:
        runners.run("http", config, {"host": host}, schema=declaring("host"))
    assert raised.value.permanent and "path segment" in str(raised.value)
    assert received == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1:18080/ssrf?#", "evil.example@127.0.0.1", "a/b#c", "x?y=1&z=2", "%2e%2e"]
)
def test_values_in_a_url_cannot_change_its_structure(
    seen: tuple[str, list[tuple[str, dict[str, str]]]], host: str
) -> None:
    address, received = seen
    config = {
        "url": f"http://{address}/api/hosts/{{{{ parameters.host }}}}/status?v=1",
        "method": "GET",
        "headers": {"Authorization": "Bearer action-own-token"},
    }
    runners.run("http", config, {"host": host}, schema=declaring("host"))
    ((path, _),) = received
    # The value stays one path segment of the action's own URL, on the action's own host
    assert path.startswith("/api/hosts/") and path.endswith("/status?v=1")
    segment = path.removeprefix("/api/hosts/").removesuffix("/status?v=1")
    assert "/" not in segment and "?" not in segment and "#" not in segment
    assert segment not in (".", "..")


def test_allow_hosts_pins_the_hosts_an_action_may_call(
    seen: tuple[str, list[tuple[str, dict[str, str]]]],
) -> None:
    address, received = seen
    config = {"url": f"http://{address}/ok", "method": "GET", "allow_hosts": ["hooks.example"]}
    with pytest.raises(base.RunnerError) as raised:
        runners.run("http", config, {}, schema={})
    assert raised.value.permanent and "allow_hosts" in str(raised.value)
    assert received == []
    config["allow_hosts"] = ["127.0.0.1"]
    assert runners.run("http", config, {}, schema={})["status"] == 200


def test_a_templated_recipient_is_exactly_one_address() -> None:
    config = {
        "host": "127.0.0.1",
        "port": 1,
        "from": "usher@example.org",
        "to": "{{ parameters.owner }}",
    }
    for hostile in ("ops@example.org, attacker@evil.example", "ops@example.org\r\nBcc: x@y.z"):
        with pytest.raises(base.RunnerError) as raised:
            runners.run("email", config, {"owner": hostile}, schema=declaring("owner"))
        assert raised.value.permanent and "exactly one address" in str(raised.value)


def test_secrets_resolve_at_run_time_and_are_masked_in_what_is_kept(
    seen: tuple[str, list[tuple[str, dict[str, str]]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    address, received = seen
    monkeypatch.setenv("USHER_SECRET_HOOK_TOKEN", "s3cr3t-hook-token-value")
    (tmp_path / "PATH_KEY").write_text("file-secret-path-key\n")
    config = {
        "url": f"http://{address}/hook/{{{{ secrets.PATH_KEY }}}}",
        "method": "GET",
        "headers": {"Authorization": "Bearer {{ secrets.HOOK_TOKEN }}"},
    }
    result = runners.run("http", config, {}, schema={}, secrets_dir=tmp_path)
    # The request carried both secrets (the file's, without its newline, unencoded in the URL)
    ((path, headers),) = received
    assert path == "/hook/file-secret-path-key"
    assert headers["Authorization"] == "Bearer s3cr3t-hook-token-value"
    # And what would be stored or logged has neither
    kept = json.dumps(secretstore.redact(result))
    assert "s3cr3t-hook-token-value" not in kept and "file-secret-path-key" not in kept
    assert "Bearer ***" in kept


def test_a_missing_secret_fails_permanently_naming_it() -> None:
    with pytest.raises(base.RunnerError) as raised:
        runners.run("http", {"url": "http://127.0.0.1:1/{{ secrets.NOPE_NOT_SET }}"}, {}, schema={})
    assert raised.value.permanent and "NOPE_NOT_SET" in str(raised.value)


def test_secrets_cannot_be_listed_from_a_template(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USHER_SECRET_LISTME", "listed-secret-value")
    for source in ("{{ secrets }}", "{{ secrets.items() }}", "{{ secrets.__dict__ }}"):
        try:
            text = templates.render(source, {"secrets": secretstore.Secrets(None)})
        except Exception as error:  # refused is fine; leaking is not
            text = str(error)
        assert "listed-secret-value" not in str(text)


def test_template_errors_name_the_path_not_the_template() -> None:
    from app.errors import InvalidParameters

    with pytest.raises(InvalidParameters) as raised:
        templates.render(
            {"url": "https://x.example/?token=abc123tok&n={{ 1 // parameters.n }}"},
            {"parameters": {"n": 0}},
            path="runner_config",
        )
    assert "runner_config.url" in str(raised.value)
    assert "abc123tok" not in str(raised.value)


def test_log_records_mask_known_secrets(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("USHER_SECRET_LOGGED", "logged-secret-value-42")
    secretstore.install_log_redaction(None)
    log = logging.getLogger("usher.test")
    with caplog.at_level(logging.INFO):
        log.info("calling with %s", "logged-secret-value-42")
        try:
            raise RuntimeError("failed with logged-secret-value-42")
        except RuntimeError:
            log.exception("boom")
    assert "logged-secret-value-42" not in caplog.text
    assert "calling with ***" in caplog.text
    # httpx would log every full URL (a Slack webhook's path is its secret) at INFO
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING


def test_a_secret_cut_through_by_truncation_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "straddling-secret-value-0123456789"
    monkeypatch.setenv("USHER_SECRET_STRADDLE", secret)
    secretstore.preload(None)
    # Given output whose head ends halfway through the secret
    half = base.MAX_OUTPUT_CHARS // 2
    for pad in (half - 10, half - 20, half - 3):
        text = "x" * pad + secret + "y" * (3 * base.MAX_OUTPUT_CHARS)
        kept = base.truncate(text)
        # Then neither the secret nor a piece of it long enough to mean anything survives
        assert secret[:8] not in kept and secret[-8:] not in kept
    # Shell output past what is kept in memory, cut the same way
    result = runners.run(
        "shell",
        {
            "command": [
                "/bin/sh",
                "-c",
                'printf "%s" "$1"; printf "$2"; head -c 200000 /dev/zero | tr "\\0" y',
                "sh",
                "{{ parameters.pad }}",
                secret,
            ]
        },
        {"pad": "x" * (base.MAX_OUTPUT_CHARS // 2 - 12)},
        schema=declaring("pad"),
    )
    assert secret[:8] not in result["stdout"] and secret[-8:] not in result["stdout"]


def test_errors_leaving_the_task_hold_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import execute

    monkeypatch.setenv("USHER_SECRET_RAISED", "raised-secret-value-99")
    secretstore.preload(None)
    with pytest.raises(base.RunnerError) as raised, execute._masked():
        raise base.RunnerError(
            "failed with raised-secret-value-99", True, {"out": "raised-secret-value-99"}
        )
    assert "raised-secret-value-99" not in str(raised.value) and raised.value.permanent
    assert raised.value.details == {"out": "***"}
    with pytest.raises(base.RunnerError) as other, execute._masked():
        raise KeyError("raised-secret-value-99")
    assert "raised-secret-value-99" not in str(other.value)
    with pytest.raises(ValueError), execute._masked():
        raise ValueError("nothing secret")  # unchanged when there is nothing to mask


def test_usher_secret_key_is_not_a_template_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USHER_SECRET_KEY", "the-dashboard-signing-key")
    with pytest.raises(base.RunnerError) as raised:
        runners.run("http", {"url": "http://127.0.0.1:1/{{ secrets.KEY }}"}, {}, schema={})
    assert "reserved" in str(raised.value)


def test_a_list_value_in_a_templated_recipient_is_refused() -> None:
    config = {"host": "127.0.0.1", "port": 1, "from": "u@example.org", "to": "{{ parameters.who }}"}
    with pytest.raises(base.RunnerError) as raised:
        runners.run(
            "email",
            config,
            {"who": ["ops@example.org", "attacker@evil.example"]},
            schema=declaring("who"),
        )
    assert "exactly one address" in str(raised.value)
