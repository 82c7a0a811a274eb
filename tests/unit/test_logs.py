"""USHER_LOG_FORMAT=json: one JSON object per line, secrets masked, for web, worker and beat."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from app import config, logs, secretstore

SECRET = "s3cret-value-for-the-log-test"


def test_a_record_is_one_json_object_with_its_extra_fields_and_secrets_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USHER_SECRET_LOGTEST", SECRET)
    secretstore.install_log_redaction(None)
    logger = logging.getLogger("usher.test")
    record = logger.makeRecord(
        "usher.test",
        logging.WARNING,
        __file__,
        1,
        "execution %s saw %s",
        (7, SECRET),
        None,
        extra={"execution_id": 7, "header": f"Bearer {SECRET}"},
    )
    try:
        raise ValueError(f"boom {SECRET}")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line and SECRET not in line
    got = json.loads(line)
    assert got["level"] == "WARNING" and got["logger"] == "usher.test"
    assert got["message"] == "execution 7 saw ***"
    assert got["execution_id"] == 7 and got["header"] == "Bearer ***"
    assert got["time"].endswith("+00:00") and "ValueError: boom ***" in got["exception"]


SCRIPT = """
import logging
from app import celery, config
app = celery.create(config.load())
app.log.setup(loglevel="INFO")  # what `celery worker` and `celery beat` do
logging.getLogger("tasks.sweeper").info("swept %s", "x", extra={"lines": 3})
logging.getLogger("tasks.execute").warning("token %s", SECRET)
"""


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_celery_worker_and_beat_logging_follows_the_setting(log_format: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USHER_")}
    env.update(
        USHER_LOG_FORMAT=log_format,
        USHER_SECRET_LOGTEST=SECRET,
        USHER_DATABASE_URL="postgresql+psycopg://u@127.0.0.1:1/none",
    )
    done = subprocess.run(
        [sys.executable, "-c", f"SECRET = {SECRET!r}\n{SCRIPT}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and SECRET not in done.stderr
    if log_format == "text":
        assert not lines[0].startswith("{")
        return
    first, second = (json.loads(line) for line in lines)
    assert (first["logger"], first["message"], first["lines"]) == ("tasks.sweeper", "swept x", 3)
    assert second["level"] == "WARNING" and second["message"] == "token ***"


def test_web_logging_with_json(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure(config.Settings(log_format=config.LogFormat.json))
        assert [type(h.formatter) for h in root.handlers] == [logs.JsonFormatter]
    finally:
        root.handlers, _ = saved
        root.setLevel(saved[1])
