"""``usher executions rerun``: an execution again, its parameters edited (``policies.rerun``).
Imported once, at the end of ``app.cli.executions``, onto its group."""

from __future__ import annotations

from typing import Any

import click

from app import celery as usher_celery
from app import db
from app.cli.common import Runtime, actor, audited, emit_json, pass_runtime
from app.cli.executions import executions_group, parse_parameters


@executions_group.command("rerun")
@click.argument("execution_id", type=int)
@click.argument("parameters", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
@audited("executions rerun", "execution_id")
def executions_rerun(
    rt: Runtime, execution_id: int, parameters: tuple[str, ...], as_json: bool
) -> None:
    """Run EXECUTION_ID's action again with its parameters, key=value overrides merged in
    (values may be JSON); prints the new execution's id."""
    from policies import rerun

    with db.unit_of_work(rt.engine) as session:
        enqueued = rerun.rerun(
            session, rt.settings, execution_id, parse_parameters(parameters), actor()
        )
    usher_celery.after_intake(rt.celery, enqueued)
    if as_json:
        shown: dict[str, Any] = {
            "id": enqueued.execution_id,
            "seq": enqueued.seq,
            "rerun_of": execution_id,
        }
        emit_json(shown)
    else:
        click.echo(enqueued.execution_id)
