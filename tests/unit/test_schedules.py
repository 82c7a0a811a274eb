"""Schedule files strictly checked (the timing, the target, templates), the payload of a tick,
and every setting documented: no database."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app import config
from app.errors import ConfigError, InvalidPack
from policies import packs, schedules

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No USHER_* setting leaks in from the shell running the tests."""
    for name in list(os.environ):
        if name.startswith("USHER_"):
            monkeypatch.delenv(name)


def _pack(root: Path, schedule: str, rules: dict[str, str] | None = None) -> Path:
    (root / "schedules").mkdir(parents=True)
    (root / "pack.yaml").write_text("name: p\n")
    (root / "schedules" / "s.yaml").write_text(schedule)
    (root / "rules").mkdir()
    for name, text in (rules or {}).items():
        (root / "rules" / name).write_text(text)
    return root


def _refused(tmp_path: Path, schedule: str, rules: dict[str, str] | None = None) -> str:
    with pytest.raises(InvalidPack) as caught:
        packs.read_pack(_pack(tmp_path / "p", schedule, rules))
    return caught.value.message


def test_a_schedule_file_is_read_with_its_defaults(tmp_path: Path) -> None:
    text = (
        "name: nightly\ndescription: at three\ncron: '0 3 * * *'\ntimezone: Europe/Berlin\n"
        "action: ops.backup\nparameters: {when: '{{ schedule.fire_at }}'}\n"
    )
    spec = packs.read_pack(_pack(tmp_path / "p", text))
    assert spec.schedules == [
        {
            "name": "nightly",
            "description": "at three",
            "cron": "0 3 * * *",
            "timezone": "Europe/Berlin",
            "action": "ops.backup",
            "parameters": {"when": "{{ schedule.fire_at }}"},
        }
    ]
    when = schedules.timing(spec.schedules[0])
    assert when.describe() == "cron 0 3 * * *" and when.timezone == "Europe/Berlin"


def test_a_one_off_without_an_offset_is_in_its_timezone(tmp_path: Path) -> None:
    text = "name: once\nat: 2026-07-01T09:00:00\ntimezone: Europe/Berlin\ntrigger: t\n"
    spec = packs.read_pack(_pack(tmp_path / "p", text))
    assert schedules.timing(spec.schedules[0]).next_after(datetime(2026, 1, 1, tzinfo=UTC)) == (
        datetime(2026, 7, 1, 7, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: s\ncron: '61 * * * *'\ntrigger: t\n",
            "s.yaml:2: cron: cron '61 * * * *': Bad minute",
        ),
        (
            "name: s\ncron: '* * * *'\ntrigger: t\n",
            "s.yaml:2: cron: cron takes 5 fields (minute hour day month weekday)",
        ),
        (
            "name: s\ncron: '* * * * *'\ntimezone: Mars/Base\ntrigger: t\n",
            "s.yaml:3: timezone: 'Mars/Base' is not an IANA timezone name",
        ),
        ("name: s\nat: next tuesday\ntrigger: t\n", "s.yaml:2: at: 'next tuesday' is not an ISO"),
        ("name: s\nevery_s: 0.5\ntrigger: t\n", "s.yaml:2: every_s: 0.5 is less than the minimum"),
        (
            "name: s\nevery_s: 5\ntriger: t\n",
            "s.yaml:3: triger: unknown key (did you mean trigger?)",
        ),
        ("name: s\nevery_s: 5\ntrigger: t\nmissed: later\n", "s.yaml:4: missed: 'later' is not"),
        (
            "name: s\ncron: '* * * * *'\nevery_s: 5\ntrigger: t\n",
            "s.yaml:3: every_s: give exactly one of cron, every_s or at, not both cron and every_s",
        ),
        ("name: s\ntrigger: t\n", "s.yaml:1: document: give exactly one of cron, every_s or at"),
        ("name: s\nevery_s: 5\n", "s.yaml:1: document: give exactly one of action or trigger"),
        (
            "name: s\nevery_s: 5\naction: p.a\ntrigger: t\n",
            "s.yaml:4: trigger: give exactly one of action or trigger, not both action and trigger",
        ),
        (
            "name: s\nevery_s: 5\ntrigger: t\nparameters: {a: 1}\n",
            "s.yaml:4: parameters: parameters go with action",
        ),
        ("name: s\nevery_s: 5\naction: backup\n", "s.yaml:3: action: must be a reference"),
        (
            "name: s\nevery_s: 5\naction: p.a\nparameters:\n  at: '{{ event.payload }}'\n",
            "s.yaml:5: parameters.at: the template reads event, which is not defined here "
            "(known: schedule)",
        ),
        (
            "name: s\nevery_s: 5\naction: p.a\nparameters:\n  at: '{{ schedule.fire_at }'\n",
            "s.yaml:5: parameters.at: not a valid template",
        ),
    ],
)
def test_a_bad_schedule_names_its_file_line_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in _refused(tmp_path, text)


def test_a_schedule_may_not_share_its_name_with_a_rule_of_its_pack(tmp_path: Path) -> None:
    # An enforcement is recorded under its ref: a rule of that name would be seen as done.
    rule = {"nightly.yaml": "name: nightly\ntrigger: usher.schedule\naction: p.a\n"}
    message = _refused(tmp_path, "name: nightly\nevery_s: 60\naction: p.a\n", rule)
    assert "s.yaml:1: name: a rule of this pack has this name too" in message


def test_the_payload_names_the_schedule_and_its_tick_in_utc() -> None:
    tick = datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert schedules.payload("ops.nightly", tick) == {
        "schedule": "ops.nightly",
        "fire_at": "2026-03-29T01:00:00+00:00",
    }


def test_every_setting_is_documented() -> None:
    documented = set(
        re.findall(r"^\| `USHER_(\w+)`", (REPO / "docs" / "configuration.md").read_text(), re.M)
    )
    assert {name.upper() for name in config.Settings.model_fields} - documented == set()


def test_the_grace_of_late_ticks_has_bounds() -> None:
    assert config.load().schedule_grace_s == 5.0
    with pytest.raises(ConfigError, match=r"USHER_SCHEDULE_GRACE_S=0.5 is invalid.*1\.\.86400"):
        config.load(schedule_grace_s=0.5)


def test_an_unquoted_cron_line_says_to_quote_it(tmp_path: Path) -> None:
    message = _refused(tmp_path, "name: s\ncron: * * * * *\ntrigger: t\n")
    assert "s.yaml:2: not valid YAML" in message and "quote it, cron: '* * * * *'" in message
