"""A migrated database holds exactly the PL/pgSQL of ``app/sql/functions.sql``."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from app import config, db, sql
from policies import control, limits
from tests.support import packs

DEFINITIONS = text("""
    SELECT p.oid::regprocedure::text AS signature, pg_get_functiondef(p.oid) AS definition
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = current_schema() AND p.proname LIKE 'usher\\_%'
    ORDER BY 1
""")


def test_the_migrations_leave_the_functions_of_functions_sql(engine: Engine) -> None:
    # Given a database made by the migrations
    with engine.connect() as connection:
        migrated = dict(connection.execute(DEFINITIONS).all())
        # When functions.sql is loaded over it (in a transaction that is rolled back)
        connection.exec_driver_sql(sql.functions())
        loaded = dict(connection.execute(DEFINITIONS).all())
        connection.rollback()
    # Then it changes nothing, and defines every usher_ function there is
    assert loaded == migrated
    assert {signature.split("(")[0] for signature in migrated} == FUNCTIONS_IN_FILE


FUNCTIONS_IN_FILE = {
    line.split("FUNCTION", 1)[1].split("(", 1)[0].strip()
    for line in sql.functions().splitlines()
    if line.startswith("CREATE OR REPLACE FUNCTION")
}


def test_the_file_defines_the_hot_path_and_list_helpers() -> None:
    assert {
        "usher_admit",
        "usher_release",
        "usher_finish",
        "usher_capped_json",
        "usher_capped_text",
        "usher_oldest_queued",
        "usher_attempt_totals_add",
    } <= FUNCTIONS_IN_FILE


STORED = text("""
    SELECT a.name, a.resolved_concurrency, a.resolved_rate_limited,
           CAST(a.policy AS text) AS action_policy, CAST(p.policy AS text) AS pack_policy
    FROM actions a JOIN packs p ON p.id = a.pack_id WHERE p.name = :pack ORDER BY a.name
""")


def _stored(engine: Engine, pack: str) -> dict[str, tuple[int | None, bool]]:
    with engine.connect() as connection:
        rows = connection.execute(STORED, {"pack": pack}).all()
    for row in rows:
        # the stored limit is limits.resolve's, whatever the settings' default is
        for default in (1, 7):
            settings = config.Settings(default_max_concurrent=default)
            resolved = limits.resolve(row.action_policy, row.pack_policy, settings)
            expected = default if row.resolved_concurrency is None else row.resolved_concurrency
            assert resolved.concurrency == expected
            assert bool(resolved.rate) == row.resolved_rate_limited
    return {r.name: (r.resolved_concurrency, r.resolved_rate_limited) for r in rows}


def test_usher_finish_reads_the_limits_resolve_gives_as_packs_and_live_changes_set_them(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given a pack whose policy sets a limit, and actions that override it or not
    window = {"count": 5, "per_s": 1.0}
    actions = [
        {"name": "own", "runner": "noop", "policy": {"concurrency": 2.0}},
        {"name": "inherits", "runner": "noop"},
        {"name": "rated", "runner": "noop", "policy": {"rate_limit": window}},
    ]
    pack = packs.load(engine, tmp_path, actions, policy={"concurrency": 3})
    assert _stored(engine, pack) == {"own": (2, False), "inherits": (3, False), "rated": (3, True)}
    # When the pack is loaded again with another policy, and a limit is changed live
    packs.load(engine, tmp_path, actions, policy={"rate_limit": [window]}, name=pack)
    with db.unit_of_work(engine) as session:
        control.update_policy(session, settings, f"{pack}.inherits", {"concurrency": 9})
    # Then the stored limits follow both
    assert _stored(engine, pack) == {"own": (2, True), "inherits": (9, True), "rated": (None, True)}
