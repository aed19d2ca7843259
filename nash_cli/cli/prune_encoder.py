"""`nash prune-encoder`: L0 masks on the encoder's heads and FFN units, trained to a target sparsity."""

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
from nash_cli.stages.prune_encoder import PruneEncoderOptions as Options

_PRUNE = "Pruning"


def command(
    student: Annotated[str, typer.Argument(help="Dense student to prune (e.g. the output of select-layers): a local directory, or a hub id where online.")],
    data: DataOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the masked checkpoint to (then: nash compact).")],
    teacher: Annotated[
        Optional[str],
        typer.Option("--teacher", help="Teacher checkpoint to distil from (the paper: the full fine-tuned model); without it, cross-entropy only.", rich_help_panel=OBJECTIVE),
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
    target_sparsity: Annotated[
        float,
        typer.Option("--target-sparsity", help="Fraction of the encoder's attention + FFN parameters to remove.", rich_help_panel=_PRUNE),
    ] = Options.target_sparsity,
    sparsity_warmup: Annotated[
        float,
        typer.Option(
            "--sparsity-warmup",
            help="Steps over which the target rises linearly from 0; a value below 1 is a fraction of the run.",
            rich_help_panel=_PRUNE,
        ),
    ] = Options.sparsity_warmup,
    reg_lr: Annotated[
        float,
        typer.Option("--reg-lr", help="Learning rate of the mask log_alphas and (ascending) of lambda1, lambda2.", rich_help_panel=_PRUNE),
    ] = Options.reg_lr,
    droprate_init: Annotated[
        float,
        typer.Option("--droprate-init", help="Initial drop rate p of every mask: log_alpha ~ N(log((1-p)/p), 0.01).", rich_help_panel=_PRUNE),
    ] = Options.droprate_init,
    uniform_heads: Annotated[
        bool,
        typer.Option(
            "--uniform-heads/--no-uniform-heads",
            help="Keep the same number of heads in every encoder layer (chosen from the log_alphas), so CTranslate2 runs the encoder without zero heads.",
            rich_help_panel=_PRUNE,
        ),
    ] = Options.uniform_heads,
    ffn_multiple_of: Annotated[
        int,
        typer.Option(
            "--ffn-multiple-of",
            help="Round each encoder layer's kept FFN width to a multiple of this (1: off); 64 suits CPU engines.",
            rich_help_panel=_PRUNE,
        ),
    ] = Options.ffn_multiple_of,
    epochs: EpochsOption = Options.epochs,
    max_steps: MaxStepsOption = Options.max_steps,
    batch_size: BatchSizeOption = Options.batch_size,
    grad_accum: GradAccumOption = Options.grad_accum,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate of the model (AdamW); the reference prunes with 3e-5.", rich_help_panel=TRAIN)] = Options.lr,
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
        str, typer.Option("--keep", help="With --eval-data: output the last step (default: it has the target sparsity) or the best by eval loss.", rich_help_panel=RUN)
    ] = Options.keep,
    resume: ResumeOption = Options.resume,
    threads: ThreadsOption = Options.threads,
    force: ForceOption = Options.force,
    allow_pickle: AllowPickleOption = Options.allow_pickle,
    trust_remote_code: TrustRemoteCodeOption = Options.trust_remote_code,
    json_output: JsonOption = False,
) -> None:
    """Train L0 masks on every encoder head and FFN unit to a target sparsity, with distillation.

    The loss is distill's objective plus the Lagrangian lambda1 (s - t) + lambda2 (s - t)^2 on the expected encoder sparsity s. Writes a masked checkpoint (weights + masks.safetensors) for nash compact. Every distill flag works here too (resume, accelerate, logs).
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
        target_sparsity=target_sparsity,
        sparsity_warmup=sparsity_warmup,
        reg_lr=reg_lr,
        droprate_init=droprate_init,
        uniform_heads=uniform_heads,
        ffn_multiple_of=ffn_multiple_of,
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

    from nash_cli.stages.prune_encoder import run

    _common.run_training_stage(run, options, json_output, print_result)


def print_result(result: dict, console) -> None:
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
    selection = {"ranked_to_target": " (ranked by log_alpha)", "lagrangian": " (Lagrangian's masks)",
                 "structured": " (ranked by log_alpha, engine structure)"}.get(
        pruning.get("mask_selection"), ""
    )
    table.add_row(f"final sparsity{selection}", f"{pruning['deterministic_sparsity']:.4f}")
    if pruning.get("whole_model_sparsity") is not None:
        table.add_row("whole-model sparsity (vs teacher)", f"{pruning['whole_model_sparsity']:.4f}")
    structure = pruning.get("structure") or {}
    if structure:
        table.add_row(
            "structure",
            f"uniform heads {'on' if structure['uniform_heads'] else 'off'}, FFN multiple of {structure['ffn_multiple_of']}",
        )
    table.add_row("output weights", result["selected"])
    console.print(table)
    layers = Table(title="encoder layers (final masks)", show_header=True)
    layers.add_column("layer", justify="right")
    layers.add_column("heads kept", justify="right")
    layers.add_column("FFN units kept", justify="right")
    for index, (heads, units) in enumerate(zip(pruning["heads_per_layer"], pruning["ffn_units_per_layer"])):
        layers.add_row(str(index), f"{heads}/{pruning['num_heads']}", f"{units}/{pruning['d_ff']}")
    console.print(layers)
    _common.print_notes(result.get("notes", []), console)

