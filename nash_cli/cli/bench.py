"""`nash bench`: generation speed of one or more checkpoints against a baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nash_cli.cli._data_options import (
    DEFAULT_MAX_SOURCE_LENGTH,
    MaxSourceLengthOption,
    SourceColumnOption,
    SourcePrefixOption,
    SourceTemplateOption,
    SplitOption,
)
from nash_cli.errors import NashError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
_GEN = "Generation"
_RUN = "Run"


def command(
    models: Annotated[list[str], typer.Argument(help="Checkpoints to time (local directories or hub ids).")],
    baseline: Annotated[
        Optional[str], typer.Option("--baseline", help="Checkpoint the others are compared with (speedup).")
    ] = None,
    data: Annotated[
        Optional[str],
        typer.Option(
            "--data",
            help="Real inputs (any format `nash eval` reads): outputs take their natural length. "
            "Without it, random tokens of --source-length.",
            rich_help_panel="Data",
        ),
    ] = None,
    split: SplitOption = None,
    source_column: SourceColumnOption = None,
    source_template: SourceTemplateOption = None,
    source_prefix: SourcePrefixOption = "",
    max_source_length: MaxSourceLengthOption = DEFAULT_MAX_SOURCE_LENGTH,
    source_length: Annotated[
        int, typer.Option("--source-length", help="Tokens per random input (without --data).", rich_help_panel="Data")
    ] = 512,
    num_batches: Annotated[
        int, typer.Option("--num-batches", help="Batches per repeat (different inputs).", rich_help_panel="Data")
    ] = 1,
    batch: Annotated[int, typer.Option("--batch", help="Sequences per generate() call.", rich_help_panel=_GEN)] = 32,
    beams: Annotated[int, typer.Option("--beams", help="Beam width.", rich_help_panel=_GEN)] = 4,
    fixed_length: Annotated[
        Optional[int],
        typer.Option(
            "--fixed-length",
            help="Generate exactly N tokens (min = max new tokens): compares models per token.",
            rich_help_panel=_GEN,
        ),
    ] = None,
    max_new_tokens: Annotated[
        Optional[int],
        typer.Option(
            "--max-new-tokens",
            help="Length cap (default: from the generation config of the baseline, else the first model).",
            rich_help_panel=_GEN,
        ),
    ] = None,
    compile: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="torch.compile each model's forward and decode over a static cache (first calls compile).",
            rich_help_panel=_GEN,
        ),
    ] = False,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed passes over all models.", rich_help_panel=_RUN)] = 10,
    warmup: Annotated[
        Optional[int],
        typer.Option("--warmup", help="Untimed passes first (default: 1; 3 with --compile).", rich_help_panel=_RUN),
    ] = None,
    breakdown: Annotated[
        bool,
        typer.Option(
            "--breakdown",
            help="One extra hooked pass: time in encoder, decoder layers, lm_head and the rest.",
            rich_help_panel=_RUN,
        ),
    ] = False,
    device: Annotated[
        str, typer.Option("--device", help="auto (cuda if present), cpu or cuda.", rich_help_panel=_RUN)
    ] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.", rich_help_panel=_RUN)] = "float32",
    threads: Annotated[
        Optional[int], typer.Option("--threads", help="CPU threads for torch (default: torch's).", rich_help_panel=_RUN)
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.", rich_help_panel=_RUN)] = 0,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Also write the JSON report to this file.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output if it exists.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Accept pytorch_model.bin weights (loaded with weights_only=True).")
    ] = False,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Run a checkpoint's own modeling code (only if you trust it).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Time whole generate() calls (batch 32, beam 4 by default), models interleaved, speedup vs --baseline."""
    for name, value, least in (("--batch", batch, 1), ("--beams", beams, 1), ("--repeats", repeats, 1),
                               ("--num-batches", num_batches, 1), ("--source-length", source_length, 1)):
        if value < least:
            raise NashError(f"{name} must be at least {least}, got {value}")
    for name, value in (("--fixed-length", fixed_length), ("--max-new-tokens", max_new_tokens)):
        if value is not None and value < 1:
            raise NashError(f"{name} must be at least 1, got {value}")
    if fixed_length is not None and max_new_tokens is not None and fixed_length != max_new_tokens:
        raise NashError("--fixed-length sets the number of new tokens; drop --max-new-tokens")
    if compile and breakdown:
        raise NashError("--breakdown times modules through hooks, which compiled code skips; drop one of them")
    if warmup is not None and warmup < 0:
        raise NashError(f"--warmup must be 0 or more, got {warmup}")
    if threads is not None and threads < 1:
        raise NashError(f"--threads must be at least 1, got {threads}")
    if device not in DEVICES:
        raise NashError(f"unknown --device {device!r}; use {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise NashError(f"unknown --dtype {dtype!r}; use {', '.join(DTYPES)}")
    if data is None and (source_column or source_template or split):
        raise NashError("--source-column / --source-template / --split read --data; give --data too")

    from nash_cli.reports import refuse_existing

    if output is not None:
        refuse_existing([output], force)

    import torch

    from nash_cli import artifact
    from nash_cli.bench import BenchSettings, random_batches, run_bench, text_batches
    from nash_cli.cli import _common
    from nash_cli.generation import resolve_settings

    if threads is not None:
        torch.set_num_threads(threads)
    target = _device(device, torch)
    names = list(dict.fromkeys(([baseline] if baseline is not None else []) + list(models)))
    # Every config is checked before any weights load, so a bad path fails fast.
    configs = {
        name: artifact.load_config(name, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        for name in names
    }
    loaded = {}
    for name in names:
        model = artifact.load_model(
            name, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, config=configs[name]
        )
        loaded[name] = model.to(device=target, dtype=getattr(torch, dtype))
    reference = loaded[names[0]]
    defaults = resolve_settings(reference, num_beams=beams, max_new_tokens=max_new_tokens, fixed_length=fixed_length)
    generation = {
        name: resolve_settings(
            model,
            num_beams=defaults.num_beams,
            max_new_tokens=defaults.max_new_tokens,
            fixed_length=fixed_length,
            compile=compile,
        )
        for name, model in loaded.items()
    }

    if data is not None:
        from nash_cli.data import load_examples

        examples = load_examples(
            data,
            split=split,
            source_column=source_column,
            source_template=source_template,
            source_prefix=source_prefix,
            limit=batch * num_batches,
        )
        tokenizer = artifact.load_tokenizer(names[0])
        batches = text_batches(
            tokenizer,
            [e.source for e in examples],
            batch_size=batch,
            max_source_length=max_source_length,
            pad_to_max=compile,  # one input shape, so compiled graphs are reused across batches
        )
        origin = {"kind": "data", "data": data, "tokenizer": names[0]}
    else:
        config = reference.config
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and source_length > limit:
            raise NashError(f"--source-length {source_length} exceeds the model's {limit} positions")
        special = [getattr(config, key, None) for key in ("pad_token_id", "eos_token_id", "bos_token_id",
                                                          "decoder_start_token_id", "unk_token_id")]
        batches = random_batches(
            vocab_size=min(model.config.vocab_size for model in loaded.values()),
            batch_size=batch,
            source_length=source_length,
            num_batches=num_batches,
            low=max([4] + [s + 1 for s in special if isinstance(s, int)]),
            eos_token_id=config.eos_token_id if isinstance(config.eos_token_id, int) else None,
            seed=seed,
        )
        origin = {"kind": "random", "seed": seed}

    if compile:
        from nash_cli.generation import compile_model

        for model in loaded.values():
            compile_model(model)
    settings = BenchSettings(
        repeats=repeats, warmup=warmup if warmup is not None else (3 if compile else 1), breakdown=breakdown
    )
    calls = len(batches) * len(names) * (settings.warmup + settings.repeats + int(breakdown))
    with _common.progress(transient=True) as bar:
        task = bar.add_task("bench", total=calls, status="")

        def on_call(phase: str, name: str) -> None:
            bar.update(task, advance=1, status=f"{phase} {Path(name).name}")

        result = run_bench(
            loaded, batches, generation, settings, baseline=baseline, on_call=on_call
        )
    result.inputs.update(origin)
    result.environment["dtype"] = dtype
    document = result.to_dict()

    if output is not None:
        from nash_cli.reports import json_text, write_files

        write_files({output: json_text(document)})
    if json_output:
        _common.print_json(document)
    else:
        _print_tables(document, _common.stdout)
    if output is not None:
        _common.human(json_output).print(f"wrote {output}")


def _device(name: str, torch):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NashError("--device cuda but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def _millions(count: int) -> str:
    return f"{count / 1e6:.1f}" if count >= 1e5 else f"{count / 1e6:.3f}"


def _display_names(names: list[str]) -> list[str]:
    # Last path component where that is unambiguous; the full name otherwise.
    short = [Path(name).name or name for name in names]
    return short if len(set(short)) == len(short) else names


def _print_tables(document: dict, console) -> None:
    from rich.table import Table

    first = document["models"][0]
    gen = first["generation"]
    length = f"exactly {gen['max_new_tokens']}" if gen["min_new_tokens"] else f"up to {gen['max_new_tokens']}"
    inputs = document["inputs"]
    env = document["environment"]
    table = Table(
        title=(
            f"generate(): batch {inputs['batch_sizes'][0]}, beams {gen['num_beams']}, {length} new tokens, "
            f"{document['settings']['repeats']} repeats on {env['device_name']} ({env['threads']} threads)"
        )
    )
    labels = _display_names([report["name"] for report in document["models"]])
    has_baseline = document["baseline"] is not None
    columns = ["model", "enc/dec M", "median s", "p90 s", "p99 s", "tok/s", "len", "peak MiB"]
    for column in columns + (["speedup", "per repeat"] if has_baseline else []):
        table.add_column(column, justify="left" if column == "model" else "right")
    for report, label in zip(document["models"], labels):
        params = report["parameters"]
        memory = report["peak_memory"]
        speedup = report["speedup"]
        if speedup is not None:
            spread = speedup["per_repeat"]
            speed = [f"{speedup['value']:.2f}x", f"{spread['median']:.2f} ({spread['min']:.2f}-{spread['max']:.2f})"]
        else:
            speed = ["baseline" if report["name"] == document["baseline"] else "", ""]
        table.add_row(
            label,
            f"{_millions(params['encoder'])}/{_millions(params['decoder'])}",
            f"{report['latency_s']['median']:.3f}",
            f"{report['latency_s']['p90']:.3f}",
            f"{report['latency_s']['p99']:.3f}",
            f"{report['tokens_per_s']:.0f}",
            f"{report['mean_generated_length']:.1f}",
            f"{memory['peak_mib']:.0f}" if memory else "",
            *(speed if has_baseline else []),
        )
    console.print(table)
    if any(report["breakdown"] for report in document["models"]):
        parts = Table(title="where the time goes (one hooked pass; % of its total)")
        for column in ("model", "total s", "encoder", "decoder layers", "lm_head", "rest (search, embeddings)"):
            parts.add_column(column, justify="left" if column == "model" else "right")
        for report, label in zip(document["models"], labels):
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
    memory_kind = "max allocated on CUDA" if env["device"].startswith("cuda") else "process RSS"
    notes.append(f"peak MiB: {memory_kind} during one warm-up pass; samples/s and more with --json")
    console.print("[dim]" + "; ".join(notes) + "[/]")
