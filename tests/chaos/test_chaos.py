"""The chaos harness in CI: 500 executions over lines of limit 1, 2, 3 and 8 on three worker
processes while pool processes and whole workers are SIGKILLed."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from app import config
from tests.chaos import harness

pytestmark = [pytest.mark.broker, pytest.mark.timeout(900)]


@pytest.fixture
def settings(db_url: str, broker_url: str | None, tmp_path: Path) -> config.Settings:
    return config.load(
        database_url=db_url,
        broker_url=broker_url,
        home=tmp_path / "home",
        lease_s=5,
        sweep_interval_s=1.0,
    )


def test_no_execution_lost_no_limit_broken_under_kills(
    engine: Engine, settings: config.Settings, celery_app: Any, tmp_path: Path
) -> None:
    report = harness.run(
        engine, settings, celery_app, tmp_path, executions=500, kill_every_s=0.8, timeout_s=480
    )
    print(asdict(report))
    assert report.kills >= 10
    assert report.lost == 0
    assert report.over_limit_lines == 0, report.peaks
    assert report.fifo_violations == 0
    assert report.double_runs == 0
    assert report.counter_mismatches == 0
    assert report.left_active == 0
    assert report.worker_lost_attempts > 0  # the kills did hit running work
