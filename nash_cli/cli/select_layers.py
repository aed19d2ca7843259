"""`nash select-layers`: the shallow decoder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nash_cli.cli import _common
from nash_cli.cli._options import AllowPickleOption, JsonOption, TrustRemoteCodeOption
from nash_cli.stages.select_layers import SelectLayersOptions as Options


def command(
    checkpoint: Annotated[str, typer.Argument(help="Teacher checkpoint: a local directory, or a hub id where online.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the student to.")],
    decoder_layers: Annotated[
        Optional[int], typer.Option("--decoder-layers", "-k", help="How many decoder layers to keep.")
    ] = Options.decoder_layers,
    strategy: Annotated[
        str, typer.Option(help="Which layers to keep: uniform (NASH), low (first k) or high (last k).")
    ] = Options.strategy,
    layers: Annotated[
        Optional[str], typer.Option("--layers", help="Explicit teacher decoder layers to keep, e.g. 0,5,11.")
    ] = None,
    encoder_layers: Annotated[
        Optional[int],
        typer.Option("--encoder-layers", help="Also keep only this many encoder layers (same strategy; ablation)."),
    ] = Options.encoder_layers,
    force: Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")] = Options.force,
    allow_pickle: AllowPickleOption = Options.allow_pickle,
    trust_remote_code: TrustRemoteCodeOption = Options.trust_remote_code,
    json_output: JsonOption = False,
) -> None:
    """Keep k of the teacher's decoder layers (uniformly spread, by default) and write the student."""
    options = Options(
        checkpoint=checkpoint,
        output=output,
        decoder_layers=decoder_layers,
        strategy=strategy,
        layers=_common.layer_list(layers, "--layers"),
        encoder_layers=encoder_layers,
        force=force,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    options.check()  # before torch is imported: a usage mistake answers at once

    from nash_cli.progress import Progress
    from nash_cli.stages.select_layers import run

    # seconds of work: a bar on a terminal, nothing in a log
    with Progress.for_stream("select-layers", transient=True, disable=not _common.stderr.is_terminal) as progress:
        result = run(options, progress=progress)
    _common.emit(result.to_dict(), json_output, print_result)


def print_result(result: dict, console) -> None:
    """The kept layers (student to teacher) and the parameters before and after."""
    from rich.table import Table

    table = Table(title=f"select-layers -> {result['output']}", show_header=True)
    table.add_column("stack")
    table.add_column("student layer", justify="right")
    table.add_column("teacher layer", justify="right")
    for stack in ("decoder", "encoder"):
        for student, teacher in enumerate(result["kept"].get(stack) or []):
            table.add_row(stack, str(student), str(teacher))
    console.print(table)
    params = Table(show_header=True, title="parameters (encoder, decoder: without embeddings)")
    params.add_column("")
    params.add_column("before", justify="right")
    params.add_column("after", justify="right")
    params.add_column("ratio", justify="right")
    before, after = result["parameters"]["before"], result["parameters"]["after"]
    for key, label in (("total", "total"), ("decoder", "decoder"), ("encoder", "encoder")):
        ratio = after[key] / before[key] if before[key] else 1.0
        params.add_row(label, f"{before[key]:,}", f"{after[key]:,}", f"{ratio:.2f}")
    console.print(params)
    _common.print_notes(result.get("notes", []), console)

