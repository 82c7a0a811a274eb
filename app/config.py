"""Validated settings, read once from ``USHER_*`` and an optional TOML file (``USHER_CONFIG``)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from app import bounds
from app.errors import ConfigError


class RetryStrategy(StrEnum):
    fixed = "fixed"
    linear = "linear"
    exponential = "exponential"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class Settings(BaseSettings):
    # Unknown TOML keys and overrides are refused here, unknown USHER_* variables by load().
    model_config = SettingsConfigDict(env_prefix="USHER_", extra="forbid", frozen=True)

    home: Path = Path("./.usher")
    database_url: str | None = None
    broker_url: str | None = None
    # A guessable admin token is refused at start-up (tokens made by Usher have 43+ chars).
    api_token: Annotated[str | None, Field(min_length=16)] = None
    web_host: str = "127.0.0.1"
    web_port: Annotated[int, Field(ge=1, le=65535)] = 5000
    default_max_concurrent: Annotated[int, Field(**bounds.CONCURRENCY.field())] = 10
    default_max_queue_length: Annotated[int, Field(**bounds.QUEUE_LENGTH.field())] = 10_000
    default_queue_timeout_s: Annotated[int, Field(**bounds.TIMEOUT_S.field())] = 3600
    lease_s: Annotated[int, Field(ge=3, le=3600)] = 15
    # How long a starting worker, beat or web waits for a database that does not answer yet
    # (a host booting, Postgres restarting) before it stops with one line.
    start_wait_s: Annotated[float, Field(ge=0, le=3600)] = 60
    retry_max_retries: Annotated[int, Field(**bounds.MAX_RETRIES.field())] = 3
    retry_strategy: RetryStrategy = RetryStrategy.exponential
    retry_initial_delay_ms: Annotated[int, Field(**bounds.INITIAL_DELAY_MS.field())] = 100
    retry_max_delay_ms: Annotated[int, Field(**bounds.MAX_DELAY_MS.field())] = 5000
    retry_jitter: bool = True
    sweep_interval_s: Annotated[float, Field(ge=0.2, le=60)] = 2.0
    shutdown_grace_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    # Workers' claim/finish commits wait for the WAL flush (see app.db.Hot).
    durable_transitions: bool = False
    # Hostile input: every size is bounded (docs/security.md).
    max_body_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = 1024 * 1024
    max_parameters_bytes: Annotated[int, Field(ge=256, le=16 * 1024 * 1024)] = 64 * 1024
    max_payload_bytes: Annotated[int, Field(ge=256, le=16 * 1024 * 1024)] = 256 * 1024
    # Live output kept per stream and attempt (tasks.output); past it, one truncation marker.
    output_max_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    # Event processing: a time limit per try, and the tries before an event ends failed.
    event_time_limit_s: Annotated[int, Field(ge=1, le=3600)] = 30
    event_max_failures: Annotated[int, Field(ge=1, le=100)] = 5
    # Chains of usher.execution events: past this many steps an enforcement is rejected.
    max_chain_depth: Annotated[int, Field(ge=0, le=1000)] = 10
    # A schedule's tick that a beat reaches later than this is missed (the schedule's
    # `missed` decides); beats look every second at most, so at least that.
    schedule_grace_s: Annotated[float, Field(ge=1, le=86_400)] = 5.0
    # An Idempotency-Key is remembered this long (per action, or per trigger for events).
    idempotency_ttl_s: Annotated[int, Field(**bounds.IDEMPOTENCY_TTL_S.field())] = 86_400
    # History kept (policies.retention): finished executions and their attempts and output,
    # events and enforcements, schedule fires; the audit for its own span.
    retention_s: Annotated[int, Field(ge=60, le=100 * 365 * 86_400)] = 30 * 86_400
    audit_retention_s: Annotated[int, Field(ge=60, le=100 * 365 * 86_400)] = 365 * 86_400
    # Where ``{{ secrets.NAME }}`` looks after USHER_SECRET_<NAME>: one file per secret.
    secrets_dir: Path | None = None
    # Session cookies are Secure (HTTPS only) unless this is set for plain-HTTP development.
    insecure_cookies: bool = False
    # Failed logins and bearer tokens allowed per client address and minute.
    auth_failures_per_minute: Annotated[int, Field(ge=1, le=100_000)] = 20
    # Reverse proxies in front of the web server whose X-Forwarded-For is believed.
    trusted_proxies: Annotated[int, Field(ge=0, le=5)] = 0
    metrics_cache_s: Annotated[float, Field(ge=0, le=300)] = 5.0
    # Signs the dashboard's session cookies (unset: a random key kept in USHER_HOME/secret_key).
    secret_key: Annotated[str | None, Field(min_length=16)] = None
    log_format: LogFormat = LogFormat.text
    flower_basic_auth: Annotated[str | None, Field(pattern=r"^[^:,]+:[^,]+$")] = None
    flower_port: Annotated[int, Field(ge=1, le=65535)] = 5555
    # `usher` through the REST API of this Usher (its base URL), with this token; unset: on
    # the database, as the admin `cli:<os user>`.
    url: Annotated[str | None, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] = None
    token: Annotated[str | None, Field(min_length=1, max_length=1000)] = None

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value and not value.startswith("postgresql+psycopg://"):
            scheme = value.partition("://")[0] or value[:20]
            raise ValueError(
                f"{scheme}:// is not a URL Usher can use; write postgresql+psycopg://"
                "user:password@host:5432/database (psycopg 3)"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("USHER_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def heartbeat_s(self) -> float:
        return self.lease_s / 3


# Settings whose value is a secret: an error names them but never shows the value.
SECRET_SETTINGS = frozenset(
    {"api_token", "flower_basic_auth", "database_url", "broker_url", "secret_key", "token"}
)
# USHER_* variables that are not settings: the TOML file's name, and the namespaces of
# template secrets (USHER_SECRET_<NAME>), of a shell action's parameters (USHER_PARAM_<NAME>,
# seen by a child that runs usher) and of the tests' and benchmarks' own variables.
NOT_SETTINGS = frozenset({"config"})
NAMESPACES = ("secret_", "param_", "test_", "bench_")


def _allowed(field_name: str) -> str:
    field = Settings.model_fields.get(field_name)
    if field is None:
        return "see docs/configuration.md"
    bounds = {type(m).__name__: m for m in field.metadata}
    if "Ge" in bounds and "Le" in bounds:
        return f"allowed: {bounds['Ge'].ge}..{bounds['Le'].le}"
    if field.annotation in (RetryStrategy, LogFormat):
        return "allowed: " + ", ".join(s.value for s in field.annotation)
    if field.annotation is bool:
        return "allowed: true, false"
    return "see docs/configuration.md"


def unknown(environ: Mapping[str, str]) -> str | None:
    """One line naming the first ``USHER_*`` variable that is no setting, with the closest
    setting's name if one is close; None if every one is known."""
    for variable in sorted(environ):
        if not variable.upper().startswith("USHER_"):
            continue
        name = variable[len("USHER_") :].lower()
        if name in Settings.model_fields or name in NOT_SETTINGS or name.startswith(NAMESPACES):
            continue
        return f"{variable} is not a setting{_suggest(name)} (see docs/configuration.md)"
    return None


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, list(Settings.model_fields), n=1, cutoff=0.6)
    return f"; did you mean USHER_{close[0].upper()}?" if close else ""


def describe(error: ValidationError) -> str:
    """One line naming the first bad setting, its value and what is allowed."""
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "?"
    if first["type"] == "extra_forbidden":
        return f"{name!r} is not a setting{_suggest(name.lower())} (see docs/configuration.md)"
    value: Any = "***" if name in SECRET_SETTINGS else first.get("input")
    return f"USHER_{name.upper()}={value!r} is invalid: {first['msg']} ({_allowed(name)})"


def load(**overrides: Any) -> Settings:
    """Read and validate the settings; raise ConfigError with one line on a bad value."""
    config_file = os.environ.get("USHER_CONFIG")
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"USHER_CONFIG={config_file!r} is invalid: no such file")
    refused = unknown(os.environ)
    if refused:
        raise ConfigError(refused)
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(describe(error)) from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"USHER_CONFIG={os.environ.get('USHER_CONFIG')!r}: {error}") from None
