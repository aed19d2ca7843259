"""`nash export`: a nash checkpoint as a CTranslate2 model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nash_cli.cli import _common
from nash_cli.cli._options import AllowPickleOption, JsonOption, TrustRemoteCodeOption
from nash_cli.stages.export import ExportOptions as Options


def command(
    checkpoint: Annotated[str, typer.Argument(help="A dense or compact nash checkpoint (teacher, select-layers, compact, distill).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the CTranslate2 model to.")],
    quantization: Annotated[
        str,
        typer.Option(
            "--quantization",
            "-q",
            help="Weight type: int8, int8_float32, int8_float16, float16, bfloat16 or float32 (exact).",
        ),
    ] = Options.quantization,
    device: Annotated[
        str,
        typer.Option("--device", help="Where the export is loaded back and checked: auto (cuda if present), cpu or cuda."),
    ] = Options.device,
    verify: Annotated[
        bool,
        typer.Option("--verify/--no-verify", help="Load the export back and compare its greedy output with transformers'."),
    ] = Options.verify,
    force: Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")] = Options.force,
    allow_pickle: AllowPickleOption = Options.allow_pickle,
    trust_remote_code: TrustRemoteCodeOption = Options.trust_remote_code,
    json_output: JsonOption = False,
) -> None:
    """Write a CTranslate2 model (int8 / float16 / float32 ...) that nash bench and nash eval run beside transformers."""
    options = _common.checked_options(Options, locals())

    from nash_cli.stages.export import run

    console = _common.human(json_output)
    with console.status("exporting") as status:
        result = run(options, progress=lambda step: status.update(step))
    _common.emit(result.to_dict(), json_output, print_result)


def print_result(result: dict, console) -> None:
    """What was written, its size, the padding and the load-back check."""
    from rich.table import Table

    table = Table(title=f"export -> {result['output']}", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    params = result["parameters"]
    table.add_row("model", f"{result['family']} ({result['state']})")
    table.add_row("engine", f"CTranslate2, {result['quantization']} weights")
    table.add_row("parameters: total (encoder / decoder, no embeddings)", f"{params['total']:,} ({params['encoder']:,} / {params['decoder']:,})")
    table.add_row("model.bin", f"{result['file_size'] / 2**20:.1f} MiB")
    padding = result["padding"]
    table.add_row(
        "encoder heads per layer (engine)",
        f"{'/'.join(str(h) for h in padding['heads_per_layer'])} kept -> {padding['engine_heads']}",
    )
    check = result["check"]
    if check is not None:
        agreement = "equal" if check["tokens_equal"] else f"{100 * check['token_agreement']:.1f}% of tokens agree"
        table.add_row(
            f"greedy check vs transformers ({check['device']}, {check['compute_type']})", agreement
        )
    console.print(table)
    if check is not None and not check["exact_expected"]:
        console.print(
            "[dim]the check feeds random token ids, where a quantized model flips near-ties easily; "
            "measure its quality on real data with nash eval[/]"
        )
    console.print(f"[dim]{result['padding_summary']}; {result['seconds']:.1f}s[/]")
    _common.print_notes(result.get("notes", []), console)
