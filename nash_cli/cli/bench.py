"""`nash bench`: generation speed of one or more checkpoints against a baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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
    TargetLangOption,
    ThreadsOption,
    TrustRemoteCodeOption,
    VocabMapOption,
)
from nash_cli.stages.bench import BenchOptions as Options

_GEN = "Generation"
_RUN = "Run"


def command(
    models: Annotated[list[str], typer.Argument(help="Checkpoints to time (local directories or hub ids).")],
    baseline: Annotated[
        Optional[str], typer.Option("--baseline", help="Checkpoint the others are compared with (speedup).")
    ] = Options.baseline,
    data: Annotated[
        Optional[str],
        typer.Option(
            "--data",
            help="Real inputs (any format `nash eval` reads): outputs take their natural length. "
            "Without it, random tokens of --source-length.",
            rich_help_panel="Data",
        ),
    ] = Options.data,
    split: SplitOption = Options.split,
    source_column: SourceColumnOption = Options.source_column,
    source_template: SourceTemplateOption = Options.source_template,
    source_prefix: SourcePrefixOption = Options.source_prefix,
    source_lang: SourceLangOption = Options.source_lang,
    target_lang: TargetLangOption = Options.target_lang,
    max_source_length: MaxSourceLengthOption = Options.max_source_length,
    source_length: Annotated[
        int, typer.Option("--source-length", help="Tokens per random input (without --data).", rich_help_panel="Data")
    ] = Options.source_length,
    num_batches: Annotated[
        int, typer.Option("--num-batches", help="Batches per repeat (different inputs).", rich_help_panel="Data")
    ] = Options.num_batches,
    batch: Annotated[int, typer.Option("--batch", help="Sequences per generate() call.", rich_help_panel=_GEN)] = Options.batch,
    beams: Annotated[int, typer.Option("--beams", help="Beam width.", rich_help_panel=_GEN)] = Options.beams,
    fixed_length: Annotated[
        Optional[int],
        typer.Option(
            "--fixed-length",
            help="Generate exactly N tokens (min = max new tokens): compares models per token.",
            rich_help_panel=_GEN,
        ),
    ] = Options.fixed_length,
    max_new_tokens: Annotated[
        Optional[int],
        typer.Option(
            "--max-new-tokens",
            help="Length cap (default: from the generation config of the baseline, else the first model).",
            rich_help_panel=_GEN,
        ),
    ] = Options.max_new_tokens,
    compile: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="torch.compile each model's forward and decode over a static cache (first calls compile).",
            rich_help_panel=_GEN,
        ),
    ] = Options.compile,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed passes over all models.", rich_help_panel=_RUN)] = Options.repeats,
    warmup: Annotated[
        Optional[int],
        typer.Option("--warmup", help="Untimed passes first (default: 1; 3 with --compile).", rich_help_panel=_RUN),
    ] = Options.warmup,
    breakdown: Annotated[
        bool,
        typer.Option(
            "--breakdown",
            help="One extra hooked pass: time in encoder, decoder layers, lm_head and the rest.",
            rich_help_panel=_RUN,
        ),
    ] = Options.breakdown,
    device: Annotated[
        str, typer.Option("--device", help="auto (cuda if present), cpu or cuda.", rich_help_panel=_RUN)
    ] = Options.device,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.", rich_help_panel=_RUN)] = Options.dtype,
    threads: ThreadsOption = Options.threads,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.", rich_help_panel=_RUN)] = Options.seed,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Also write the JSON report to this file.")
    ] = Options.output,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output if it exists.")] = Options.force,
    vocab_map: VocabMapOption = Options.vocab_map,
    allow_pickle: AllowPickleOption = Options.allow_pickle,
    trust_remote_code: TrustRemoteCodeOption = Options.trust_remote_code,
    json_output: JsonOption = False,
) -> None:
    """Time whole generate() calls (batch 32, beam 4 by default), models interleaved, speedup vs --baseline."""
    options = Options(
        models=models,
        baseline=baseline,
        data=data,
        split=split,
        source_column=source_column,
        source_template=source_template,
        source_prefix=source_prefix,
        source_lang=source_lang,
        target_lang=target_lang,
        max_source_length=max_source_length,
        source_length=source_length,
        num_batches=num_batches,
        batch=batch,
        beams=beams,
        fixed_length=fixed_length,
        max_new_tokens=max_new_tokens,
        compile=compile,
        repeats=repeats,
        warmup=warmup,
        breakdown=breakdown,
        device=device,
        dtype=dtype,
        threads=threads,
        seed=seed,
        output=output,
        force=force,
        vocab_map=vocab_map,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    options.check()  # before torch is imported: a usage mistake answers at once

    from nash_cli.progress import Progress
    from nash_cli.stages.bench import run

    with Progress.for_stream("bench", unit="call", transient=True) as progress:
        result = run(options, progress=progress)
    _common.emit(result.to_dict(), json_output, print_result)
    if options.output is not None:
        _common.human(json_output).print(f"wrote {options.output}")


def print_result(result: dict, console) -> None:
    """Each model's latency, throughput, size and speedup; where the time goes (--breakdown); notes."""
    from rich.table import Table

    first = result["models"][0]
    gen = first["generation"]
    length = f"exactly {gen['max_new_tokens']}" if gen["min_new_tokens"] else f"up to {gen['max_new_tokens']}"
    inputs = result["inputs"]
    env = result["environment"]
    table = Table(
        title=(
            f"generate(): batch {inputs['batch_sizes'][0]}, beams {gen['num_beams']}, {length} new tokens, "
            f"{result['settings']['repeats']} repeats on {env['device_name']} ({env['threads']} threads)"
        )
    )
    labels = _display_names([report["name"] for report in result["models"]])
    has_baseline = result["baseline"] is not None
    columns = ["model", "engine", "enc/dec M", "median s", "p90 s", "p99 s", "tok/s", "len", "peak MiB"]
    for column in columns + (["speedup", "per repeat"] if has_baseline else []):
        table.add_column(column, justify="left" if column == "model" else "right")
    for report, label in zip(result["models"], labels):
        params = report["parameters"]
        memory = report["peak_memory"]
        speedup = report["speedup"]
        if speedup is not None:
            spread = speedup["per_repeat"]
            speed = [f"{speedup['value']:.2f}x", f"{spread['median']:.2f} ({spread['min']:.2f}-{spread['max']:.2f})"]
        else:
            speed = ["baseline" if report["name"] == result["baseline"] else "", ""]
        table.add_row(
            label,
            engine_label(report.get("engine") or {}),
            f"{_millions(params['encoder'])}/{_millions(params['decoder'])}",
            f"{report['latency_s']['median']:.3f}",
            f"{report['latency_s']['p90']:.3f}",
            f"{report['latency_s']['p99']:.3f}",
            f"{report['tokens_per_s']:.0f}",
            f"{report['mean_generated_length']:.1f}",
            f"{memory['peak_mib']:.0f}" if memory.get("peak_mib") is not None else "",
            *(speed if has_baseline else []),
        )
    console.print(table)
    if any(report["breakdown"] for report in result["models"]):
        parts = Table(title="where the time goes (one hooked pass; % of its total)")
        for column in ("model", "total s", "encoder", "decoder layers", "lm_head", "rest (search, embeddings)"):
            parts.add_column(column, justify="left" if column == "model" else "right")
        for report, label in zip(result["models"], labels):
            if report["breakdown"]:
                fraction = report["breakdown"]["fraction"]
                parts.add_row(
                    label,
                    f"{report['breakdown']['total_s']:.3f}",
                    *(f"{100 * fraction[key]:.1f}%" for key in ("encoder", "decoder_layers", "lm_head", "rest")),
                )
        console.print(parts)
    notes = []
    if has_baseline:
        notes.append(
            "speedup: median baseline time / median model time; per repeat: median (min-max) of the "
            "ratios baseline / model within each repeat (models interleaved)"
        )
    if any((report.get("engine") or {}).get("engine") == "ctranslate2" for report in result["models"]):
        notes.append(
            f"ct2: CTranslate2 {env.get('ctranslate2', '')}, timed translate_batch calls on the same inputs, beams "
            "and lengths, same thread count"
        )
    if any((report.get("engine") or {}).get("vocab_map") is not None for report in result["models"]):
        notes.append("+vmap: decoded with the export's vocabulary map; -vmap: it has one, turned off (--no-vocab-map)")
    memory_kind = "max allocated on CUDA" if env["device"].startswith("cuda") else "process RSS"
    notes.append(f"peak MiB: {memory_kind} during one warm-up pass; samples/s and more with --json")
    notes.append("enc/dec M: parameters of each stack without embeddings (token, position, lm_head)")
    console.print("; ".join(notes), style="dim", markup=False)
    _common.print_notes(result.get("notes", []), console)


def _millions(count: int) -> str:
    return f"{count / 1e6:.1f}" if count >= 1e5 else f"{count / 1e6:.3f}"


def _display_names(names: list[str]) -> list[str]:
    # Last path component where that is unambiguous; the full name otherwise.
    short = [Path(name).name or name for name in names]
    return short if len(set(short)) == len(short) else names


def engine_label(engine: dict) -> str:
    """"torch float32", "ct2 int8_float32", ... for a report's `engine` entry."""
    name = {"transformers": "torch", "ctranslate2": "ct2"}.get(engine.get("engine"), engine.get("engine") or "torch")
    # the export's vocabulary map: "+vmap" when decoding used it, "-vmap" when it was turned off
    restricted = {True: " +vmap", False: " -vmap"}.get(engine.get("vocab_map"), "")
    return f"{name} {engine.get('compute_type', '')}".strip() + restricted

