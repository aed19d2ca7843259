"""`nash distill`: train a student against a teacher (or fine-tune it alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nash_cli.cli._train_options import (
    OBJECTIVE,
    RUN,
    TRAIN,
    AllowPickleOption,
    AlphaCeOption,
    AlphaDecOption,
    AlphaEncOption,
    AlphaKdOption,
    BatchSizeOption,
    DecoderLayerMapOption,
    EncoderLayerMapOption,
    EpochsOption,
    EvalEveryOption,
    ForceOption,
    FreezeEmbeddingsOption,
    GradAccumOption,
    JsonOption,
    LogEveryOption,
    MaxGradNormOption,
    MaxStepsOption,
    MixedPrecisionOption,
    ResumeOption,
    SaveEveryOption,
    SeedOption,
    TemperatureOption,
    TrustRemoteCodeOption,
    WarmupStepsOption,
    WeightDecayOption,
    data_spec,
    train_config,
)
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



def command(
    student: Annotated[str, typer.Argument(help="Student checkpoint to train: a local directory, or a hub id where online.")],
    data: DataOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the trained student to.")],
    teacher: Annotated[
        Optional[str],
        typer.Option("--teacher", help="Teacher checkpoint to distil from; without it, plain fine-tuning (cross-entropy).", rich_help_panel=OBJECTIVE),
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
    epochs: EpochsOption = 3,
    max_steps: MaxStepsOption = None,
    batch_size: BatchSizeOption = 4,
    grad_accum: GradAccumOption = 1,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", rich_help_panel=TRAIN)] = 3e-4,
    weight_decay: WeightDecayOption = 0.0,
    warmup_steps: WarmupStepsOption = 0,
    max_grad_norm: MaxGradNormOption = 1.0,
    seed: SeedOption = 42,
    freeze_embeddings: FreezeEmbeddingsOption = False,
    mixed_precision: MixedPrecisionOption = None,
    temperature: TemperatureOption = 2.0,
    alpha_ce: AlphaCeOption = 0.5,
    alpha_kd: AlphaKdOption = 1.0,
    alpha_enc: AlphaEncOption = 0.001,
    alpha_dec: AlphaDecOption = 0.001,
    decoder_layer_map: DecoderLayerMapOption = None,
    encoder_layer_map: EncoderLayerMapOption = None,
    save_every: SaveEveryOption = 500,
    eval_every: EvalEveryOption = None,
    log_every: LogEveryOption = 10,
    keep: Annotated[
        str, typer.Option("--keep", help="With --eval-data: output the best checkpoint by eval loss, or the last.", rich_help_panel=RUN)
    ] = "best",
    resume: ResumeOption = False,
    force: ForceOption = False,
    allow_pickle: AllowPickleOption = False,
    trust_remote_code: TrustRemoteCodeOption = False,
    json_output: JsonOption = False,
) -> None:
    """Distil a student from a teacher (CE + T^2 KL + hidden-state MSE), or fine-tune it without one.

    Runs on CPU, one GPU, or many processes (accelerate launch / torchrun -m nash_cli distill ...);
    --resume continues an interrupted run.
    """
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}

    from nash_cli.train.distill import run_distill

    config = train_config(arguments, output)
    spec = data_spec(arguments)
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

    from nash_cli.train.processes import is_main_process

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
