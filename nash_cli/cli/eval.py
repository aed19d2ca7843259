"""`nash eval`: generate on a data set and score the outputs (ROUGE, METEOR, BLEU, EM, accuracy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nash_cli.cli._data_options import (
    DEFAULT_MAX_SOURCE_LENGTH,
    DataOption,
    LimitOption,
    MaxSourceLengthOption,
    SourceColumnOption,
    SourcePrefixOption,
    SourceTemplateOption,
    SplitOption,
    TargetColumnOption,
)
from nash_cli.errors import NashError

_GEN = "Generation"


def command(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint to evaluate: a local directory, or a hub id where online.")],
    data: DataOption,
    metric: Annotated[
        Optional[list[str]],
        typer.Option(
            "--metric",
            "-m",
            help="rouge, meteor, bleu, exact_match or accuracy; repeat for several (default: rouge).",
        ),
    ] = None,
    split: SplitOption = None,
    source_column: SourceColumnOption = None,
    target_column: TargetColumnOption = None,
    source_template: SourceTemplateOption = None,
    source_prefix: SourcePrefixOption = "",
    max_source_length: MaxSourceLengthOption = DEFAULT_MAX_SOURCE_LENGTH,
    limit: LimitOption = None,
    batch: Annotated[int, typer.Option("--batch", help="Examples per generate() call.", rich_help_panel=_GEN)] = 16,
    beams: Annotated[
        Optional[int],
        typer.Option("--beams", help="Beam width (default: the checkpoint's generation config).", rich_help_panel=_GEN),
    ] = None,
    max_new_tokens: Annotated[
        Optional[int],
        typer.Option(
            "--max-new-tokens",
            help="Longest output in tokens (default: the checkpoint's generation config).",
            rich_help_panel=_GEN,
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto (cuda if present), cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")] = "float32",
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            help="Write the scores here (e.g. metrics.json) and the outputs beside it "
            "(generations.jsonl, or <name>.generations.jsonl).",
        ),
    ] = None,
    generations: Annotated[
        Optional[Path], typer.Option("--generations", help="Where to write the outputs instead (JSON Lines).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Accept pytorch_model.bin weights (loaded with weights_only=True).")
    ] = False,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Run the checkpoint's own modeling code (only if you trust it).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the scores as JSON on stdout.")] = False,
) -> None:
    """Generate for every example (batched, sorted by length) and score against the references."""
    from nash_cli.cli.bench import DEVICES, DTYPES, _device
    from nash_cli.metrics import check_metrics

    names = check_metrics(metric or ["rouge"])
    if device not in DEVICES:
        raise NashError(f"unknown --device {device!r}; use {', '.join(DEVICES)}")
    for name, value in (("--batch", batch), ("--beams", beams), ("--max-new-tokens", max_new_tokens)):
        if value is not None and value < 1:
            raise NashError(f"{name} must be at least 1, got {value}")
    if dtype not in DTYPES:
        raise NashError(f"unknown --dtype {dtype!r}; use {', '.join(DTYPES)}")
    if generations is not None and output is None:
        raise NashError("--generations goes with --output; give -o metrics.json too")
    paths = []
    if output is not None:
        from nash_cli.evaluate import generations_path_for
        from nash_cli.reports import refuse_existing

        generations = generations or generations_path_for(output)
        if generations.resolve() == output.resolve():
            raise NashError("--generations and --output name the same file; choose two paths")
        paths = [output, generations]
        refuse_existing(paths, force)

    from nash_cli.data import load_examples

    examples = load_examples(
        data,
        split=split,
        source_column=source_column,
        target_column=target_column,
        source_template=source_template,
        source_prefix=source_prefix,
        limit=limit,
        require_references=True,
    )
    if "meteor" in names:
        from nash_cli.wordnet import load_wordnet

        load_wordnet()  # a missing WordNet fails now, not after generating

    import torch

    from nash_cli import artifact
    from nash_cli.cli import _common
    from nash_cli.evaluate import evaluate, generation_records, metrics_document, write_results
    from nash_cli.generation import resolve_settings

    config = artifact.load_config(checkpoint, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    tokenizer = artifact.load_tokenizer(checkpoint)
    model = artifact.load_model(
        checkpoint, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, config=config
    ).to(device=_device(device, torch), dtype=getattr(torch, dtype))
    settings = resolve_settings(model, num_beams=beams, max_new_tokens=max_new_tokens)

    with _common.progress() as bar:
        task = bar.add_task("generating", total=len(examples), status="")
        result = evaluate(
            model,
            tokenizer,
            examples,
            metrics=names,
            settings=settings,
            batch_size=batch,
            max_source_length=max_source_length,
            on_batch=lambda n: bar.update(task, advance=n),
        )
    document = metrics_document(
        result,
        examples,
        metrics=names,
        model=checkpoint,
        data=data,
        split=split,
        device=str(model.device),
        dtype=dtype,
    )
    if output is not None:
        write_results(document, generation_records(result, examples), output, generations)
        document["files"] = {"metrics": str(output), "generations": str(generations)}
    if json_output:
        _common.print_json(document)
    else:
        _print_table(document, _common.stdout)
    if output is not None:
        _common.human(json_output).print(f"wrote {output} and {generations}")


def _print_table(document: dict, console) -> None:
    from rich.table import Table

    gen = document["generation"]
    table = Table(
        title=(
            f"{document['model']} on {document['num_examples']} examples "
            f"(beams {gen['num_beams']}, up to {gen['max_new_tokens']} new tokens)"
        )
    )
    table.add_column("metric")
    table.add_column("score (x100)", justify="right")
    for name, value in document["scores"].items():
        table.add_row(name, f"{100 * value:.2f}")
    console.print(table)
    console.print(
        f"[dim]{document['seconds']['generation']:.1f}s generating "
        f"({document['examples_per_s']:.2f} examples/s); several references: best per example[/]"
    )
