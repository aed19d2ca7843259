"""`nash distill`: train a student against a teacher (or fine-tune it alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nash_cli.cli import _common
from nash_cli.cli._options import (
    AllowPickleOption,
    AlphaCeOption,
    AlphaDecOption,
    AlphaEncOption,
    AlphaKdOption,
    BatchSizeOption,
    DataOption,
    DecoderLayerMapOption,
    EncoderLayerMapOption,
    EpochsOption,
    EvalDataOption,
    EvalEveryOption,
    EvalSplitOption,
    ForceOption,
    FreezeEmbeddingsOption,
    GradAccumOption,
    JsonOption,
    LimitOption,
    LogEveryOption,
    MaxGradNormOption,
    MaxSourceLengthOption,
    MaxStepsOption,
    MaxTargetLengthOption,
    MixedPrecisionOption,
    OBJECTIVE,
    RUN,
    ResumeOption,
    SaveEveryOption,
    SeedOption,
    SourceColumnOption,
    SourceLangOption,
    SourcePrefixOption,
    SourceTemplateOption,
    SplitOption,
    TRAIN,
    TargetColumnOption,
    TargetLangOption,
    TemperatureOption,
    ThreadsOption,
    TrustRemoteCodeOption,
    WarmupStepsOption,
    WeightDecayOption,
)
from nash_cli.stages.distill import DistillOptions as Options


def command(
    student: Annotated[str, typer.Argument(help="Student checkpoint to train: a local directory, or a hub id where online.")],
    data: DataOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the trained student to.")],
    teacher: Annotated[
        Optional[str],
        typer.Option("--teacher", help="Teacher checkpoint to distil from; without it, plain fine-tuning (cross-entropy).", rich_help_panel=OBJECTIVE),
    ] = Options.teacher,
    split: SplitOption = Options.split,
    eval_data: EvalDataOption = Options.eval_data,
    eval_split: EvalSplitOption = Options.eval_split,
    source_column: SourceColumnOption = Options.source_column,
    target_column: TargetColumnOption = Options.target_column,
    source_template: SourceTemplateOption = Options.source_template,
    source_prefix: SourcePrefixOption = Options.source_prefix,
    source_lang: SourceLangOption = Options.source_lang,
    target_lang: TargetLangOption = Options.target_lang,
    max_source_length: MaxSourceLengthOption = Options.max_source_length,
    max_target_length: MaxTargetLengthOption = Options.max_target_length,
    limit: LimitOption = Options.limit,
    epochs: EpochsOption = Options.epochs,
    max_steps: MaxStepsOption = Options.max_steps,
    batch_size: BatchSizeOption = Options.batch_size,
    grad_accum: GradAccumOption = Options.grad_accum,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", rich_help_panel=TRAIN)] = Options.lr,
    weight_decay: WeightDecayOption = Options.weight_decay,
    warmup_steps: WarmupStepsOption = Options.warmup_steps,
    max_grad_norm: MaxGradNormOption = Options.max_grad_norm,
    seed: SeedOption = Options.seed,
    freeze_embeddings: FreezeEmbeddingsOption = Options.freeze_embeddings,
    mixed_precision: MixedPrecisionOption = Options.mixed_precision,
    temperature: TemperatureOption = Options.temperature,
    alpha_ce: AlphaCeOption = Options.alpha_ce,
    alpha_kd: AlphaKdOption = Options.alpha_kd,
    alpha_enc: AlphaEncOption = Options.alpha_enc,
    alpha_dec: AlphaDecOption = Options.alpha_dec,
    decoder_layer_map: DecoderLayerMapOption = None,
    encoder_layer_map: EncoderLayerMapOption = None,
    save_every: SaveEveryOption = Options.save_every,
    eval_every: EvalEveryOption = Options.eval_every,
    log_every: LogEveryOption = Options.log_every,
    keep: Annotated[
        str, typer.Option("--keep", help="With --eval-data: output the best checkpoint by eval loss, or the last.", rich_help_panel=RUN)
    ] = Options.keep,
    resume: ResumeOption = Options.resume,
    threads: ThreadsOption = Options.threads,
    force: ForceOption = Options.force,
    allow_pickle: AllowPickleOption = Options.allow_pickle,
    trust_remote_code: TrustRemoteCodeOption = Options.trust_remote_code,
    json_output: JsonOption = False,
) -> None:
    """Distil a student from a teacher (CE + T^2 KL + hidden-state MSE), or fine-tune it without one.

    Runs on CPU, one GPU, or many processes (accelerate launch / torchrun -m nash_cli distill ...);
    --resume continues an interrupted run.
    """
    options = Options(
        student=student,
        data=data,
        output=output,
        teacher=teacher,
        split=split,
        eval_data=eval_data,
        eval_split=eval_split,
        source_column=source_column,
        target_column=target_column,
        source_template=source_template,
        source_prefix=source_prefix,
        source_lang=source_lang,
        target_lang=target_lang,
        max_source_length=max_source_length,
        max_target_length=max_target_length,
        limit=limit,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        max_grad_norm=max_grad_norm,
        seed=seed,
        freeze_embeddings=freeze_embeddings,
        mixed_precision=mixed_precision,
        temperature=temperature,
        alpha_ce=alpha_ce,
        alpha_kd=alpha_kd,
        alpha_enc=alpha_enc,
        alpha_dec=alpha_dec,
        decoder_layer_map=_common.layer_list(decoder_layer_map, "--decoder-layer-map"),
        encoder_layer_map=_common.layer_list(encoder_layer_map, "--encoder-layer-map"),
        save_every=save_every,
        eval_every=eval_every,
        log_every=log_every,
        keep=keep,
        resume=resume,
        threads=threads,
        force=force,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    options.check()  # before torch is imported: a usage mistake answers at once

    from nash_cli.stages.distill import run

    _common.run_training_stage(run, options, json_output, print_result)


def print_result(result: dict, console) -> None:
    """Training summary: steps, final train and eval losses, the best checkpoint and the speed."""
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
    _common.print_notes(result.get("notes", []), console)

