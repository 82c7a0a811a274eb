"""``USHER_LOG_FORMAT``: log lines as text (as Celery and Python write them) or as JSON, one
object per line for Loki or ELK.

Secrets are masked before a record reaches any formatter (``secretstore``'s record factory
rewrites the message and the traceback); the JSON formatter masks the extra fields too.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from app import secretstore
from app.config import LogFormat, Settings

# The attributes every LogRecord has: what is not one of them was given as ``extra``.
STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the extra fields, and
    ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in STANDARD and not key.startswith("_") and key not in line:
                line[key] = secretstore.redact(value)
        if record.exc_info or record.exc_text:
            text = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
            line["exception"] = secretstore.redact_text(text)
        if record.stack_info:
            line["stack"] = secretstore.redact_text(self.formatStack(record.stack_info))
        return json.dumps(line, default=str, ensure_ascii=False)


def use_json(logger: logging.Logger) -> None:
    """Every handler of ``logger`` writes JSON (Celery's worker and beat made them)."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


def _celery_logger(logger: logging.Logger, **_: Any) -> None:
    use_json(logger)


def for_celery(settings: Settings) -> None:
    """With JSON, the handlers Celery's worker and beat set up (root and task loggers,
    ``--loglevel`` as given) write JSON; with text, Celery's own format."""
    if settings.log_format is not LogFormat.json:
        return
    from celery import signals

    signals.after_setup_logger.connect(_celery_logger, weak=False, dispatch_uid="usher-json")
    signals.after_setup_task_logger.connect(
        _celery_logger, weak=False, dispatch_uid="usher-json-task"
    )


def configure(settings: Settings, level: int = logging.INFO) -> None:
    """The logging of a process that Celery does not set up (``usher web``): with JSON, one
    handler on the root logger; with text, Python's defaults, as before."""
    secretstore.install_log_redaction(settings.secrets_dir)
    if settings.log_format is not LogFormat.json:
        return
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]
    root.setLevel(level)
