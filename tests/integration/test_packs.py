"""Pack loading against a real Postgres: idempotent, all-or-nothing, errors with lines; the
parameters a runner reads itself checked at request time."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app import config, db
from app.errors import InvalidPack, InvalidParameters
from policies import admission, intake, packs, parameters
from tests.support import packs as test_packs

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
        (
            "actions/broken.yaml",
            "name: broken\nrunner: http\nurl: https://x.example\n",
            r"broken.yaml:3: url: unknown key here; it belongs under runner_config",
        ),
        (
            "actions/broken.yaml",
            "name: broken\nrunner: http\nrunner_config: {method: GET}\n",
            r"broken.yaml:3: runner_config: 'url' is a required property",
        ),
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


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"seconds": "soon"}, r"parameters\.seconds: 'soon' is not of type 'number'"),
        ({"seconds": -1}, r"parameters\.seconds: -1 is less than the minimum of 0"),
        (
            {"seconds": 0, "note": "x" * 300},
            r"parameters are 3\d\d bytes; at most 256 are allowed \(USHER_MAX_PARAMETERS_BYTES\)",
        ),
        ({"seconds": 0, "note": _deep(parameters.MAX_DEPTH)}, r"more than 64 levels deep"),
    ],
)
def test_a_sleep_action_refuses_parameters_its_runner_cannot_read(
    engine: Engine,
    settings: config.Settings,
    tmp_path: Path,
    params: dict[str, Any],
    message: str,
) -> None:
    # Given a sleep action whose own schema says nothing of seconds, and a 256-byte cap
    schema = {"type": "object", "properties": {"note": {}}}
    action = {"name": "nap", "runner": "sleep", "parameters": schema}
    ref = test_packs.load(engine, tmp_path, [action]) + ".nap"
    capped = settings.model_copy(update={"max_parameters_bytes": 256})
    with db.unit_of_work(engine) as session:
        # When it comes alone or in a batch, then it is refused the same way, nothing queued
        with pytest.raises(InvalidParameters, match=message) as alone:
            admission.enqueue(session, capped, ref, params)
        (item,) = intake.enqueue_many(session, capped, [{"action": ref, "parameters": params}])
        assert isinstance(item.error, InvalidParameters)
        assert (item.error.code, item.error.message) == ("invalid_parameters", alone.value.message)
        # And a number of seconds is accepted
        assert admission.enqueue(session, capped, ref, {"seconds": 0.5}).execution_id
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM executions")).scalar_one() == 1


def _rule_pack(root: Path, name: str, action: str) -> Path:
    (root / name / "actions").mkdir(parents=True)
    (root / name / "rules").mkdir()
    (root / name / "pack.yaml").write_text(f"name: {name}\n")
    (root / name / "actions" / "local.yaml").write_text("name: local\nrunner: noop\n")
    (root / name / "rules" / "r.yaml").write_text(f"name: r\ntrigger: t\naction: {action}\n")
    return root / name


def test_a_rule_naming_no_action_is_refused_with_its_line_and_the_close_name(
    engine: Engine, tmp_path: Path
) -> None:
    # Given a rule whose action is misspelt
    pack = _rule_pack(tmp_path, "p", "p.locla")
    # Then the load is refused, naming the rule's file and line and the action meant
    with pytest.raises(
        InvalidPack, match=r"r\.yaml:3: action: no action p\.locla .*did you mean p\.local\?"
    ):
        _load(engine, pack)
    assert _counts(engine) == {"packs": 0, "actions": 0, "rules": 0}


def test_a_rule_may_name_an_action_of_another_pack_loaded_before_or_with_it(
    engine: Engine, tmp_path: Path
) -> None:
    # Given pack b's rule on pack a's action: refused while a is not there
    b = _rule_pack(tmp_path / "later", "b", "a.local")
    with pytest.raises(InvalidPack, match=r"no action a\.local in these packs or loaded"):
        _load(engine, b)
    # When a is loaded first, or both at once, it loads
    _load(engine, _rule_pack(tmp_path / "first", "a", "a.local"))
    _load(engine, b)
    assert _counts(engine) == {"packs": 2, "actions": 2, "rules": 2}
    together = tmp_path / "together"
    _rule_pack(together, "c", "d.local")
    _rule_pack(together, "d", "c.local")
    _load(engine, together)
    assert _counts(engine)["rules"] == 4
