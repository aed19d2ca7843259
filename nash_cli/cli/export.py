"""`nash export`: a nash checkpoint as a CTranslate2 model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nash_cli.cli import _common
from nash_cli.cli._options import (
    AllowPickleOption,
    EvalSplitOption,
    JsonOption,
    MaxSourceLengthOption,
    SourceColumnOption,
    SourceLangOption,
    SourcePrefixOption,
    SourceTemplateOption,
    SplitOption,
    TargetColumnOption,
    TargetLangOption,
    ThreadsOption,
    TrustRemoteCodeOption,
)
from nash_cli.errors import NashError
from nash_cli.stages.export import ExportOptions as Options

_MAP = "Vocabulary map"


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
    threads: ThreadsOption = Options.threads,
    force: Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")] = Options.force,
    vocab_map: Annotated[
        Optional[str],
        typer.Option(
            "--vocab-map",
            help="Training data (any --data format) for CTranslate2's vocabulary map: decoding is restricted to "
            "the special tokens, every token of its targets and each batch's input tokens (on by default in "
            "bench and eval).",
            rich_help_panel=_MAP,
        ),
    ] = Options.vocab_map,
    eval_data: Annotated[
        Optional[str],
        typer.Option(
            "--eval-data",
            help="Held-out data: report the share of its references the map covers (all tokens allowed).",
            rich_help_panel=_MAP,
        ),
    ] = Options.eval_data,
    split: SplitOption = Options.split,
    eval_split: EvalSplitOption = Options.eval_split,
    source_column: SourceColumnOption = Options.source_column,
    target_column: TargetColumnOption = Options.target_column,
    source_template: SourceTemplateOption = Options.source_template,
    source_prefix: SourcePrefixOption = Options.source_prefix,
    source_lang: SourceLangOption = Options.source_lang,
    target_lang: TargetLangOption = Options.target_lang,
    max_source_length: MaxSourceLengthOption = Options.max_source_length,
    allow_pickle: AllowPickleOption = Options.allow_pickle,
    trust_remote_code: TrustRemoteCodeOption = Options.trust_remote_code,
    json_output: JsonOption = False,
) -> None:
    """Write a CTranslate2 model (int8 / float16 / float32 ...) that nash bench and nash eval run beside transformers."""
    if vocab_map is None:
        # (the stage lets these through alone, for recipes, which pass their data options to every stage)
        columns = [flag for flag, value in (("--source-column", source_column), ("--target-column", target_column),
                                            ("--source-template", source_template), ("--source-prefix", source_prefix),
                                            ("--source-lang", source_lang), ("--target-lang", target_lang))
                   if value]
        if columns:
            raise NashError(f"{' / '.join(columns)} read the data of a vocabulary map; give --vocab-map train.jsonl too")
    options = Options(
        checkpoint=checkpoint,
        output=output,
        quantization=quantization,
        device=device,
        verify=verify,
        threads=threads,
        force=force,
        vocab_map=vocab_map,
        eval_data=eval_data,
        split=split,
        eval_split=eval_split,
        source_column=source_column,
        target_column=target_column,
        source_template=source_template,
        source_prefix=source_prefix,
        source_lang=source_lang,
        target_lang=target_lang,
        max_source_length=max_source_length,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    options.check()  # before torch is imported: a usage mistake answers at once

    from nash_cli.stages.export import run

    from nash_cli.progress import Progress

    # a bar on a terminal (the steps take seconds to minutes), plain lines in a log
    with Progress.for_stream("export", transient=True, disable=not _common.stderr.is_terminal) as progress:
        result = run(options, progress=progress)
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
    vocab_map = result.get("vocab_map")
    if vocab_map is not None:
        table.add_row(
            "vocabulary map: always allowed (special + training targets)",
            f"{vocab_map['always_allowed']:,} ({vocab_map['special']} + {vocab_map['from_targets']:,} seen)",
        )
        table.add_row("vocabulary map: source entries (allowed when in the batch's inputs)", f"{vocab_map['source_entries']:,}")
        covered = vocab_map["coverage"]
        if covered is not None and covered["share"] is not None:
            table.add_row(
                "vocabulary map: references covered (--eval-data)",
                f"{100 * covered['share']:.1f}% ({covered['covered']:,} of {covered['references']:,})",
            )
    console.print(table)
    if vocab_map is not None:
        console.print(
            "vocabulary map on by default: nash bench and nash eval decode with it (--no-vocab-map: without); "
            "a reference is covered when all its tokens are special, in the training targets or in its own input",
            style="dim",
            markup=False,
        )
    if check is not None and not check["exact_expected"]:
        console.print(
            "the check feeds random token ids, where a quantized model flips near-ties easily; "
            "measure its quality on real data with nash eval",
            style="dim",
            markup=False,
        )
    console.print(f"{result['padding_summary']}; {result['seconds']:.1f}s", style="dim", markup=False)
    _common.print_notes(result.get("notes", []), console)
