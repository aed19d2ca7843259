"""`nash prune-encoder`: L0 masks on the encoder's heads and FFN units, trained to a target sparsity."""

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

_PRUNE = "Pruning"


def command(
    student: Annotated[str, typer.Argument(help="Dense student to prune (e.g. the output of select-layers): a local directory, or a hub id where online.")],
    data: DataOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the masked checkpoint to (then: nash compact).")],
    teacher: Annotated[
        Optional[str],
        typer.Option("--teacher", help="Teacher checkpoint to distil from (the paper: the full fine-tuned model); without it, cross-entropy only.", rich_help_panel=OBJECTIVE),
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
    target_sparsity: Annotated[
        float,
        typer.Option("--target-sparsity", help="Fraction of the encoder's attention + FFN parameters to remove.", rich_help_panel=_PRUNE),
    ] = 0.3,
    sparsity_warmup: Annotated[
        float,
        typer.Option(
            "--sparsity-warmup",
            help="Steps over which the target rises linearly from 0; a value below 1 is a fraction of the run.",
            rich_help_panel=_PRUNE,
        ),
    ] = 0.8,
    reg_lr: Annotated[
        float,
        typer.Option("--reg-lr", help="Learning rate of the mask log_alphas and (ascending) of lambda1, lambda2.", rich_help_panel=_PRUNE),
    ] = 0.01,
    droprate_init: Annotated[
        float,
        typer.Option("--droprate-init", help="Initial drop rate p of every mask: log_alpha ~ N(log((1-p)/p), 0.01).", rich_help_panel=_PRUNE),
    ] = 0.5,
    epochs: EpochsOption = 3,
    max_steps: MaxStepsOption = None,
    batch_size: BatchSizeOption = 4,
    grad_accum: GradAccumOption = 1,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate of the model (AdamW); the reference prunes with 3e-5.", rich_help_panel=TRAIN)] = 3e-5,
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
        str, typer.Option("--keep", help="With --eval-data: output the last step (default: it has the target sparsity) or the best by eval loss.", rich_help_panel=RUN)
    ] = "last",
    resume: ResumeOption = False,
    force: ForceOption = False,
    allow_pickle: AllowPickleOption = False,
    trust_remote_code: TrustRemoteCodeOption = False,
    json_output: JsonOption = False,
) -> None:
    """Train L0 masks on every encoder head and FFN unit to a target sparsity, with distillation.

    The loss is distill's objective plus the Lagrangian lambda1 (s - t) + lambda2 (s - t)^2 on the expected encoder sparsity s. Writes a masked checkpoint (weights + masks.safetensors) for nash compact. Every distill flag works here too (resume, accelerate, logs).
    """
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}

    from nash_cli.prune_encoder import PruneSettings, run_prune_encoder

    config = train_config(arguments, output)
    spec = data_spec(arguments)
    settings = PruneSettings(
        target_sparsity=target_sparsity,
        sparsity_warmup=sparsity_warmup,
        reg_lr=reg_lr,
        droprate_init=droprate_init,
        seed=seed,
    )
    result = run_prune_encoder(
        student,
        teacher_source=teacher,
        output=output,
        data=spec,
        config=config,
        settings=settings,
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
        print_summary(result, _common.stdout)


def print_summary(result: dict, console) -> None:
    """Training summary, achieved sparsity (the Lagrangian's masks and the final ones) and the kept
    heads and FFN units per encoder layer (final masks)."""
    from rich.table import Table

    pruning = result["pruning"]
    table = Table(title=f"prune-encoder -> {result['output']}", show_header=True)
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("steps", f"{result['steps']} ({result['epochs']:.2f} epochs, global batch {result['global_batch_size']})")
    for name, value in (result.get("final_train") or {}).items():
        table.add_row(f"train {name.replace('_', ' ')}", f"{value:.4f}")
    for name, value in (result.get("eval") or {}).items():
        table.add_row(name.replace("_", " "), f"{value:.4f}")
    table.add_row("target sparsity", f"{pruning['target_sparsity']:.4f}")
    table.add_row("expected sparsity", f"{pruning['expected_sparsity']:.4f}")
    if pruning.get("lagrangian_sparsity") is not None:
        table.add_row("Lagrangian's sparsity", f"{pruning['lagrangian_sparsity']:.4f}")
    selection = {"ranked_to_target": " (ranked by log_alpha)", "lagrangian": " (Lagrangian's masks)"}.get(
        pruning.get("mask_selection"), ""
    )
    table.add_row(f"final sparsity{selection}", f"{pruning['deterministic_sparsity']:.4f}")
    if pruning.get("whole_model_sparsity") is not None:
        table.add_row("whole-model sparsity (vs teacher)", f"{pruning['whole_model_sparsity']:.4f}")
    table.add_row("output weights", result["selected"])
    console.print(table)
    layers = Table(title="encoder layers (final masks)", show_header=True)
    layers.add_column("layer", justify="right")
    layers.add_column("heads kept", justify="right")
    layers.add_column("FFN units kept", justify="right")
    for index, (heads, units) in enumerate(zip(pruning["heads_per_layer"], pruning["ffn_units_per_layer"])):
        layers.add_row(str(index), f"{heads}/{pruning['num_heads']}", f"{units}/{pruning['d_ff']}")
    console.print(layers)
    for note in result.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
