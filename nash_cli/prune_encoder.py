"""The prune-encoder stage: L0 masks on encoder heads and FFN units, trained under a Lagrangian.

The training loop is `distill`'s engine; this module adds what pruning needs through the
engine's extension interface (`nash_cli.train.extension`): the mask parameters and the
Lagrange multipliers (their own AdamW groups, the multipliers with a negative learning rate),
the Lagrangian term added to the loss and logged, the log_alpha clamp after every optimiser
step, resumable state, `masks.safetensors` in the output and the pruning results in the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nash_cli.errors import NashError
from nash_cli.l0 import L0Masks, Lagrangian, lagrangian_term, mask_sparsity, resolve_warmup, target_at
from nash_cli.masking import (
    MASKS_FILE,
    attach_l0,
    encoder_shape,
    non_embedding_params,
    pruned_params,
    save_masks,
    whole_model_sparsity,
)


@dataclass(frozen=True)
class PruneSettings:
    """The pruning options of `nash prune-encoder`."""

    target_sparsity: float = 0.3
    """Fraction of the encoder's prunable parameters (attention + FFN) to remove."""
    sparsity_warmup: float = 0.8
    """Steps over which the target rises linearly from 0; below 1, a fraction of the run's steps."""
    reg_lr: float = 0.01
    """Learning rate of the log_alphas and (negated, for gradient ascent) of lambda1 and lambda2."""
    droprate_init: float = 0.5
    """Initial drop rate p: log_alpha starts at N(log(1 - p) - log(p), 0.01)."""
    seed: int = 0
    """Seed of the log_alpha initialisation."""


def check_settings(settings: PruneSettings) -> None:
    """NashError for an impossible pruning option."""
    if not 0.0 < settings.target_sparsity < 1.0:
        raise NashError(f"--target-sparsity must be between 0 and 1 (e.g. 0.3), not {settings.target_sparsity}")
    if settings.sparsity_warmup < 0:
        raise NashError(f"--sparsity-warmup must be >= 0 (steps, or a fraction of training below 1), not {settings.sparsity_warmup}")
    if settings.reg_lr <= 0:
        raise NashError(f"--reg-lr must be positive (e.g. 0.01), not {settings.reg_lr}")
    if not 0.0 < settings.droprate_init < 1.0:
        raise NashError(f"--droprate-init must be between 0 and 1 (e.g. 0.5), not {settings.droprate_init}")


class L0Extension:
    """The training-engine extension that makes `distill` into `prune-encoder`.

    Implements `nash_cli.train.extension.TrainingExtension`.
    """

    name = "l0"

    def __init__(self, model, settings: PruneSettings, *, teacher_non_embedding: int | None = None) -> None:
        check_settings(settings)
        self.settings = settings
        self.shape = encoder_shape(model)
        generator = torch.Generator().manual_seed(settings.seed)
        self.masks = L0Masks(self.shape, settings.droprate_init, generator=generator)
        self.lagrangian = Lagrangian()
        self.hooks = None
        self.student_non_embedding = non_embedding_params(model)
        self.teacher_non_embedding = teacher_non_embedding
        self.warmup_steps: int | None = None
        self.total_steps: int | None = None
        self.last: dict[str, float] = {}

    # --- engine interface -------------------------------------------------------------------

    def prepare(self, model, device) -> None:
        """Moves the mask parameters to `device` and hooks them into the student's encoder."""
        self.masks.to(device)
        self.lagrangian.to(device)
        if self.hooks is not None:
            self.hooks.remove()
        self.hooks = attach_l0(model, self.masks)

    def param_groups(self) -> list[dict[str, Any]]:
        """log_alphas descend with reg_lr; lambda1 and lambda2 ascend (learning rate -reg_lr)."""
        lr = self.settings.reg_lr
        return [
            {"params": [self.masks.heads_log_alpha, self.masks.ffn_log_alpha], "lr": lr, "weight_decay": 0.0},
            {"params": [self.lagrangian.lambda1, self.lagrangian.lambda2], "lr": -lr, "weight_decay": 0.0},
        ]

    def target(self, step: int, total_steps: int) -> float:
        """The scheduled target sparsity at `step` of a `total_steps` run."""
        if self.total_steps != total_steps:
            self.total_steps = total_steps
            self.warmup_steps = resolve_warmup(self.settings.sparsity_warmup, total_steps)
        return target_at(step, self.settings.target_sparsity, self.warmup_steps)

    def loss(self, step: int, total_steps: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The Lagrangian term for this micro-batch and the values to log."""
        target = self.target(step, total_steps)
        expected = self.masks.expected_sparsity()
        term = lagrangian_term(expected, target, self.lagrangian.lambda1, self.lagrangian.lambda2)
        self.last = {
            "expected_sparsity": float(expected.detach()),
            "deterministic_sparsity": self.masks.deterministic_sparsity(),
            "target_sparsity": target,
            "lambda_1": float(self.lagrangian.lambda1.detach()),
            "lambda_2": float(self.lagrangian.lambda2.detach()),
            "lagrangian": float(term.detach()),
        }
        return term, dict(self.last)

    def after_optimizer_step(self, step: int) -> None:
        """Clamps log_alpha to [log 0.01, log 100]."""
        self.masks.clamp_()

    def state_dict(self) -> dict[str, Any]:
        return {
            "heads_log_alpha": self.masks.heads_log_alpha.detach().cpu().clone(),
            "ffn_log_alpha": self.masks.ffn_log_alpha.detach().cpu().clone(),
            "lambda1": self.lagrangian.lambda1.detach().cpu().clone(),
            "lambda2": self.lagrangian.lambda2.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.masks.heads_log_alpha.copy_(state["heads_log_alpha"])
            self.masks.ffn_log_alpha.copy_(state["ffn_log_alpha"])
            self.lagrangian.lambda1.copy_(state["lambda1"])
            self.lagrangian.lambda2.copy_(state["lambda2"])

    def extra_files(self) -> dict[str, Callable[[Path], None]]:
        return {MASKS_FILE: lambda directory: save_masks(directory / MASKS_FILE, self.masks, self.lagrangian)}

    def manifest_extra(self) -> dict[str, Any]:
        return {"prune_encoder": self.results()}

    # --- results ----------------------------------------------------------------------------

    def results(self) -> dict[str, Any]:
        """Target, achieved sparsity (expected and deterministic), whole-model sparsity, kept widths."""
        heads, ffn = self.masks.deterministic()
        removed = pruned_params(self.shape, heads, ffn)
        whole = None
        if self.teacher_non_embedding:
            whole = whole_model_sparsity(self.student_non_embedding, removed, self.teacher_non_embedding)
        return {
            "target_sparsity": self.settings.target_sparsity,
            "expected_sparsity": float(self.masks.expected_sparsity().detach()),
            "deterministic_sparsity": mask_sparsity(heads, ffn, self.shape),
            "whole_model_sparsity": whole,
            "heads_per_layer": [int(row.sum()) for row in heads],
            "ffn_units_per_layer": [int(row.sum()) for row in ffn],
            "num_heads": self.shape.num_heads,
            "d_ff": self.shape.d_ff,
            "prunable_params": self.shape.prunable_params,
            "pruned_params": removed,
            "student_non_embedding_params": self.student_non_embedding,
            "teacher_non_embedding_params": self.teacher_non_embedding,
            "sparsity_warmup_steps": self.warmup_steps,
            "reg_lr": self.settings.reg_lr,
            "droprate_init": self.settings.droprate_init,
            "lambda_1": float(self.lagrangian.lambda1.detach()),
            "lambda_2": float(self.lagrangian.lambda2.detach()),
        }


# --- the stage ------------------------------------------------------------------------------


def _reference_non_embedding(teacher, student_source: str) -> tuple[int | None, str | None]:
    """Non-embedding parameters of the full original teacher, and where they were counted.

    The paper's whole-model sparsity divides by the full teacher, so the lineage's root (the
    `teacher` in the student's nash.json, the model select-layers started from) is preferred;
    its config is enough (the model is built on the meta device). Otherwise the `--teacher`.
    """
    from nash_cli import artifact

    root = (artifact.read_manifest(student_source) or {}).get("teacher")
    if root and Path(root).is_dir() and (Path(root) / "config.json").is_file():
        try:
            config = artifact.load_config(root)
            from transformers import AutoModelForSeq2SeqLM

            with torch.device("meta"):
                model = AutoModelForSeq2SeqLM.from_config(config)
            return non_embedding_params(model), str(root)
        except NashError:
            pass
    if teacher is not None:
        return non_embedding_params(teacher), "--teacher"
    return None, None


def run_prune_encoder(
    student_source: str,
    *,
    teacher_source: str | None,
    output: Path,
    data,
    config,
    settings: PruneSettings,
    arguments: dict[str, Any],
    decoder_layer_map: str | None = None,
    encoder_layer_map: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Trains L0 masks on the student's encoder (with distillation) and writes a `masked` checkpoint.

    Every check that can fail on user input runs before training and before anything is written.

    Args:
        student_source: The student checkpoint (usually select-layers' output).
        teacher_source: The teacher to distil from, or None for cross-entropy only.
        output: The masked checkpoint to write.
        data: A `nash_cli.train.distill.DataSpec`.
        config: The engine's `TrainConfig`.
        settings: The pruning options.
        arguments: The command's arguments, for the manifest and run.json.

    Returns:
        The JSON-ready result (on every process; only the main process writes).
    """
    from nash_cli import artifact
    from nash_cli.train.distill import load_training_inputs
    from nash_cli.train.loop import train
    from nash_cli.train.outputs import save_output

    config.check()
    check_settings(settings)
    artifact.check_output(output, config.force)
    manifest = artifact.read_manifest(student_source) or {}
    if manifest.get("state", "dense") != "dense":
        raise NashError(
            f"{student_source} is a {manifest['state']} checkpoint; prune-encoder needs a dense student "
            "(e.g. the output of select-layers)"
        )
    student_config = artifact.load_config(student_source, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    if getattr(student_config, "encoder_heads", None) is not None:
        raise NashError(
            f"{student_source} is already compacted (per-layer widths); prune-encoder needs a dense student "
            "(e.g. the output of select-layers)"
        )
    inputs = load_training_inputs(
        student_source,
        teacher_source,
        data=data,
        config=config,
        decoder_layer_map=decoder_layer_map,
        encoder_layer_map=encoder_layer_map,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        student_config=student_config,
    )
    student, teacher, tokenizer = inputs.student, inputs.teacher, inputs.tokenizer
    train_features, eval_features = inputs.train_features, inputs.eval_features
    encoder, decoder, notes = inputs.encoder_layer_map, inputs.decoder_layer_map, inputs.notes
    reference, reference_origin = _reference_non_embedding(teacher, student_source)
    extension = L0Extension(student, settings, teacher_non_embedding=reference)

    result = train(
        config,
        student,
        train_features,
        pad_token_id=tokenizer.pad_token_id,
        teacher=teacher,
        eval_features=eval_features,
        encoder_layer_map=encoder,
        decoder_layer_map=decoder,
        extension=extension,
        run_info=arguments,
    )
    # The hooks made the model compute with masks; the saved weights are the plain trained
    # ones (masks go to masks.safetensors), so detach them before anything else uses the model.
    extension.hooks.remove()
    pruning = extension.results()
    pruning["whole_model_reference"] = reference_origin
    gap = pruning["deterministic_sparsity"] - settings.target_sparsity
    if abs(gap) > 0.01:
        notes.append(
            f"the deterministic masks remove {pruning['deterministic_sparsity']:.4f} of the encoder, "
            f"{gap:+.4f} from the target {settings.target_sparsity}: train longer (--epochs / --max-steps) or "
            "with a shorter --sparsity-warmup"
        )
    save_output(
        result,
        output,
        source=student_source,
        stage="prune-encoder",
        arguments=arguments,
        state="masked",
        extra={
            "prune_encoder": pruning,
            "teacher_checkpoint": str(Path(teacher_source).absolute())
            if teacher_source and artifact.is_local(teacher_source)
            else teacher_source,
        },
        extension=extension,
        force=config.force,
    )
    return {
        "output": str(output),
        "student": student_source,
        "teacher": teacher_source,
        **result.summary(),
        "pruning": pruning,
        "train_log": str(Path(output) / "train_log.jsonl"),
        "notes": notes + result.notes,
    }
