"""``usher executions rerun``: an execution again, its parameters edited (``policies.rerun``).
Imported once, at the end of ``app.cli.executions``, onto its group."""

from __future__ import annotations

import click

from app.cli.common import Runtime, emit_json, pass_runtime
from app.cli.executions import executions_group, parse_parameters


@executions_group.command("rerun")
@click.argument("execution_id", type=int)
@click.argument("parameters", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def executions_rerun(
    rt: Runtime, execution_id: int, parameters: tuple[str, ...], as_json: bool
) -> None:
    """Run EXECUTION_ID's action again with its parameters, key=value overrides merged in
    (values may be JSON); prints the new execution's id."""
    answer = rt.api.call(
        "rerun", {"parameters": parse_parameters(parameters)}, execution_id=execution_id
    )
    if as_json:
        emit_json(answer)
    else:
        click.echo(answer["id"])
