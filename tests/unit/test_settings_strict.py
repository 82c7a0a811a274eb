"""Every setting is in ``Settings``; an unknown ``USHER_*`` variable or TOML key stops
start-up with one line naming it and the closest setting."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from app import config
from app.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_an_unknown_variable_is_refused_with_a_close_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USHER_DEFAULT_MAX_CONCURENT", "3")
    with pytest.raises(ConfigError) as refused:
        config.load()
    assert str(refused.value) == (
        "USHER_DEFAULT_MAX_CONCURENT is not a setting; did you mean "
        "USHER_DEFAULT_MAX_CONCURRENT? (see docs/configuration.md)"
    )
    # the command line says it in one line on stderr and exits 2
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "queues"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "USHER_DEFAULT_MAX_CONCURENT is not a setting; did you mean "
            "USHER_DEFAULT_MAX_CONCURRENT? (see docs/configuration.md)"
        )
    )


def test_a_name_far_from_every_setting_gets_no_suggestion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USHER_ZZZ", "1")
    with pytest.raises(ConfigError, match=r"^USHER_ZZZ is not a setting \(see"):
        config.load()


@pytest.mark.parametrize(
    "name", ["USHER_CONFIG", "USHER_SECRET_GITHUB", "USHER_PARAM_HOST", "USHER_TEST_X"]
)
def test_variables_that_are_not_settings_are_let_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    value = str(tmp_path / "usher.toml")
    (tmp_path / "usher.toml").write_text("")
    monkeypatch.setenv(name, value)
    assert config.unknown({name: value}) is None
    config.load()


def test_an_unknown_toml_key_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "usher.toml"
    toml.write_text("lease_ss = 30\n")
    monkeypatch.setenv("USHER_CONFIG", str(toml))
    with pytest.raises(
        ConfigError, match="'lease_ss' is not a setting; did you mean USHER_LEASE_S"
    ):
        config.load()


def test_the_secret_key_is_a_setting_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USHER_SECRET_KEY", "a-signing-key-of-some-length")
    assert config.load().secret_key == "a-signing-key-of-some-length"
    monkeypatch.setenv("USHER_SECRET_KEY", "short-key")
    with pytest.raises(ConfigError) as refused:
        config.load()
    assert "short-key" not in str(refused.value) and "USHER_SECRET_KEY='***'" in str(refused.value)


def test_no_product_module_reads_a_usher_setting_from_the_environment() -> None:
    # USHER_CONFIG names the file the settings come from; USHER_SECRET_<NAME> are secrets
    reads = re.compile(
        r"""os\.(?:environ\.get|getenv)\(\s*["']USHER_(?!CONFIG)"""
        r"""|os\.environ\[["']USHER_\w+["']\](?!\s*=)"""
    )
    found = [
        str(path.relative_to(ROOT))
        for top in ("app", "policies", "tasks", "web")
        for path in (ROOT / top).rglob("*.py")
        if "bench" not in path.parts and reads.search(path.read_text())
    ]
    assert found == []
