"""`nash prune-vocab`: keep only the tokens the task uses (embeddings, lm_head, tokenizer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nash_cli.cli import _common
from nash_cli.cli._options import (
    AllowPickleOption,
    DataOption,
    JsonOption,
    SourceColumnOption,
    SourceLangOption,
    SourcePrefixOption,
    SourceTemplateOption,
    SplitOption,
    TargetColumnOption,
    TargetLangOption,
    TrustRemoteCodeOption,
)
from nash_cli.stages.prune_vocab import PruneVocabOptions as Options


def command(
    checkpoint: Annotated[str, typer.Argument(help="A dense or compact checkpoint (a fine-tuned student).")],
    data: DataOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the reduced-vocabulary model to.")],
    keep_source_tokens: Annotated[
        Optional[bool],
        typer.Option(
            "--keep-source-tokens/--no-keep-source-tokens",
            help="Also keep the tokens of the inputs (tasks that copy from them). Default: on for translation models "
            "(language codes, or Marian), off otherwise.",
            show_default=False,
        ),
    ] = Options.keep_source_tokens,
    keep_language: Annotated[
        Optional[list[str]],
        typer.Option(
            "--keep-language",
            help="A language code to keep besides the target's and the source's (repeatable); all keeps every one.",
        ),
    ] = None,
    min_count: Annotated[
        int, typer.Option("--min-count", help="Keep a data token only if it occurs at least N times.")
    ] = Options.min_count,
    multiple_of: Annotated[
        int,
        typer.Option(
            "--multiple-of",
            help="Round the kept count up to a multiple of N with more real tokens (faster kernels); 1 keeps exactly the chosen ones.",
        ),
    ] = Options.multiple_of,
    eval_data: Annotated[
        Optional[str],
        typer.Option("--eval-data", help="Held-out data: report the share of its references whose tokens are all kept."),
    ] = Options.eval_data,
    eval_split: Annotated[Optional[str], typer.Option("--eval-split", help="Split of --eval-data.")] = Options.eval_split,
    split: SplitOption = Options.split,
    source_column: SourceColumnOption = Options.source_column,
    target_column: TargetColumnOption = Options.target_column,
    source_template: SourceTemplateOption = Options.source_template,
    source_prefix: SourcePrefixOption = Options.source_prefix,
    source_lang: SourceLangOption = Options.source_lang,
    target_lang: TargetLangOption = Options.target_lang,
    allow_pickle: AllowPickleOption = Options.allow_pickle,
    trust_remote_code: TrustRemoteCodeOption = Options.trust_remote_code,
    force: Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")] = Options.force,
    json_output: JsonOption = False,
) -> None:
    """Keep only the tokens the task uses (its targets, every character, the specials) in the embeddings, lm_head and tokenizer."""
    options = Options(
        checkpoint=checkpoint,
        data=data,
        output=output,
        keep_source_tokens=keep_source_tokens,
        keep_language=list(keep_language or []),
        min_count=min_count,
        multiple_of=multiple_of,
        eval_data=eval_data,
        eval_split=eval_split,
        split=split,
        source_column=source_column,
        target_column=target_column,
        source_template=source_template,
        source_prefix=source_prefix,
        source_lang=source_lang,
        target_lang=target_lang,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        force=force,
    )
    options.check()  # before torch is imported: a usage mistake answers at once

    from nash_cli.progress import Progress
    from nash_cli.stages.prune_vocab import run

    with Progress.for_stream("prune-vocab", transient=True, disable=not _common.stderr.is_terminal) as progress:
        result = run(options, progress=progress)
    _common.emit(result.to_dict(), json_output, print_result)


def print_result(result: dict, console) -> None:
    """Kept vocabulary, parameters and file size before and after, and the coverage."""
    from rich.table import Table

    vocabulary = result["vocabulary"]
    table = Table(title=f"prune-vocab -> {result['output']}", show_header=True)
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row("vocabulary", f"{vocabulary['before']:,}", f"{vocabulary['kept']:,}", f"{vocabulary['share']:.3f}")
    before, after = result["parameters"]["before"], result["parameters"]["after"]
    for key, label in (("total", "parameters"), ("embeddings", "embeddings and lm_head")):
        ratio = after[key] / before[key] if before[key] else 1.0
        table.add_row(label, f"{before[key]:,}", f"{after[key]:,}", f"{ratio:.3f}")
    size = result["file_size"]
    table.add_row("weights (bytes)", f"{size['before']:,}", f"{size['after']:,}", f"{size['after'] / size['before']:.3f}")
    console.print(table)
    console.print(
        f"kept: {vocabulary['required']:,} always (specials, characters, bytes), {vocabulary['from_data']:,} from the data, "
        f"{vocabulary['closure']:,} to build them (BPE merges)"
        + (
            f", {vocabulary['filled']:,} more to make a multiple of {vocabulary['multiple_of']}"
            if vocabulary["multiple_of"] > 1
            else ""
        )
    )
    languages = vocabulary.get("languages")
    if languages:
        kept = ", ".join(f"{code} ({why})" for code, why in list(languages["kept"].items())[:6])
        more = len(languages["kept"]) - 6
        console.print(
            f"language codes: {len(languages['kept'])} kept ({kept}{f', {more} more' if more > 0 else ''}), "
            f"{languages['dropped']} dropped"
        )
    training = result["training"]
    console.print(
        f"training targets: {training['covered']:,} of {training['references']:,} fully kept; "
        f"{training['exact']:,} of those tokenise exactly as before"
    )
    coverage = result["coverage"]
    if coverage is not None:
        console.print(
            f"--eval-data coverage: {coverage['covered']:,} of {coverage['references']:,} references "
            f"({coverage['share']:.1%}) use only kept tokens; inputs: {coverage['inputs_covered']:,} of "
            f"{coverage['inputs']:,} ({coverage['inputs_share']:.1%})"
        )
    _common.print_notes(result["notes"], console)
