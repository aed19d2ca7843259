"""`nash compact`: remove masked heads and FFN units physically."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nash_cli.cli import _common
from nash_cli.cli._options import JsonOption, TrustRemoteCodeOption
from nash_cli.stages.compact import CompactOptions as Options


def command(
    checkpoint: Annotated[str, typer.Argument(help="A masked checkpoint written by nash prune-encoder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the compact model to.")],
    force: Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")] = Options.force,
    trust_remote_code: TrustRemoteCodeOption = Options.trust_remote_code,
    json_output: JsonOption = False,
) -> None:
    """Remove the pruned encoder heads and FFN units and write a smaller, reloadable model."""
    options = Options(checkpoint=checkpoint, output=output, force=force, trust_remote_code=trust_remote_code)
    options.check()  # before torch is imported: a usage mistake answers at once

    from nash_cli.progress import Progress
    from nash_cli.stages.compact import run

    # seconds of work: a bar on a terminal, nothing in a log
    with Progress.for_stream("compact", transient=True, disable=not _common.stderr.is_terminal) as progress:
        result = run(options, progress=progress)
    _common.emit(result.to_dict(), json_output, print_result)


def print_result(result: dict, console) -> None:
    """Parameters before and after, kept heads and units per layer, and the output's size."""
    from rich.table import Table

    params = Table(title=f"compact -> {result['output']}", show_header=True)
    params.add_column("parameters")
    params.add_column("before", justify="right")
    params.add_column("after", justify="right")
    params.add_column("ratio", justify="right")
    before, after = result["parameters"]["before"], result["parameters"]["after"]
    for key, label in (("total", "total"), ("non_embedding", "without embeddings"), ("encoder", "encoder (without embeddings)")):
        ratio = after[key] / before[key] if before[key] else 1.0
        params.add_row(label, f"{before[key]:,}", f"{after[key]:,}", f"{ratio:.3f}")
    console.print(params)
    layers = Table(title="encoder layers", show_header=True)
    layers.add_column("layer", justify="right")
    layers.add_column("heads kept", justify="right")
    layers.add_column("FFN units kept", justify="right")
    for index, (heads, units) in enumerate(zip(result["heads"], result["units"])):
        layers.add_row(str(index), f"{heads}/{result['full_heads']}", f"{units}/{result['full_units']}")
    console.print(layers)
    code = "nash modeling file (per-layer widths; trust_remote_code=True outside nash)" if result["custom_code"] else "stock"
    console.print(f"weights: {result['file_size'] / 2**20:.1f} MiB; model class: {code}; {result['seconds']:.1f}s")
    if result.get("engine"):
        console.print(result["engine"], style="dim", markup=False)
