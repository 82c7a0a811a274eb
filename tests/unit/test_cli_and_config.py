"""Settings, limit resolution and CLI argument parsing: no database, no broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from app import cli, config
from app.cli import executions
from app.errors import ConfigError
from policies import limits

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No USHER_* setting leaks in from the shell running the tests."""
    for name in list(os.environ):
        if name.startswith("USHER_"):
            monkeypatch.delenv(name)


# --- app.config.load ------------------------------------------------------------------------


def test_defaults_match_the_contract() -> None:
    settings = config.load()
    assert settings.home == Path("./.usher")
    assert settings.database_url is None and settings.broker_url is None
    assert settings.api_token is None
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 5000)
    assert settings.default_max_concurrent == 10
    assert settings.default_max_queue_length == 10_000
    assert settings.default_queue_timeout_s == 3600
    assert settings.lease_s == 15
    assert settings.heartbeat_s == 5
    assert settings.retry_max_retries == 3
    assert settings.retry_strategy == "exponential"
    assert (settings.retry_initial_delay_ms, settings.retry_max_delay_ms) == (100, 5000)
    assert settings.retry_jitter is True


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USHER_DEFAULT_MAX_CONCURRENT", "10000")
    monkeypatch.setenv("USHER_LEASE_S", "3")
    monkeypatch.setenv("USHER_RETRY_STRATEGY", "linear")
    monkeypatch.setenv("USHER_RETRY_JITTER", "false")
    monkeypatch.setenv("USHER_API_TOKEN", "a-long-enough-secret")
    settings = config.load()
    assert settings.default_max_concurrent == 10_000
    assert settings.lease_s == 3 and settings.heartbeat_s == 1
    assert settings.retry_strategy == config.RetryStrategy.linear
    assert settings.retry_jitter is False
    assert settings.api_token == "a-long-enough-secret"


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("USHER_DEFAULT_MAX_CONCURRENT", "0", "1..10000"),
        ("USHER_DEFAULT_MAX_CONCURRENT", "10001", "1..10000"),
        ("USHER_DEFAULT_MAX_CONCURRENT", "ten", "1..10000"),
        ("USHER_LEASE_S", "2", "3..3600"),
        ("USHER_LEASE_S", "3601", "3..3600"),
        ("USHER_LEASE_S", "abc", "3..3600"),
        ("USHER_RETRY_STRATEGY", "random", "fixed, linear, exponential"),
        ("USHER_RETRY_STRATEGY", "", "fixed, linear, exponential"),
        ("USHER_DEFAULT_MAX_QUEUE_LENGTH", "0", "1..10000000"),
        ("USHER_DEFAULT_QUEUE_TIMEOUT_S", "604801", "1..604800"),
        ("USHER_RETRY_MAX_RETRIES", "101", "0..100"),
        ("USHER_RETRY_INITIAL_DELAY_MS", "9", "10..10000"),
        ("USHER_RETRY_MAX_DELAY_MS", "300001", "100..300000"),
        ("USHER_RETRY_JITTER", "maybe", "true, false"),
        ("USHER_WEB_PORT", "0", "1..65535"),
    ],
)
def test_a_bad_setting_is_one_line_naming_setting_value_and_range(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, allowed: str
) -> None:
    # Given a bad value in the environment
    monkeypatch.setenv(variable, value)
    # When the settings are loaded
    with pytest.raises(ConfigError) as caught:
        config.load()
    # Then one line names the setting, the value and what is allowed
    message = caught.value.message
    assert "\n" not in message
    assert message.startswith(f"{variable}=")
    assert repr(value) in message
    assert allowed in message
    assert caught.value.code == "invalid_setting"


def test_overrides_are_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"USHER_LEASE_S=1 .*3\.\.3600"):
        config.load(lease_s=1)


def test_toml_file_named_by_usher_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Given a TOML file with two settings
    path = tmp_path / "usher.toml"
    path.write_text('default_max_concurrent = 7\nlease_s = 30\nretry_strategy = "fixed"\n')
    monkeypatch.setenv("USHER_CONFIG", str(path))
    # When loaded
    settings = config.load()
    # Then the file's values apply and the rest keep their defaults
    assert settings.default_max_concurrent == 7
    assert settings.lease_s == 30
    assert settings.retry_strategy == config.RetryStrategy.fixed
    assert settings.default_max_queue_length == 10_000


def test_environment_wins_over_the_toml_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "usher.toml"
    path.write_text("default_max_concurrent = 7\nlease_s = 30\n")
    monkeypatch.setenv("USHER_CONFIG", str(path))
    monkeypatch.setenv("USHER_LEASE_S", "9")
    settings = config.load()
    assert (settings.default_max_concurrent, settings.lease_s) == (7, 9)


def test_a_bad_value_in_the_toml_file_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "usher.toml"
    path.write_text("lease_s = 1\n")
    monkeypatch.setenv("USHER_CONFIG", str(path))
    with pytest.raises(ConfigError) as caught:
        config.load()
    message = caught.value.message
    assert "\n" not in message
    assert "LEASE_S" in message and "1" in message and "3..3600" in message


def test_a_toml_syntax_error_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("lease_s = [\n")
    monkeypatch.setenv("USHER_CONFIG", str(path))
    with pytest.raises(ConfigError) as caught:
        config.load()
    assert "\n" not in caught.value.message
    assert caught.value.message.startswith("USHER_CONFIG=")
    assert str(path) in caught.value.message


def test_a_missing_toml_file_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.toml"
    monkeypatch.setenv("USHER_CONFIG", str(missing))
    with pytest.raises(ConfigError) as caught:
        config.load()
    assert caught.value.message == f"USHER_CONFIG={str(missing)!r} is invalid: no such file"


# --- policies.limits ------------------------------------------------------------------------


@pytest.fixture
def settings() -> config.Settings:
    return config.load(
        default_max_concurrent=10, default_max_queue_length=500, default_queue_timeout_s=60
    )


def test_resolve_falls_back_to_the_global_defaults(settings: config.Settings) -> None:
    assert limits.resolve({}, {}, settings) == limits.Limits(
        concurrency=10, max_queue_length=500, queue_timeout_s=60, partition_by=()
    )


def test_resolve_pack_over_default(settings: config.Settings) -> None:
    resolved = limits.resolve({}, {"concurrency": 3, "partition_by": ["host"]}, settings)
    assert resolved == limits.Limits(3, 500, 60, ("host",))


def test_resolve_action_over_pack_key_by_key(settings: config.Settings) -> None:
    # Given a pack that sets everything and an action that overrides some of it
    pack = {
        "concurrency": 3,
        "max_queue_length": 100,
        "queue_timeout_s": 600,
        "partition_by": ["region"],
    }
    action = {"concurrency": 1, "queue_timeout_s": None, "partition_by": ["host", "port"]}
    # When resolved
    resolved = limits.resolve(action, pack, settings)
    # Then each key comes from the most specific policy that sets it
    assert resolved.concurrency == 1
    assert resolved.max_queue_length == 100
    assert resolved.queue_timeout_s == 600  # None means "not set"
    assert resolved.partition_by == ("host", "port")


def test_an_action_can_turn_partitioning_off(settings: config.Settings) -> None:
    resolved = limits.resolve({"partition_by": []}, {"partition_by": ["host"]}, settings)
    assert resolved.partition_by == ()


@pytest.mark.parametrize(
    ("partition_by", "parameters", "key"),
    [
        ((), {"host": "db1"}, ""),
        (("host",), {"host": "db1"}, "host=db1"),
        (("host",), {"host": "db1", "other": 1}, "host=db1"),
        (("host",), {}, "host=null"),
        (("port",), {"port": 5432}, "port=5432"),
        (("on",), {"on": True}, "on=true"),
        (("tags",), {"tags": {"b": 1, "a": 2}}, 'tags={"a": 2%2C "b": 1}'),
        (("host", "port"), {"port": 22, "host": "db1"}, "host=db1,port=22"),
        (("port", "host"), {"port": 22, "host": "db1"}, "port=22,host=db1"),
    ],
)
def test_partition_key(partition_by: tuple[str, ...], parameters: dict[str, Any], key: str) -> None:
    assert limits.partition_key(partition_by, parameters) == key


def test_partition_key_is_stable_for_equal_mappings() -> None:
    one = limits.partition_key(("t",), {"t": {"x": 1, "y": [1, 2]}})
    two = limits.partition_key(("t",), {"t": {"y": [1, 2], "x": 1}})
    assert one == two


def test_different_values_never_share_a_line() -> None:
    by = ("a", "b")
    one = limits.partition_key(by, {"a": "x,b=y", "b": "z"})
    two = limits.partition_key(by, {"a": "x", "b": "y,b=z"})
    assert one != two


# --- app.cli.executions.parse_parameters ----------------------------------------------


def test_parse_parameters_decodes_json_values() -> None:
    parsed = executions.parse_parameters(
        (
            "n=3",
            "ratio=0.5",
            "flag=true",
            "nothing=null",
            'tags=["a","b"]',
            'target={"port": 22}',
            'quoted="42"',
        )
    )
    assert parsed == {
        "n": 3,
        "ratio": 0.5,
        "flag": True,
        "nothing": None,
        "tags": ["a", "b"],
        "target": {"port": 22},
        "quoted": "42",
    }


def test_parse_parameters_keeps_non_json_as_strings() -> None:
    parsed = executions.parse_parameters(("host=db1", "empty=", "expr=a=b", "spaced=hello world"))
    assert parsed == {"host": "db1", "empty": "", "expr": "a=b", "spaced": "hello world"}


def test_parse_parameters_last_one_wins() -> None:
    assert executions.parse_parameters(("n=1", "n=2")) == {"n": 2}
    assert executions.parse_parameters(()) == {}


@pytest.mark.parametrize("pair", ["novalue", "=value", ""])
def test_parse_parameters_refuses_a_pair_without_key_or_equals(pair: str) -> None:
    with pytest.raises(click.BadParameter, match="key=value"):
        executions.parse_parameters(("ok=1", pair))


# --- a bad setting stops the real command -----------------------------------------------------


def _environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USHER_")}
    env.update(PYTHONPATH=str(REPO), COLUMNS="80", **settings)
    return env


def test_bad_setting_stops_the_cli_with_one_line() -> None:
    # Given an invalid global limit (config fails before any connection is tried)
    env = _environment(
        USHER_DEFAULT_MAX_CONCURRENT="0",
        USHER_DATABASE_URL="postgresql+psycopg://usher@127.0.0.1:9/nowhere",
    )
    # When a command runs
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "queues"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Then it stops with one line naming the setting, the value and the range
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "USHER_DEFAULT_MAX_CONCURRENT" in lines[0]
    assert "'0'" in lines[0] and "1..10000" in lines[0]
    assert done.stdout == ""


def test_bad_setting_stops_the_cli_naming_the_setting() -> None:
    """The part of the one-line rule that holds today: it fails and names the setting."""
    env = _environment(
        USHER_LEASE_S="1",
        USHER_DATABASE_URL="postgresql+psycopg://usher@127.0.0.1:9/nowhere",
    )
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "queues", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "USHER_LEASE_S" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_stale_event_files_of_the_filesystem_broker_are_pruned(tmp_path: Path) -> None:
    import os
    import time

    from app import celery as usher_celery

    folder = tmp_path / "broker" / "queue"
    folder.mkdir(parents=True)
    stale = folder / "1_aaa.celeryev.1234-abcd.msg"
    fresh = folder / "2_bbb.celeryev.1234-abcd.msg"
    task = folder / "3_ccc.usher.action.demo.hello.msg"
    for path in (stale, fresh, task):
        path.write_text("{}")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(task, (old, old))
    assert usher_celery.prune_event_files(tmp_path, older_than_s=300) == 1
    assert not stale.exists() and fresh.exists() and task.exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://usher@127.0.0.1:9/nowhere", "postgresql+psycopg://"),
        ("postgresql+psycopg://usher@127.0.0.1:9/nowhere", "cannot reach the database"),
    ],
)
def test_database_url_problems_are_one_line(url: str, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "queues"],
        env=_environment(USHER_DATABASE_URL=url),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr


def test_the_cli_takes_the_apis_priority_bounds() -> None:
    done = CliRunner().invoke(cli.main, ["run", "x.y", "--priority", "5000"])
    assert done.exit_code == 2 and "-1000<=x<=1000" in done.output
