"""Levels above the line in Postgres alone: a total across partitions served round robin,
a pool shared by two packs served oldest request first, the pack files that name them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, text

from app import config, db
from app.errors import InvalidPack
from policies import admission
from tests.support import invariants
from tests.support.flow import WaitingOnALock, finish, submit
from tests.support.packs import action, load_folder, write_folder


def _run(name: str, policy: dict[str, Any]) -> dict[str, Any]:
    return action(name, "noop", policy)


def _granted(engine: Engine, ids: list[int]) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("""SELECT id FROM executions WHERE id = ANY(:ids) AND status = 'scheduled'
                    ORDER BY scheduled_at, id"""),
            {"ids": ids},
        )
        return list(rows.scalars())


def _granted_at(engine: Engine, execution_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT scheduled_at FROM executions WHERE id = :i"), {"i": execution_id}
        ).scalar_one()


def _levels(engine: Engine) -> dict[str, tuple[int, int]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT ref, max, active FROM levels ORDER BY ref"))
        return {r.ref: (r.max, r.active) for r in rows}


def _holders(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("""SELECT l, count(*) FROM executions, unnest(levels) AS l
                    WHERE status IN ('scheduled', 'running') GROUP BY l""")
        )
        return {r[0]: r[1] for r in rows}


def test_a_total_serves_the_partitions_round_robin(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given restarts at most 1 per host and 2 in all
    root = write_folder(
        tmp_path / "ops",
        {"name": "ops"},
        [_run("restart", {"concurrency": 1, "partition_by": ["host"], "total_concurrency": 2})],
    )
    load_folder(engine, root)
    # When host a asks three times, then b three times, then c three times
    ids = submit(
        engine,
        settings,
        None,
        "ops.restart",
        [{"host": h} for h in "aaabbbccc"],
    )
    by_host = {i: h for i, h in zip(ids, "aaabbbccc", strict=True)}
    # Then the first two grants go to a and b, and the next free slot to c, not to a again
    assert [by_host[i] for i in _granted(engine, ids)] == ["a", "b"]
    assert _levels(engine) == {"ops.restart": (2, 2)}
    first_a = ids[0]
    after = finish(engine, settings, first_a)
    assert [by_host[i] for i in after] == ["c"]
    # And every host is served in turn while each keeps its own FIFO order
    running = [i for i in _granted(engine, ids)]
    while running:
        running.sort()
        oldest = min(running, key=lambda i: _granted_at(engine, i))
        running.remove(oldest)
        running += finish(engine, settings, oldest)
    with engine.connect() as conn:
        grants = list(
            conn.execute(text("SELECT id FROM executions ORDER BY scheduled_at, id")).scalars()
        )
    assert "".join(by_host[i] for i in grants) == "abcabcabc"
    assert _levels(engine) == {"ops.restart": (2, 0)}
    assert _holders(engine) == {}
    invariants.check_line(engine, "ops.restart", 1)


def test_a_pool_of_two_packs_grants_in_request_order(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given pool db of pack a (2 slots), taken by a.write and by b.write (another pack)
    write_folder(
        tmp_path / "packs" / "a",
        {"name": "a", "pools": {"db": 2}},
        [_run("write", {"concurrency": 2, "pools": ["db"]})],
    )
    write_folder(
        tmp_path / "packs" / "b",
        {"name": "b"},
        [_run("write", {"concurrency": 2, "pools": ["a.db"]})],
    )
    load_folder(engine, tmp_path / "packs")
    # When requests alternate between the two actions
    refs = ["a.write", "b.write"] * 4
    ids = [submit(engine, settings, None, ref, [{}])[0] for ref in refs]
    # Then two run, and each free slot goes to the oldest request, whichever action it is
    assert _granted(engine, ids) == ids[:2]
    assert finish(engine, settings, ids[0]) == [ids[2]]
    assert finish(engine, settings, ids[1]) == [ids[3]]
    assert finish(engine, settings, ids[3]) == [ids[4]]
    assert _levels(engine) == {"a.db": (2, 2)}
    with engine.connect() as conn:
        level_id = conn.execute(text("SELECT id FROM levels WHERE ref = 'a.db'")).scalar_one()
    assert _holders(engine) == {level_id: 2}


def test_pack_files_name_pools_that_exist_and_keep_those_in_use(
    engine: Engine, tmp_path: Path
) -> None:
    lonely = write_folder(
        tmp_path / "lonely",
        {"name": "lonely"},
        [_run("write", {"pools": ["nowhere"]})],
    )
    with pytest.raises(InvalidPack, match=r"lonely\.nowhere, which no pack declares"):
        load_folder(engine, lonely)
    owner = write_folder(tmp_path / "owner", {"name": "owner", "pools": {"db": 1}}, [])
    user = write_folder(tmp_path / "user", {"name": "user"}, [_run("w", {"pools": ["owner.db"]})])
    load_folder(engine, owner)
    load_folder(engine, user)
    (owner / "pack.yaml").write_text(yaml.safe_dump({"name": "owner"}))
    with pytest.raises(InvalidPack, match=r"action user\.w still takes it"):
        load_folder(engine, owner)


def _pool_pair(engine: Engine, tmp_path: Path) -> None:
    write_folder(
        tmp_path / "packs" / "a",
        {"name": "a", "pools": {"db": 1}},
        [_run("write", {"concurrency": 1, "pools": ["db"]})],
    )
    write_folder(tmp_path / "packs" / "b", {"name": "b"}, [_run("write", {"pools": ["a.db"]})])
    load_folder(engine, tmp_path / "packs")


def test_a_release_that_grants_in_another_line_waits_for_the_group_first(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given a pool of one: a.write runs, a second a.write waits
    _pool_pair(engine, tmp_path)
    running, waiting = submit(engine, settings, None, "a.write", [{}, {}])
    with db.unit_of_work(engine) as session:
        admission.claim(session, running, 1, "w", 30)

    def release() -> None:
        with db.unit_of_work(engine) as session:
            admission.release(session, settings, admission.Ended(running, 1, "succeeded"))

    # Given an enqueue into b.write's line, which holds the group and that line
    with db.unit_of_work(engine) as session:
        submitted = admission.enqueue(session, settings, "b.write", {})
        # When the release of a.write (its next grant may be b.write's) starts
        other = WaitingOnALock(engine, release)
        # Then it waits on the group holding no line: this transaction still takes a.write's
        # line (a cancel), where a release that locked its line first would deadlock
        admission.cancel(session, settings, waiting)
    assert other.finished() == []
    # And the freed slot went to the oldest request left: b.write's
    assert _granted(engine, [submitted.execution_id]) == [submitted.execution_id]
    assert invariants.counter_mismatches(engine) == []


def test_a_pack_load_that_regroups_waits_for_the_group_before_any_line(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given the pool pair, and a third action that joins the pool on the next load
    _pool_pair(engine, tmp_path)
    write_folder(tmp_path / "packs" / "c", {"name": "c"}, [_run("write", {"concurrency": 1})])
    load_folder(engine, tmp_path / "packs" / "c")
    submit(engine, settings, None, "c.write", [{}])
    (running,) = submit(engine, settings, None, "a.write", [{}])
    write_folder(tmp_path / "packs" / "c", {"name": "c"}, [_run("write", {"pools": ["a.db"]})])

    def reload() -> None:
        load_folder(engine, tmp_path / "packs" / "c")

    # Given a transaction that holds the group (a cancel in a.write's line)
    with db.unit_of_work(engine) as session:
        admission.cancel(session, settings, running)
        # When a load moves c.write into the group
        other = WaitingOnALock(engine, reload)
        # Then it waits for the group before locking c.write's line, which another
        # enqueue can still take
        (extra,) = submit(engine, settings, None, "c.write", [{}])
        assert extra
    assert other.finished() == []
    with engine.connect() as conn:
        groups = conn.execute(
            text("SELECT DISTINCT level_group FROM actions WHERE ref LIKE '%.write'")
        ).scalars()
        assert len(set(groups)) == 1
    assert invariants.counter_mismatches(engine) == []


def test_a_rate_limit_holds_on_a_line_of_a_pool(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given a pooled action that may start once a minute
    policy = {"concurrency": 3, "pools": ["db"], "rate_limit": {"count": 1, "per_s": 60}}
    write_folder(tmp_path / "r", {"name": "r", "pools": {"db": 3}}, [_run("go", policy)])
    load_folder(engine, tmp_path / "r")
    first, *rest = submit(engine, settings, None, "r.go", [{}, {}, {}])
    # Then one starts, the pool's free slots notwithstanding, and its end grants nothing
    assert _granted(engine, [first, *rest]) == [first]
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, first, 1, "w", 30) is not None
    with db.unit_of_work(engine) as session:
        released = admission.release(session, settings, admission.Ended(first, 1, "succeeded"))
    assert released.grants == [] and released.rate_wake_at is not None
    assert _granted(engine, rest) == []
    assert invariants.counter_mismatches(engine) == []
