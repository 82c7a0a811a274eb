"""An execution's live output on its page: ``/ui/executions/<id>/output.json``, which
``static/output.js`` reads every second until the attempt's output is finished."""

from __future__ import annotations

from typing import Any

from flask import jsonify

from app import output
from web import unit_of_work
from web.dashboard import base


@base.bp.get("/ui/executions/<int:execution_id>/output.json")
def output_json(execution_id: int) -> Any:
    with unit_of_work() as db_session:
        return jsonify(output.read(db_session, execution_id))
