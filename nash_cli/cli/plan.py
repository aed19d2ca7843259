"""`nash plan`: from a speed target on this machine to a recipe, before any training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nash_cli.cli import _common
from nash_cli.cli._options import (
    AllowPickleOption,
    JsonOption,
    MaxSourceLengthOption,
    SourceColumnOption,
    SourceLangOption,
    SourcePrefixOption,
    SourceTemplateOption,
    SplitOption,
    TargetColumnOption,
    TargetLangOption,
    TrustRemoteCodeOption,
)
from nash_cli.errors import NashError
from nash_cli.stages.plan import PlanOptions as Options

_SERVE = "Serving settings"
_SEARCH = "Candidates and budget"


def command(
    checkpoint: Annotated[str, typer.Argument(help="The fine-tuned teacher (a dense checkpoint).")],
    speedup: Annotated[float, typer.Option("--speedup", help="The speedup to reach, e.g. 3 (three times faster than the teacher).")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Real data: input lengths, the teacher's output length, and the vocabulary restriction "
            "candidates. Without it, random inputs of --source-length.",
            rich_help_panel="Data",
        ),
    ] = Options.data,
    split: SplitOption = Options.split,
    source_column: SourceColumnOption = Options.source_column,
    target_column: TargetColumnOption = Options.target_column,
    source_template: SourceTemplateOption = Options.source_template,
    source_prefix: SourcePrefixOption = Options.source_prefix,
    source_lang: SourceLangOption = Options.source_lang,
    target_lang: TargetLangOption = Options.target_lang,
    max_source_length: MaxSourceLengthOption = Options.max_source_length,
    batch: Annotated[int, typer.Option("--batch", help="Sequences per generate() call, as served.", rich_help_panel=_SERVE)] = Options.batch,
    beams: Annotated[int, typer.Option("--beams", help="Beam width, as served.", rich_help_panel=_SERVE)] = Options.beams,
    engine: Annotated[
        str, typer.Option("--engine", help="What serves the model: transformers or ctranslate2.", rich_help_panel=_SERVE)
    ] = Options.engine,
    quantization: Annotated[
        str, typer.Option("--quantization", help="CTranslate2 weight type (int8, ...); transformers runs float32.", rich_help_panel=_SERVE)
    ] = Options.quantization,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for torch and CTranslate2 (default: OMP_NUM_THREADS, else one per core); timings "
            "on a machine shared with other jobs are only comparable at a fixed count.",
            rich_help_panel=_SERVE,
        ),
    ] = Options.threads,
    source_length: Annotated[
        int | None,
        typer.Option("--source-length", help="Tokens per input: random inputs of this length (default 512 without --data).", rich_help_panel=_SERVE),
    ] = Options.source_length,
    new_tokens: Annotated[
        int | None,
        typer.Option(
            "--new-tokens",
            help="Tokens generated per input (default: the teacher's own mean output length on --data, else its generation config's cap).",
            rich_help_panel=_SERVE,
        ),
    ] = Options.new_tokens,
    budget_minutes: Annotated[
        float, typer.Option("--budget-minutes", help="Time for building and timing models; the rest is predicted.", rich_help_panel=_SEARCH)
    ] = Options.budget_minutes,
    decoder_layers: Annotated[
        str | None,
        typer.Option("--decoder-layers", help="Decoder depths to consider, e.g. 1,2,3 (default: 1 to the teacher's).", rich_help_panel=_SEARCH),
    ] = None,
    sparsities: Annotated[
        str, typer.Option("--sparsities", help="Encoder sparsities to consider (0: no encoder pruning).", rich_help_panel=_SEARCH)
    ] = "0,0.3,0.5",
    speedup_against: Annotated[
        str,
        typer.Option(
            "--speedup-against",
            help="The target is against the teacher on the same engine and quantization (engine) or in transformers float32 (transformers).",
            rich_help_panel=_SEARCH,
        ),
    ] = Options.speedup_against,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed calls per model at most, after a warm-up call; fewer where the budget is short.", rich_help_panel=_SEARCH)] = Options.repeats,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs and pruning scores.", rich_help_panel=_SEARCH)] = Options.seed,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Directory for recipe.yaml and plan.json.")
    ] = Options.output,
    force: Annotated[bool, typer.Option("--force", help="Replace --output if it exists.")] = Options.force,
    allow_pickle: AllowPickleOption = Options.allow_pickle,
    trust_remote_code: TrustRemoteCodeOption = Options.trust_remote_code,
    json_output: JsonOption = False,
) -> None:
    """Time every configuration NASH could produce on this machine and recommend the one that meets --speedup."""
    options = Options(
        checkpoint=checkpoint,
        speedup=speedup,
        data=data,
        split=split,
        source_column=source_column,
        target_column=target_column,
        source_template=source_template,
        source_prefix=source_prefix,
        source_lang=source_lang,
        target_lang=target_lang,
        max_source_length=max_source_length,
        batch=batch,
        beams=beams,
        engine=engine,
        quantization=quantization,
        threads=threads,
        source_length=source_length,
        new_tokens=new_tokens,
        budget_minutes=budget_minutes,
        decoder_layers=_common.layer_list(decoder_layers, "--decoder-layers"),
        sparsities=_floats(sparsities, "--sparsities"),
        speedup_against=speedup_against,
        repeats=repeats,
        seed=seed,
        output=output,
        force=force,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    options.check()  # before torch is imported: a usage mistake answers at once

    from nash_cli.progress import Progress
    from nash_cli.stages.plan import run

    with Progress.for_stream("plan", unit="call", transient=True) as progress:
        result = run(options, progress=progress)
    _common.emit(result.to_dict(), json_output, print_result)
    if options.output is not None:
        _common.human(json_output).print(f"wrote {Path(options.output) / 'recipe.yaml'} and plan.json")


def print_result(result: dict, console) -> None:
    """The candidates table, the recommendation and the notes."""
    from rich.table import Table
    from rich.text import Text

    work = result["workload"]
    engine = result["engine"]
    serving = f"{engine['engine']}" + (f" {engine['quantization']}" if engine["engine"] == "ctranslate2" else "")
    env = result.get("environment") or {}
    table = Table(
        title=(
            f"nash plan: {serving}, batch {work['batch']}, beams {work['beams']}, source {work['source_length']}, "
            f"{work['new_tokens']} new tokens, {engine['threads']} threads on {env.get('device_name', 'this machine')}"
        )
    )
    two = engine["engine"] == "ctranslate2"
    columns = ["dec", "enc", "vocab", "how", "s/call", "speedup" + (" same engine" if two else "")]
    if two:
        columns.append("vs torch fp32")
    columns += ["M params", "MiB", "target"]
    for column in columns:
        table.add_column(column, justify="left" if column == "how" else "right")
    table.add_row("teacher", "", "", "timed", f"{result['references']['engine']:.3f}", "1.00x", *(
        [f"{result['references']['transformers'] / result['references']['engine']:.2f}x"] if two else []), "", "", "")
    chosen = result["recommendation"]["label"]
    for row in result["candidates"]:
        vocab = f"{row['vocab_size']:,}" if row["vocab_size"] is not None else "all"
        cells = [
            str(row["decoder_layers"]),
            f"{row['encoder_sparsity']:.2f}",
            vocab,
            "conf." if row.get("confirmed") else "timed" if row["timed"] else "pred.",
            f"{row['seconds']:.3f}",
            f"{row['speedup_vs_engine_teacher']:.2f}x",
        ]
        if two:
            cells.append(f"{row['speedup_vs_transformers_teacher']:.2f}x")
        cells += [
            f"{row['parameters'] / 1e6:.1f}",
            f"{row['weights_mib']:.0f}" + ("~" if row["weights_estimated"] else ""),
            "meets" if row["meets_target"] else "",
        ]
        table.add_row(*cells, style="bold" if row["label"] == chosen else None)
    console.print(table)
    model = result["cost_model"]
    budget = result["budget"]
    console.print(
        f"timed {budget['timed']} of {budget['timed'] + budget['predicted']} candidates in {budget['used_s']:.0f} s "
        f"(budget {budget['minutes']:g} min), each interleaved with the reference ({result['references']['reference']}), "
        f"itself interleaved with the teacher: speedups are products of per-repeat ratio medians; 'conf.': confirmed, "
        f"timed beside the teacher as nash bench does; 'pred.': predicted by a cost model ({model['kind']}, fitted to "
        f"{model['timings']} timings, rms error {100 * model['relative_error']:.0f}%); new tokens forced (min = max); "
        f"'~': weight size estimated",
        style="dim",
        markup=False,
    )
    rec = result["recommendation"]
    against = "the teacher on the same engine" if result["speedup_against"] == "engine" else "the transformers float32 teacher"
    how = _how(rec)
    if rec["meets_target"]:
        console.print(Text.assemble(
            ("recommended:", "green"), f" {rec['label']}: {rec['speedup']:.2f}x against {against} ({how}); {rec['why']}"))
    else:
        console.print(Text.assemble(
            (f"target {result['target']:g}x not reachable:", "red"),
            f" the best reachable is {rec['best_reachable']:.2f}x against {against}, with {rec['label']} ({how})"))
    if result.get("vocabulary"):
        vocab = result["vocabulary"]
        console.print(f"vocabulary restriction: {vocab['kept']:,} of {vocab['of']:,} tokens ({vocab['rule']})",
                      style="dim", markup=False)
    _common.print_notes(result.get("notes", []), console)


def _how(recommendation: dict) -> str:
    """How the recommendation's speedup was measured, in a few words."""
    if not recommendation.get("confirmed"):
        return "timed beside the reference" if recommendation["timed"] else "predicted"
    spread = recommendation["per_repeat"]
    return (f"timed beside the teacher, per-repeat ratios {spread['min']:.2f} to {spread['max']:.2f}; "
            f"estimated {recommendation['estimate']:.2f}x before")


def _floats(text: str, option: str) -> list[float]:
    """A list-of-numbers flag ("0,0.3,0.5") as floats; NashError when it is not one."""
    try:
        values = [float(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise NashError(f"{option} {text!r} is not a list of numbers; write e.g. {option} 0,0.3,0.5") from None
    if not values:
        raise NashError(f"{option} is empty; write e.g. {option} 0,0.3,0.5")
    return values
