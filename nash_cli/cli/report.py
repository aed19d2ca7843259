"""`nash report`: Table 1 and the paper's plots for a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `nash run` or `nash demo`.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing report.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print Table 1 and the written paths as JSON.")] = False,
) -> None:
    """Write report.md with Table 1, quality-vs-speedup (Figure 5) and encoder-structure (Figure 6) plots."""
    from nash_cli.cli import _common
    from nash_cli.report import collect, rich_table1, write_report

    result = write_report(run_dir, force=force)
    if json_output:
        _common.print_json(result)
        return
    console = _common.stdout
    console.print(rich_table1(collect(run_dir)))
    for name, path in result["written"].items():
        console.print(f"wrote {path}")
