"""`nash eval`: generate on a data set and score the outputs (ROUGE, METEOR, BLEU, chrF, EM, accuracy)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from nash_cli.cli import _common
from nash_cli.cli._options import (
    AllowPickleOption,
    DataOption,
    JsonOption,
    LimitOption,
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
    VocabMapOption,
)
from nash_cli.stages.eval import EvalOptions as Options

_GEN = "Generation"


def command(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint to evaluate: a local directory, or a hub id where online.")],
    data: DataOption,
    metric: Annotated[
        Optional[list[str]],
        typer.Option(
            "--metric",
            "-m",
            help="rouge, meteor, bleu, chrf, exact_match or accuracy; repeat for several (default: rouge). "
            "bleu and chrf are sacrebleu's corpus scores.",
        ),
    ] = None,
    split: SplitOption = Options.split,
    source_column: SourceColumnOption = Options.source_column,
    target_column: TargetColumnOption = Options.target_column,
    source_template: SourceTemplateOption = Options.source_template,
    source_prefix: SourcePrefixOption = Options.source_prefix,
    source_lang: SourceLangOption = Options.source_lang,
    target_lang: TargetLangOption = Options.target_lang,
    max_source_length: MaxSourceLengthOption = Options.max_source_length,
    limit: LimitOption = Options.limit,
    batch: Annotated[int, typer.Option("--batch", help="Examples per generate() call.", rich_help_panel=_GEN)] = Options.batch,
    beams: Annotated[
        Optional[int],
        typer.Option("--beams", help="Beam width (default: the checkpoint's generation config).", rich_help_panel=_GEN),
    ] = Options.beams,
    max_new_tokens: Annotated[
        Optional[int],
        typer.Option(
            "--max-new-tokens",
            help="Longest output in tokens (default: the checkpoint's generation config).",
            rich_help_panel=_GEN,
        ),
    ] = Options.max_new_tokens,
    device: Annotated[str, typer.Option("--device", help="auto (cuda if present), cpu or cuda.")] = Options.device,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")] = Options.dtype,
    threads: ThreadsOption = Options.threads,
    output: Annotated[
        Optional[str],  # a str keeps a trailing "/" (a directory), which Path drops
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="Write the scores here (e.g. metrics.json) and the outputs beside it "
            "(generations.jsonl, or <name>.generations.jsonl); DIR/ writes both inside DIR.",
        ),
    ] = Options.output,
    generations: Annotated[
        Optional[str], typer.Option("--generations", metavar="PATH", help="Where to write the outputs instead (JSON Lines).")
    ] = Options.generations,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")] = Options.force,
    vocab_map: VocabMapOption = Options.vocab_map,
    allow_pickle: AllowPickleOption = Options.allow_pickle,
    trust_remote_code: TrustRemoteCodeOption = Options.trust_remote_code,
    json_output: JsonOption = False,
) -> None:
    """Generate for every example (batched, sorted by length) and score against the references."""
    options = Options(
        checkpoint=checkpoint,
        data=data,
        # not given: the options' default list (a default_factory, so not readable as Options.metric)
        **({"metric": list(metric)} if metric else {}),
        split=split,
        source_column=source_column,
        target_column=target_column,
        source_template=source_template,
        source_prefix=source_prefix,
        source_lang=source_lang,
        target_lang=target_lang,
        max_source_length=max_source_length,
        limit=limit,
        batch=batch,
        beams=beams,
        max_new_tokens=max_new_tokens,
        device=device,
        dtype=dtype,
        threads=threads,
        output=output,
        generations=generations,
        force=force,
        vocab_map=vocab_map,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    options.check()  # before torch is imported: a usage mistake answers at once

    from nash_cli.progress import Progress
    from nash_cli.stages.eval import run

    with Progress.for_stream("generating", unit="example", every=options.batch) as progress:
        document = run(options, progress=progress).to_dict()
    _common.emit(document, json_output, print_result)
    if document.get("files"):
        _common.human(json_output).print(f"wrote {document['files']['metrics']} and {document['files']['generations']}")


def print_result(result: dict, console) -> None:
    """The scores, the generation speed and whether the export's vocabulary map was used; notes."""
    from rich.table import Table

    gen = result["generation"]
    table = Table(
        title=(
            f"{result['model']} on {result['num_examples']} examples "
            f"(beams {gen['num_beams']}, up to {gen['max_new_tokens']} new tokens)"
        )
    )
    table.add_column("metric")
    table.add_column("score (x100)", justify="right")
    for name, value in result["scores"].items():
        table.add_row(name, f"{100 * value:.2f}")
    console.print(table)
    for name, signature in (result.get("signatures") or {}).items():
        console.print(f"{name} signature (sacrebleu): {signature}", style="dim", markup=False)
    languages = result.get("languages")
    if languages:
        set_codes = " -> ".join(str(code) for code in (languages["source"], languages["target"]) if code)
        console.print(f"languages: {set_codes}", style="dim", markup=False)
    console.print(
        f"{result['seconds']['generation']:.1f}s generating "
        f"({result['examples_per_s']:.2f} examples/s); several references: best per example",
        style="dim",
        markup=False,
    )
    vocab_map = (result.get("engine") or {}).get("vocab_map")
    if vocab_map is not None:  # a CTranslate2 export with a vocabulary map
        state = "used" if vocab_map else "not used (--no-vocab-map)"
        console.print(f"the export's vocabulary map: {state}", style="dim", markup=False)
    _common.print_notes(result.get("notes", []), console)

