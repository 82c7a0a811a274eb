"""Webhook files, strictly checked (unknown keys, literal secrets, one kind of auth), and the
checks of a delivery that need no database: signatures, tokens, bodies, the payload."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from werkzeug.datastructures import Headers

from app.errors import InvalidPack, InvalidRequest
from policies import packs, parameters, webhooks

GITHUB = (
    "name: github_push\n"
    "trigger: github.push\n"
    "auth:\n"
    "  hmac_sha256: {secret: '{{ secrets.GITHUB_HOOK }}', header: X-Hub-Signature-256,"
    " prefix: 'sha256='}\n"
    "delivery_header: X-GitHub-Delivery\n"
)
TOKEN = "name: t\nauth:\n  token: {secret: '{{ secrets.HOOK_TOKEN }}', header: X-Usher-Token}\n"


def _pack(root: Path, webhook: str) -> Path:
    (root / "webhooks").mkdir(parents=True)
    (root / "pack.yaml").write_text("name: p\n")
    (root / "webhooks" / "w.yaml").write_text(webhook)
    return root


def _refused(tmp_path: Path, webhook: str) -> str:
    with pytest.raises(InvalidPack) as caught:
        packs.read_pack(_pack(tmp_path / "p", webhook))
    return caught.value.message


def test_a_github_and_a_token_webhook_are_read(tmp_path: Path) -> None:
    spec = packs.read_pack(_pack(tmp_path / "p", GITHUB))
    assert spec.webhooks[0]["auth"]["hmac_sha256"]["secret"] == "{{ secrets.GITHUB_HOOK }}"
    assert packs.read_pack(_pack(tmp_path / "q", TOKEN)).webhooks[0]["name"] == "t"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GITHUB.replace("trigger:", "triger:"),
            "w.yaml:2: triger: unknown key (did you mean trigger?)",
        ),
        (
            GITHUB.replace("prefix:", "prefx:"),
            "w.yaml:4: auth.hmac_sha256.prefx: unknown key (did you mean prefix?)",
        ),
        (
            TOKEN + "delivery: X-Id\n",
            "w.yaml:4: delivery: unknown key (did you mean delivery_header?)",
        ),
        (
            "name: t\nauth:\n  basic: {secret: x}\n",
            "w.yaml:3: auth.basic: unknown key (known here: hmac_sha256, token)",
        ),
    ],
)
def test_an_unknown_key_names_its_file_line_and_path(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in _refused(tmp_path, text)


@pytest.mark.parametrize(
    "secret", ["s3cr3t-value-1234", "'Bearer {{ secrets.X }}'", "12345678", "'{{ secret.X }}'"]
)
def test_a_secret_must_be_a_reference_and_a_literal_is_never_quoted(
    tmp_path: Path, secret: str
) -> None:
    text = f"name: t\nauth:\n  token:\n    secret: {secret}\n    header: X-Usher-Token\n"
    message = _refused(tmp_path, text)
    assert "w.yaml:4: auth.token.secret: " in message
    if "{{" in secret:
        assert "exactly one {{ secrets.NAME }} reference" in message
    else:
        assert "a secret is never written in a pack file" in message
        assert "USHER_SECRET_<NAME>" in message and secret not in message


def test_exactly_one_kind_of_auth(tmp_path: Path) -> None:
    both = GITHUB.replace(
        "delivery_header", "  token: {secret: '{{ secrets.T }}', header: X-T}\ndelivery_header"
    )
    assert "w.yaml:5: auth.token: give exactly one of hmac_sha256 or token, not both" in (
        _refused(tmp_path / "a", both)
    )
    assert "auth: give exactly one of hmac_sha256 or token" in _refused(
        tmp_path / "b", "name: t\nauth: {}\n"
    )
    assert "'auth' is a required property" in _refused(tmp_path / "c", "name: t\n")


def test_the_reserved_secret_and_a_delivery_header_that_is_the_auth_header(
    tmp_path: Path,
) -> None:
    assert "secret KEY is reserved" in _refused(tmp_path / "a", TOKEN.replace("HOOK_TOKEN", "KEY"))
    text = TOKEN + "delivery_header: x-usher-token\n"
    assert "w.yaml:4: delivery_header: must differ from auth.token.header" in _refused(
        tmp_path / "b", text
    )


def _hook(kind: str = "hmac_sha256", header: str = "X-Hub-Signature-256") -> webhooks.Hook:
    prefix = "sha256=" if kind == "hmac_sha256" else ""
    return webhooks.Hook(1, "p.h", "p.h", kind, "S", header, prefix, "X-GitHub-Delivery")


def test_a_github_signature_is_accepted_and_anything_else_refused() -> None:
    body, secret = b'{"ref": "refs/heads/main"}', "It's a Secret to Everybody"
    good = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert webhooks.signature(secret, body, "sha256=") == good
    webhooks.verify(_hook(), secret, Headers({"x-hub-signature-256": good}), body)
    webhooks.verify(_hook(), secret, Headers({"X-Hub-Signature-256": good.upper()}), body)
    for headers, reason in (
        ({}, "header is missing"),
        ({"X-Hub-Signature-256": good[:-1] + "0"}, "does not match"),
        ({"X-Hub-Signature-256": good.removeprefix("sha256=")}, "does not match"),
        ({"X-Hub-Signature-256": "sha256=é"}, "does not match"),
    ):
        with pytest.raises(webhooks.BadSignature, match=reason) as caught:
            webhooks.verify(_hook(), secret, Headers(headers), body)
        assert secret not in caught.value.message
    with pytest.raises(webhooks.BadSignature):
        webhooks.verify(_hook(), secret, Headers({"X-Hub-Signature-256": good}), body + b" ")


def test_a_token_must_be_the_secret_itself() -> None:
    hook = _hook("token", "X-Usher-Token")
    webhooks.verify(hook, "tok-123456", Headers({"X-Usher-Token": "tok-123456"}), b"{}")
    with pytest.raises(webhooks.BadSignature):
        webhooks.verify(hook, "tok-123456", Headers({"X-Usher-Token": "tok-12345"}), b"{}")


@pytest.mark.parametrize(
    ("content_type", "raw", "error"),
    [
        ("text/plain", b"{}", webhooks.NotJson),
        (None, b"{}", webhooks.NotJson),
        ("application/x-www-form-urlencoded", b"payload=%7B%7D", webhooks.NotJson),
        ("application/json", b"{not json", webhooks.NotJson),
        ("application/json", b"\xff\xfe", webhooks.NotJson),
        ("application/json", b"[" * 65 + b"]" * 65, InvalidRequest),
        ("application/json", b"[" * 100_000 + b"]" * 100_000, InvalidRequest),
    ],
)
def test_a_body_that_is_not_json_is_415_and_one_too_deep_400(
    content_type: str | None, raw: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        webhooks.body(content_type, raw)


def test_json_bodies_of_any_json_type_are_taken() -> None:
    assert webhooks.body("application/json; charset=utf-8", b'{"a": [1]}') == {"a": [1]}
    assert webhooks.body("application/vnd.github+json", b"[1, 2]") == [1, 2]
    nested = b"[" * parameters.MAX_DEPTH + b"]" * parameters.MAX_DEPTH
    assert webhooks.body("application/json", nested) is not None


def test_the_payload_keeps_headers_lower_cased_less_credentials_and_the_signature() -> None:
    headers = [
        ("X-GitHub-Event", "push"),
        ("X-Hub-Signature-256", "sha256=abc"),
        ("Authorization", "Bearer t"),
        ("Cookie", "usher_session=x"),
        ("Content-Type", "application/json"),
        ("X-Many", "a"),
        ("x-many", "b"),
    ]
    assert webhooks.payload(_hook(), headers, {"ref": "main"}) == {
        "headers": {"x-github-event": "push", "content-type": "application/json", "x-many": "a, b"},
        "body": {"ref": "main"},
    }


def test_the_delivery_id_is_optional_and_bounded() -> None:
    assert webhooks.delivery_id(_hook(), Headers({"X-GitHub-Delivery": " d-1 "})) == "d-1"
    assert webhooks.delivery_id(_hook(), Headers({})) is None
    with pytest.raises(InvalidRequest, match="longer than 200"):
        webhooks.delivery_id(_hook(), Headers({"X-GitHub-Delivery": "x" * 201}))


def test_an_unset_or_empty_secret_makes_the_webhook_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = webhooks.Hook(1, "p.t", "p.t", "token", "WH_UNIT_SECRET", "X-T", "", "X-D")
    monkeypatch.delenv("USHER_SECRET_WH_UNIT_SECRET", raising=False)
    with pytest.raises(webhooks.Unavailable) as caught:
        webhooks.secret(hook, tmp_path)
    assert "WH_UNIT_SECRET" not in caught.value.message
    (tmp_path / "WH_UNIT_SECRET").write_text("\n")
    with pytest.raises(webhooks.Unavailable):
        webhooks.secret(hook, tmp_path)
    (tmp_path / "WH_UNIT_SECRET").write_text("from-the-file-1234\n")
    assert webhooks.secret(hook, tmp_path) == "from-the-file-1234"
    monkeypatch.setenv("USHER_SECRET_WH_UNIT_SECRET", "from-the-environment")
    assert webhooks.secret(hook, tmp_path) == "from-the-environment"
