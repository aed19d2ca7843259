"""`nash run`: a whole pipeline from a recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def command(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see recipes/ and docs/recipes.md).")],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Run directory (default: runs/<recipe name>).")
    ] = None,
    overrides: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a recipe value, e.g. --set prune_encoder.target_sparsity=0.4 (repeatable)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and run nothing.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the plan or the result as JSON on stdout.")] = False,
) -> None:
    """Run a recipe's stages in order; a rerun skips stages that are up to date and resumes interrupted ones."""
    from nash_cli.cli import _common
    from nash_cli.pipeline import describe_plan, prepare_run, run_recipe

    prepared = prepare_run(recipe, output, overrides or [], materialize=not dry_run)
    console = _common.human(json_output)
    if dry_run:
        plan = describe_plan(prepared)
        if json_output:
            _common.print_json(plan)
        else:
            _print_plan(plan, console)
        return
    result = run_recipe(
        prepared,
        log=lambda line: console.print(line, markup=False, highlight=False),
        on_result=lambda stage, outcome: print_stage_result(stage, outcome, _common.stderr),
    )
    if json_output:
        _common.print_json(result)
    else:
        console.print(f"run complete: {result['run_dir']}")


def _print_plan(plan: dict, console) -> None:
    from rich.table import Table

    if plan.get("description"):
        console.print(plan["description"])
    table = Table(title=f"plan for {plan['name']} -> {plan['run_dir']}")
    table.add_column("#")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("command")
    for index, stage in enumerate(plan["stages"], start=1):
        table.add_row(str(index), stage["stage"], stage["status"], "\n".join(stage["commands"]))
    console.print(table)


def print_stage_result(stage: str, result, console) -> None:
    """A finished stage's tables, as its own command prints them (on stderr: progress of the run).

    Each stage's command module (`nash_cli.cli.<its stage module>`) prints its result with
    `print_result`; a recipe's `finetune_teacher` is `distill`'s.
    """
    import importlib

    from nash_cli.stages import stage as declared_stage

    module = declared_stage(stage).run.__module__.rsplit(".", 1)[-1]
    importlib.import_module(f"nash_cli.cli.{module}").print_result(result.to_dict(), console)
