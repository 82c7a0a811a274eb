"""The schemas of pack files, closed everywhere: one per kind of file (``SCHEMAS``), and per
runner the ``runner_config`` keys it reads (``RUNNER_CONFIG``) and the parameters it reads
itself (``RUNNER_PARAMETERS``, enforced at request time).

A new kind of file (a webhook) is one more entry in ``SCHEMAS``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app import bounds
from policies import policy

NAMES = ("noop", "sleep", "python", "shell", "http", "slack", "email")
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$"
MAX_TIMEOUT_S = bounds.TIMEOUT_S.high
# A schedule's missed ticks after downtime: none of them, or the latest one.
MISSED = ("skip", "run_once")
MAX_EVERY_S = 366 * 86_400

# runner_config strings are rendered before the runner reads them, and a single
# "{{ expression }}" keeps its value's type: a template may stand for any value.
TEMPLATE: dict[str, Any] = {"type": "string", "pattern": r"\{\{"}


def templated(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or a template string that renders to a value of it at run time."""
    return {"anyOf": [schema, TEMPLATE]}


def is_templated(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("anyOf", [None])[-1] is TEMPLATE


def closed(properties: dict[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    """An object with these keys and no others."""
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    if required := list(required):
        schema["required"] = required
    return schema


STRING: dict[str, Any] = {"type": "string"}
TEXT: dict[str, Any] = {"type": "string", "minLength": 1}
BOOLEAN = templated({"type": "boolean"})
MAPPING = templated({"type": "object"})
SECONDS = templated({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S})
# The upper bound keeps time.sleep from overflowing; an action's timeout ends it sooner anyway.
SLEEP_SECONDS: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": MAX_TIMEOUT_S}
ADDRESSES = {"anyOf": [STRING, {"type": "array", "items": STRING}]}

RUNNER_CONFIG: dict[str, dict[str, Any]] = {
    "noop": closed({}),
    "sleep": closed({"seconds": templated(SLEEP_SECONDS)}),
    "python": closed(
        {"entry_point": templated({"type": "string", "pattern": r"^[^:\s]+:[^:\s]+$"})},
        required=["entry_point"],
    ),
    "shell": closed(
        {
            "command": {
                "anyOf": [
                    {"type": "string", "pattern": r"\S"},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": ["string", "number", "boolean"]},
                    },
                ]
            },
            "env": MAPPING,
            "cwd": STRING,
            "parameters_as": templated({"enum": ["env", "args"]}),
            "timeout_s": SECONDS,
            "kill_grace_s": templated({"type": "number", "minimum": 0}),
            "retryable": BOOLEAN,
            "retryable_exit_codes": templated({"type": "array", "items": {"type": "integer"}}),
        },
        required=["command"],
    ),
    "http": closed(
        {
            "url": TEXT,
            "method": templated(
                {"type": "string", "pattern": r"(?i)^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$"}
            ),
            "headers": MAPPING,
            "body": {},
            "timeout_s": SECONDS,
            "verify_tls": BOOLEAN,
            # Host names, never templates: the list bounds where a templated url may point.
            "allow_hosts": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "pattern": r"^[^\s{}%/]+$"},
            },
        },
        required=["url"],
    ),
    "slack": closed(
        {
            "webhook_url": TEXT,
            "text": TEXT,
            "channel": STRING,
            "username": STRING,
            "icon_emoji": STRING,
            "blocks": templated({"type": "array", "items": {"type": "object"}}),
            "timeout_s": SECONDS,
        },
        required=["webhook_url", "text"],
    ),
    "email": closed(
        {
            "host": TEXT,
            "port": templated(
                {
                    "type": ["integer", "string"],
                    "minimum": 1,
                    "maximum": 65_535,
                    "pattern": "^[0-9]+$",
                }
            ),
            "tls": templated({"enum": ["none", "starttls", "ssl"]}),
            "from": TEXT,
            "to": ADDRESSES,
            "cc": ADDRESSES,
            "subject": STRING,
            "body": STRING,
            "html": STRING,
            "username": STRING,
            "password": STRING,
            "local_hostname": STRING,
            "verify_tls": BOOLEAN,
            "timeout_s": SECONDS,
        },
        required=["host", "from", "to"],
    ),
}

RUNNER_PARAMETERS: dict[str, dict[str, Any]] = {name: {} for name in NAMES} | {
    "sleep": {"type": "object", "properties": {"seconds": SLEEP_SECONDS}},
}

WINDOW = closed(
    {
        "count": bounds.RATE_COUNT.schema(),
        "per_s": bounds.RATE_PER_S.schema("number"),
    },
    required=["count", "per_s"],
)
RETRY = closed(
    {
        "max_retries": bounds.MAX_RETRIES.schema(),
        "strategy": {"enum": ["fixed", "linear", "exponential"]},
        "initial_delay_ms": bounds.INITIAL_DELAY_MS.schema(),
        "max_delay_ms": bounds.MAX_DELAY_MS.schema(),
        "jitter": {"type": "boolean"},
        "hold_slot": {"type": "boolean"},
    }
)
POLICY = closed(
    {
        "concurrency": bounds.CONCURRENCY.schema(),
        "partition_by": {"type": "array", "items": {"type": "string"}},
        "max_queue_length": bounds.QUEUE_LENGTH.schema(),
        "queue_timeout_s": bounds.TIMEOUT_S.schema(),
        "rate_limit": {
            "oneOf": [
                WINDOW,
                {
                    "type": "array",
                    "minItems": bounds.RATE_WINDOWS.low,
                    "maxItems": bounds.RATE_WINDOWS.high,
                    "items": WINDOW,
                },
            ]
        },
        "retry": RETRY,
        "total_concurrency": bounds.CONCURRENCY.schema(),
        "pools": {
            "type": "array",
            "maxItems": bounds.POOLS_PER_ACTION.high,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": policy.POOL_REF_PATTERN},
        },
        "when_busy": {"enum": list(policy.WHEN_BUSY)},
        "coalesce": {"type": "boolean"},
    }
)
NAME = {"type": "string", "pattern": NAME_PATTERN}
TRIGGER = {"type": "string", "minLength": 1, "maxLength": 200}

# pools: {name: limit}, shared limits the actions of any pack may name (policy.pools).
POOLS = {
    "type": "object",
    "maxProperties": bounds.POOLS_PER_PACK.high,
    "propertyNames": {"pattern": NAME_PATTERN},
    "additionalProperties": bounds.CONCURRENCY.schema(),
}
PACK = closed(
    {"name": NAME, "description": STRING, "policy": POLICY, "pools": POOLS}, required=["name"]
)


def _runner_config_of(runner: str) -> dict[str, Any]:
    config = RUNNER_CONFIG[runner]
    then: dict[str, Any] = {"properties": {"runner_config": config}}
    if config.get("required"):
        then["required"] = ["runner_config"]
    return {
        "if": {"properties": {"runner": {"const": runner}}, "required": ["runner"]},
        "then": then,
    }


ACTION = closed(
    {
        "name": NAME,
        "description": STRING,
        "runner": {"enum": list(NAMES)},
        "runner_config": {"type": "object"},
        "parameters": {"type": "object"},  # a JSON Schema: checked as one
        "timeout_s": bounds.TIMEOUT_S.schema(),
        "policy": POLICY,
    },
    required=["name", "runner"],
) | {"allOf": [_runner_config_of(runner) for runner in NAMES]}

RULE = closed(
    {
        "name": NAME,
        "description": STRING,
        "trigger": TRIGGER,
        "criteria": {"type": "object"},  # paths to tests: checked by policies.criteria
        "action": {"type": "string", "minLength": 3},
        "parameters": {"type": "object"},  # the action's parameters, as templates
        "priority": bounds.PRIORITY.schema(),
        "enabled": {"type": "boolean"},
    },
    required=["name", "trigger", "action"],
)

# Exactly one timing and exactly one target are checked by policies.packs (an error that
# names the second key given reads better than oneOf's), the timing by policies.ticks.
SCHEDULE = closed(
    {
        "name": NAME,
        "description": STRING,
        "cron": {"type": "string", "minLength": 1, "maxLength": 200},
        "every_s": {"type": "number", "minimum": 1, "maximum": MAX_EVERY_S},
        "at": {"type": "string", "minLength": 1, "maxLength": 64},
        "timezone": {"type": "string", "minLength": 1, "maxLength": 64},
        "action": {"type": "string", "minLength": 3},
        "trigger": TRIGGER,
        "parameters": {"type": "object"},  # the action's parameters, as templates
        "missed": {"enum": list(MISSED)},
        "enabled": {"type": "boolean"},
    },
    required=["name"],
)

# A header name as HTTP allows it (RFC 9110 token characters).
HEADER = {"type": "string", "pattern": r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}$"}
# A {{ secrets.NAME }} reference, checked by policies.webhooks: a schema's message would
# quote a literal secret, its message does not.
WEBHOOK_SECRET: dict[str, Any] = {}
WEBHOOK = closed(
    {
        "name": NAME,
        "description": STRING,
        "trigger": TRIGGER,
        # Exactly one kind, checked by policies.webhooks (naming the second one given).
        "auth": closed(
            {
                "hmac_sha256": closed(
                    {
                        "secret": WEBHOOK_SECRET,
                        "header": HEADER,
                        "prefix": {"type": "string", "maxLength": 100},
                    },
                    required=["secret", "header"],
                ),
                "token": closed(
                    {"secret": WEBHOOK_SECRET, "header": HEADER}, required=["secret", "header"]
                ),
            }
        ),
        "delivery_header": HEADER,
    },
    required=["name", "auth"],
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "pack": PACK,
    "action": ACTION,
    "rule": RULE,
    "schedule": SCHEDULE,
    "webhook": WEBHOOK,
}
