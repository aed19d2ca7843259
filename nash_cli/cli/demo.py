"""`nash demo`: the whole NASH pipeline offline, on a task generated from code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Run directory.")] = Path("nash-demo"),
    overrides: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a value of the demo recipe, e.g. --set select_layers.decoder_layers=3."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print Table 1 as JSON on stdout.")] = False,
) -> None:
    """Run the whole NASH pipeline offline on a generated summarisation task and print Table 1.

    A T5 teacher is trained from scratch, then select-layers, prune-encoder, compact, distill,
    an int8 CTranslate2 export, bench and eval run in turn (about
    3 minutes on 2 CPU cores); a rerun continues where it stopped.
    """
    from nash_cli.cli import _common
    from nash_cli.demo.run import demo_recipe_path, expected_duration
    from nash_cli.pipeline import prepare_run, run_recipe
    from nash_cli.report import collect, rich_table1, write_report

    from nash_cli.export import EXTRA, available

    console = _common.human(json_output)
    console.print(expected_duration(), markup=False, highlight=False, soft_wrap=True)
    overrides = list(overrides or [])
    if not available():  # installed with nash, yet a platform without its wheels may lack it
        overrides.append("stages.export=false")
        _common.print_notes([f'CTranslate2 is not installed: the demo skips its export stage (pip install "{EXTRA}")'], _common.stderr)
    prepared = prepare_run(demo_recipe_path(), output, overrides)
    from nash_cli.cli.run import print_stage_result

    run_recipe(
        prepared,
        log=lambda line: console.print(line, markup=False, highlight=False),
        on_result=lambda stage, outcome: print_stage_result(stage, outcome, _common.stderr),
    )
    result = write_report(prepared.run_dir, force=True)  # the demo's own run directory
    summary = collect(prepared.run_dir)
    if json_output:
        _common.print_json({"run_dir": str(prepared.run_dir), **result})
        return
    console.print(rich_table1(summary))
    console.print(f"report: {result['written']['report']}")
