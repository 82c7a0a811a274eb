"""An attempt's live output as ``tasks.output`` wrote it: read by the API, the CLI's
``usher executions tail`` and the dashboard (statements: app/sql/output.sql)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app import sql
from app.errors import UnknownExecution
from app.statuses import FINISHED


def read(session: Session, execution_id: int, attempt: int | None = None) -> dict[str, Any]:
    """``{"execution_id", "attempt", "stdout", "stderr", "finished"}`` for ``attempt``
    (the latest when None). ``finished``: that attempt's output will not grow any more (the
    execution is final, or a later attempt has begun)."""
    row = (
        session.execute(sql.query("output_attempt"), {"execution_id": execution_id})
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise UnknownExecution(f"no execution with id {execution_id}")
    wanted = row["attempt"] if attempt is None else attempt
    found = session.execute(
        sql.query("output_text"), {"execution_id": execution_id, "attempt": wanted}
    )
    texts = {stream: text for stream, text in found}
    return {
        "execution_id": execution_id,
        "attempt": wanted,
        "stdout": texts.get("stdout", ""),
        "stderr": texts.get("stderr", ""),
        "status": row["status"],
        "finished": row["status"] in FINISHED or wanted < row["attempt"],
    }
