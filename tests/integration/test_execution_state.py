"""An execution is two rows (migration 0025): its request, written once, and its state,
which every transition updates. The hot path never rewrites the request, and a lease
renewal is a HOT update of the state (no index entry)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from app import config, db
from policies import admission
from tests.support import invariants, packs
from tests.support.flow import submit

TABLE_WRITES = text("""
    SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
    WHERE relname IN ('execution_requests', 'execution_state')
""")


def _writes(engine: Engine) -> dict[str, dict[str, int]]:
    # A backend's table counters reach the shared statistics when it exits: every
    # connection of this process is closed first.
    db.dispose_all()
    with engine.connect() as conn:
        return {
            r.relname: {"ins": r.n_tup_ins, "upd": r.n_tup_upd, "hot": r.n_tup_hot_upd}
            for r in conn.execute(TABLE_WRITES)
        }


def test_the_hot_path_writes_the_state_only_and_a_renewal_is_a_hot_update(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    pack = packs.load(engine, tmp_path, [{"name": "job", "runner": "noop", "policy": {}}])
    hot = db.Hot(settings.database_url or "", durable=settings.durable_transitions)
    try:
        # Given 20 executions enqueued (5 granted at once: the settings' default limit)
        ids = submit(engine, settings, None, f"{pack}.job", [{}] * 20)
        before = _writes(engine)
        # When each is claimed, renewed three times and finished, following the grants
        todo = [(i, 1) for i in ids[: settings.default_max_concurrent]]
        done = 0
        while todo:
            execution_id, attempt = todo.pop()
            claim: Any = partial(
                admission.claim,
                execution_id=execution_id,
                attempt=attempt,
                worker="w/1",
                lease_s=60,
            )
            assert hot.run(claim) is not None
            for _ in range(3):
                renew: Any = partial(admission.renew, held=[(execution_id, attempt)], lease_s=60)
                assert hot.run(renew) == {(execution_id, attempt)}
            ended = admission.Ended(execution_id, attempt, "succeeded")
            finished = hot.run(partial(admission.finish, settings=settings, ended=ended))
            assert finished is not None
            todo += [(g.execution_id, g.attempt) for g in finished.grants]
            done += 1
    finally:
        hot.close()
    after = _writes(engine)
    assert done == 20
    # Then no request was written again, and every renewal was a HOT update of the state
    assert after["execution_requests"]["upd"] == before["execution_requests"]["upd"] == 0
    renewals = 3 * 20
    state_updates = after["execution_state"]["upd"] - before["execution_state"]["upd"]
    hot_updates = after["execution_state"]["hot"] - before["execution_state"]["hot"]
    # 20 claims, 60 renewals, 20 finishes, and the grants of those not granted at once
    assert state_updates == 20 + renewals + 20 + (20 - settings.default_max_concurrent)
    assert hot_updates >= renewals
    with engine.connect() as conn:
        statuses = conn.execute(text("SELECT DISTINCT status FROM executions")).scalars().all()
    assert statuses == ["succeeded"]
    assert invariants.counter_mismatches(engine) == []
