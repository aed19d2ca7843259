"""`nash distill`: train a student against a teacher (or fine-tune it alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nash_cli.cli._data_options import (
    DEFAULT_MAX_SOURCE_LENGTH,
    DEFAULT_MAX_TARGET_LENGTH,
    DEFAULT_SOURCE_PREFIX,
    DataOption,
    EvalDataOption,
    EvalSplitOption,
    LimitOption,
    MaxSourceLengthOption,
    MaxTargetLengthOption,
    SourceColumnOption,
    SourcePrefixOption,
    SourceTemplateOption,
    SplitOption,
    TargetColumnOption,
)

_TRAIN = "Training"
_OBJECTIVE = "Objective"
_RUN = "Run"


def command(
    student: Annotated[str, typer.Argument(help="Student checkpoint to train: a local directory, or a hub id where online.")],
    data: DataOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the trained student to.")],
    teacher: Annotated[
        Optional[str],
        typer.Option("--teacher", help="Teacher checkpoint to distil from; without it, plain fine-tuning (cross-entropy).", rich_help_panel=_OBJECTIVE),
    ] = None,
    split: SplitOption = None,
    eval_data: EvalDataOption = None,
    eval_split: EvalSplitOption = None,
    source_column: SourceColumnOption = None,
    target_column: TargetColumnOption = None,
    source_template: SourceTemplateOption = None,
    source_prefix: SourcePrefixOption = DEFAULT_SOURCE_PREFIX,
    max_source_length: MaxSourceLengthOption = DEFAULT_MAX_SOURCE_LENGTH,
    max_target_length: MaxTargetLengthOption = DEFAULT_MAX_TARGET_LENGTH,
    limit: LimitOption = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training data.", rich_help_panel=_TRAIN)] = 3,
    max_steps: Annotated[
        Optional[int], typer.Option("--max-steps", help="Stop after this many optimiser steps (overrides --epochs).", rich_help_panel=_TRAIN)
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per process per micro-batch.", rich_help_panel=_TRAIN)] = 4,
    grad_accum: Annotated[
        int, typer.Option("--grad-accum", help="Micro-batches per optimiser step (global batch = batch size x this x processes).", rich_help_panel=_TRAIN)
    ] = 1,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", rich_help_panel=_TRAIN)] = 3e-4,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (not on biases and norms).", rich_help_panel=_TRAIN)] = 0.0,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", help="Linear warm-up steps; then linear decay to 0.", rich_help_panel=_TRAIN)] = 0,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="Clip the gradient norm to this (0: no clipping).", rich_help_panel=_TRAIN)] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed for data order, dropout and initialisation.", rich_help_panel=_TRAIN)] = 42,
    freeze_embeddings: Annotated[
        bool, typer.Option("--freeze-embeddings", help="Keep token embeddings fixed (a tied lm_head too).", rich_help_panel=_TRAIN)
    ] = False,
    mixed_precision: Annotated[
        Optional[str],
        typer.Option("--mixed-precision", help="no, fp16 or bf16 (default: accelerate's config, else no).", rich_help_panel=_TRAIN),
    ] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="Distillation temperature T.", rich_help_panel=_OBJECTIVE)] = 2.0,
    alpha_ce: Annotated[float, typer.Option("--alpha-ce", help="Weight of cross-entropy to the labels (with a teacher).", rich_help_panel=_OBJECTIVE)] = 0.5,
    alpha_kd: Annotated[float, typer.Option("--alpha-kd", help="Weight of T^2 * KL(teacher || student).", rich_help_panel=_OBJECTIVE)] = 1.0,
    alpha_enc: Annotated[float, typer.Option("--alpha-enc", help="Weight of the encoder hidden-state MSE (0: off).", rich_help_panel=_OBJECTIVE)] = 0.001,
    alpha_dec: Annotated[float, typer.Option("--alpha-dec", help="Weight of the decoder hidden-state MSE (0: off).", rich_help_panel=_OBJECTIVE)] = 0.001,
    decoder_layer_map: Annotated[
        Optional[str],
        typer.Option(
            "--decoder-layer-map",
            help="Teacher decoder layer for each student decoder layer, e.g. 0,5,11 (default: the student's nash.json, else 1:1).",
            rich_help_panel=_OBJECTIVE,
        ),
    ] = None,
    encoder_layer_map: Annotated[
        Optional[str],
        typer.Option(
            "--encoder-layer-map",
            help="Teacher encoder layer for each student encoder layer (default: 1:1 when depths match, else no encoder loss).",
            rich_help_panel=_OBJECTIVE,
        ),
    ] = None,
    save_every: Annotated[int, typer.Option("--save-every", help="Write a resumable state every N steps (0: never).", rich_help_panel=_RUN)] = 500,
    eval_every: Annotated[
        Optional[int], typer.Option("--eval-every", help="Evaluate every N steps (default: every epoch, and at the end).", rich_help_panel=_RUN)
    ] = None,
    log_every: Annotated[int, typer.Option("--log-every", help="Log mean losses to train_log.jsonl every N steps.", rich_help_panel=_RUN)] = 10,
    keep: Annotated[
        str, typer.Option("--keep", help="With --eval-data: output the best checkpoint by eval loss, or the last.", rich_help_panel=_RUN)
    ] = "best",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its last state in OUTPUT.partial/.", rich_help_panel=_RUN)
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing output; discard an interrupted run's state.", rich_help_panel=_RUN)
    ] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Accept pytorch_model.bin weights (loaded with weights_only=True).")
    ] = False,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Run the checkpoints' own modeling code (only if you trust it).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Distil a student from a teacher (CE + T^2 KL + hidden-state MSE), or fine-tune it without one.

    Runs on CPU, one GPU, or many processes (accelerate launch / torchrun -m nash_cli distill ...);
    --resume continues an interrupted run.
    """
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}

    from nash_cli.train.distill import DataSpec, run_distill
    from nash_cli.train.engine import TrainConfig

    config = TrainConfig(
        output=output,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        max_grad_norm=max_grad_norm,
        seed=seed,
        temperature=temperature,
        alpha_ce=alpha_ce,
        alpha_kd=alpha_kd,
        alpha_enc=alpha_enc,
        alpha_dec=alpha_dec,
        freeze_embeddings=freeze_embeddings,
        save_every=save_every,
        eval_every=eval_every,
        log_every=log_every,
        keep=keep,  # type: ignore[arg-type]
        resume=resume,
        force=force,
        mixed_precision=mixed_precision,
    )
    spec = DataSpec(
        data=data,
        split=split,
        eval_data=eval_data,
        eval_split=eval_split,
        source_column=source_column,
        target_column=target_column,
        source_template=source_template,
        source_prefix=source_prefix,
        max_source_length=max_source_length,
        max_target_length=max_target_length,
        limit=limit,
    )
    result = run_distill(
        student,
        teacher_source=teacher,
        output=output,
        data=spec,
        config=config,
        arguments=arguments,
        decoder_layer_map=decoder_layer_map,
        encoder_layer_map=encoder_layer_map,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )

    from nash_cli.train.engine import is_main_process

    if not is_main_process():
        return
    from nash_cli.cli import _common

    if json_output:
        _common.print_json(result)
    else:
        _print_summary(result, _common.stdout)


def _print_summary(result: dict, console) -> None:
    from rich.table import Table

    title = f"distill -> {result['output']}" if result["teacher"] else f"fine-tune -> {result['output']}"
    table = Table(title=title, show_header=True)
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("steps", f"{result['steps']} ({result['epochs']:.2f} epochs, global batch {result['global_batch_size']})")
    for name, value in (result.get("final_train") or {}).items():
        table.add_row(f"train {name}", f"{value:.4f}")
    for name, value in (result.get("eval") or {}).items():
        table.add_row(name.replace("_", " "), f"{value:.4f}")
    if result.get("best"):
        table.add_row("best eval loss", f"{result['best']['eval_loss']:.4f} at step {result['best']['step']}")
    table.add_row("output weights", result["selected"])
    table.add_row("steps/s", f"{result['steps_per_second']:.2f}")
    console.print(table)
    for note in result.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
