"""`nash select-layers`: the shallow decoder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nash_cli.errors import NashError


def command(
    checkpoint: Annotated[str, typer.Argument(help="Teacher checkpoint: a local directory, or a hub id where online.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the student to.")],
    decoder_layers: Annotated[
        Optional[int], typer.Option("--decoder-layers", "-k", help="How many decoder layers to keep.")
    ] = None,
    strategy: Annotated[
        str, typer.Option(help="Which layers to keep: uniform (NASH), low (first k) or high (last k).")
    ] = "uniform",
    layers: Annotated[
        Optional[str], typer.Option("--layers", help="Explicit teacher decoder layers to keep, e.g. 0,5,11.")
    ] = None,
    encoder_layers: Annotated[
        Optional[int],
        typer.Option("--encoder-layers", help="Also keep only this many encoder layers (same strategy; ablation)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Accept pytorch_model.bin weights (loaded with weights_only=True).")
    ] = False,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Run the checkpoint's own modeling code (only if you trust it).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Keep k of the teacher's decoder layers (uniformly spread, by default) and write the student."""
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}
    if layers is not None and decoder_layers is not None:
        raise NashError("--layers and --decoder-layers both given; use one: a count with --strategy, or explicit indices")
    if layers is None and decoder_layers is None:
        raise NashError("say which decoder layers to keep: --decoder-layers K (e.g. 3) or --layers 0,5,11")
    if strategy not in ("uniform", "low", "high"):
        raise NashError(f"unknown --strategy {strategy!r}; use uniform, low or high")

    from nash_cli import artifact
    from nash_cli.select_layers import plan_selection, run_selection

    artifact.check_output(output, force)
    config = artifact.load_config(checkpoint, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    plan = plan_selection(
        config, decoder_layers=decoder_layers, layers=layers, strategy=strategy, encoder_layers=encoder_layers
    )
    result = run_selection(
        checkpoint,
        output,
        plan,
        config=config,
        arguments=arguments,
        force=force,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )

    from nash_cli.cli import _common

    if json_output:
        _common.print_json(result)
    else:
        _print_table(result, _common.stdout)


def _print_table(result: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"select-layers -> {result['output']}", show_header=True)
    table.add_column("stack")
    table.add_column("student layer", justify="right")
    table.add_column("teacher layer", justify="right")
    for stack in ("decoder", "encoder"):
        for student, teacher in enumerate(result["kept"].get(stack) or []):
            table.add_row(stack, str(student), str(teacher))
    console.print(table)
    params = Table(show_header=True, title="parameters")
    params.add_column("")
    params.add_column("before", justify="right")
    params.add_column("after", justify="right")
    params.add_column("ratio", justify="right")
    before, after = result["parameters"]["before"], result["parameters"]["after"]
    for key, label in (("total", "total"), ("decoder_layers", "decoder layers"), ("encoder_layers", "encoder layers")):
        ratio = after[key] / before[key] if before[key] else 1.0
        params.add_row(label, f"{before[key]:,}", f"{after[key]:,}", f"{ratio:.2f}")
    console.print(params)
    for note in result.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
