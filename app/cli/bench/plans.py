"""What ``usher bench-web`` learns of the app's SQL during a request: every statement it sends
(``recording``), how long each took in the app (``timing``), and each read statement's
``EXPLAIN (ANALYZE, BUFFERS)`` with the rows it read (``explain``)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

from app.cli.bench import statements

SEQ_SCANS = re.compile(r"Seq Scan on (executions|attempts)\b")
END = "-- end of transaction"  # where a recorded transaction ends
# Put before a statement the app sent, as it sent it: the one SQL composed here, since what is
# explained is the app's own text, which no fixed statement or bind parameter can stand for.
EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS) "
EXPLAIN_JSON = "EXPLAIN (ANALYZE, FORMAT JSON) "


def normal(statement: str) -> str:
    """A statement on one line, whitespace collapsed: the key it is counted and timed by."""
    return " ".join(statement.split())


def _verb(statement: str) -> str:
    """The statement's text from its first keyword on, upper-cased: past the comment lines a
    named statement of a ``.sql`` file opens with."""
    lines = statement.strip().splitlines()
    while lines and lines[0].lstrip().startswith("--"):
        lines.pop(0)
    return normal("\n".join(lines)).upper()


@contextmanager
def recording(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every (statement, parameters) the engine sends while the block runs, and END (None)
    where a transaction ends."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        seen.append((statement, parameters))

    def end(conn: Any) -> None:
        seen.append((END, None))

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "commit", end)
    event.listen(engine, "rollback", end)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "commit", end)
        event.remove(engine, "rollback", end)


def rows_read(node: dict[str, Any], found: dict[str, int]) -> dict[str, int]:
    """Rows each scan of an execution's two tables or of attempts in a JSON plan read (kept
    or filtered out)."""
    table = node.get("Relation Name")
    if table in ("execution_requests", "execution_state", "attempts"):
        per_loop = sum(
            node.get(k, 0)
            for k in ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck")
        )
        found[table] = found.get(table, 0) + round(per_loop * node.get("Actual Loops", 1))
    for child in node.get("Plans", []):
        rows_read(child, found)
    return found


@contextmanager
def timing(engine: Engine) -> Iterator[dict[str, list[float]]]:
    """Each statement's run times (ms, by its text) while the block runs: what the app really
    waits for, prepared statements and cached plans included."""
    found: dict[str, list[float]] = {}

    def before(conn: Any, *args: Any) -> None:
        conn.info["bench_web_start"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        took = (time.perf_counter() - conn.info.pop("bench_web_start")) * 1000
        found.setdefault(normal(statement), []).append(took)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield found
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def explain(
    engine: Engine, seen: list[tuple[str, Any]], planner: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each distinct read statement, in a rolled-back
    transaction; ``planner`` settings (e.g. enable_seqscan=off) apply to it alone."""
    plans: list[dict[str, Any]] = []
    done: set[str] = set()
    local: list[str] = []  # the SET LOCALs of the app's transaction so far: they apply too
    for statement, parameters in seen:
        sql = normal(statement)
        if statement == END:
            local.clear()
        elif _verb(statement).startswith("SET LOCAL"):
            local.append(statement)
        if sql in done or not _verb(statement).startswith(("SELECT", "WITH")):
            continue
        done.add(sql)
        with engine.connect() as conn:
            for name, value in (planner or {}).items():
                conn.execute(statements.query("planner_setting"), {"name": name, "value": value})
            for setting in local:
                conn.exec_driver_sql(setting)
            rows = conn.exec_driver_sql(EXPLAIN + statement, parameters).all()
            shape = conn.exec_driver_sql(EXPLAIN_JSON + statement, parameters).scalar_one()
            conn.rollback()
        plan = "\n".join(r[0] for r in rows)
        took = re.search(r"Execution Time: ([\d.]+) ms", plan)
        plans.append(
            {
                "sql": statement.strip(),
                "parameters": parameters,
                "calls": sum(1 for s, _ in seen if s != END and normal(s) == sql),
                "execution_ms": float(took[1]) if took else None,
                "plan": plan,
                "seq_scans": sorted(set(SEQ_SCANS.findall(plan))),
                "rows_read": rows_read(shape[0]["Plan"], {}),
                "jit": "JIT:" in plan,
            }
        )
    return plans
