"""Pack loading against a real Postgres: idempotent, all-or-nothing, errors with lines."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from app import db, packs
from app.errors import InvalidPack

pytestmark = pytest.mark.timeout(60)

DEMO = Path(__file__).resolve().parents[2] / "examples" / "packs"


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("packs", "actions", "rules")
        }


def _load(engine: Engine, path: Path) -> None:
    with db.unit_of_work(engine) as session:
        packs.load(session, path)


def test_loading_twice_updates_and_never_duplicates(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "packs"
    shutil.copytree(DEMO, root)
    _load(engine, root)
    first = _counts(engine)
    assert first["packs"] == 1 and first["actions"] >= 5 and first["rules"] >= 4
    # When a rule changes and another disappears, and the pack is loaded again
    rule = root / "demo" / "rules" / "report_on_alert.yaml"
    rule.write_text(rule.read_text().replace("seconds: 2", "seconds: 3"))
    (root / "demo" / "rules" / "sync_on_change.yaml").unlink()
    _load(engine, root)
    # Then the change is applied in place and the gone rule no longer exists
    assert _counts(engine) == {**first, "rules": first["rules"] - 1}
    with engine.connect() as conn:
        params = conn.execute(
            text("SELECT parameters FROM rules WHERE ref = 'demo.report_on_alert'")
        ).scalar_one()
        gone = conn.execute(
            text("SELECT count(*) FROM rules WHERE ref = 'demo.sync_on_change'")
        ).scalar_one()
    assert params == {"seconds": 3} and gone == 0


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("actions/broken.yaml", "name: broken\nrunner: teleport\n", r"broken.yaml:2: runner"),
        (
            "actions/broken.yaml",
            "name: broken\nrunner: noop\npolicy:\n  concurrency: 0\n",
            r"broken.yaml:4: policy.concurrency",
        ),
        (
            "rules/broken.yaml",
            "name: r\ntrigger: t\naction: demo.hello\ncriteria:\n  payload.x: {between: 1}\n",
            r"broken.yaml:5: criteria.payload.x: unknown operator",
        ),
        ("rules/broken.yaml", "name: r\ntrigger: t\n", r"broken.yaml:1: .*'action' is a required"),
        ("actions/broken.yaml", "name: [unclosed\n", r"broken.yaml:2: not valid YAML"),
    ],
)
def test_a_bad_file_is_refused_with_its_line_and_nothing_is_applied(
    engine: Engine, tmp_path: Path, file: str, content: str, message: str
) -> None:
    root = tmp_path / "packs"
    shutil.copytree(DEMO, root)
    second = root / "zzz"
    (second / "actions").mkdir(parents=True)
    (second / "rules").mkdir()
    (second / "pack.yaml").write_text("name: zzz\n")
    (second / file).write_text(content)
    with pytest.raises(InvalidPack, match=message):
        _load(engine, root)
    assert _counts(engine) == {"packs": 0, "actions": 0, "rules": 0}
