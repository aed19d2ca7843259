"""The training-engine extension that makes `distill` into `prune-encoder`.

It adds what pruning needs through `nash_cli.train.extension`: the mask parameters and the
Lagrange multipliers (their own AdamW groups, the multipliers with a negative learning rate),
the Lagrangian term added to the loss and logged, the log_alpha clamp after every optimiser
step, resumable state, `masks.safetensors` in the output and the pruning results in the manifest.
The maths is `nash_cli.l0`; where masks act is `nash_cli.masking`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nash_cli.l0 import (
    L0Masks,
    Lagrangian,
    drop_counts_for_target,
    expected_drops,
    lagrangian_term,
    mask_sparsity,
    masks_for_target,
    max_uniform_heads_sparsity,
    resolve_warmup,
    target_at,
)
from nash_cli.errors import NashError
from nash_cli.masking import MASKS_FILE, attach_l0, encoder_shape, pruned_params, save_masks, whole_model_sparsity
from nash_cli.train.config import PruneSettings, TrainConfig


class L0Extension:
    """The training-engine extension that makes `distill` into `prune-encoder`.

    Implements `nash_cli.train.extension.TrainingExtension`.
    """

    name = "l0"

    def __init__(
        self, model, settings: PruneSettings, *, teacher_non_embedding: int | None = None, seed: int = TrainConfig.seed
    ) -> None:
        from nash_cli.arch import count_parameters

        settings.check()
        self.settings = settings
        self.shape = encoder_shape(model)
        check_structure(settings, self.shape)
        generator = torch.Generator().manual_seed(seed)
        self.masks = L0Masks(self.shape, settings.droprate_init, generator=generator)
        self.lagrangian = Lagrangian()
        self.hooks = None
        self.student_non_embedding = count_parameters(model)["non_embedding"]
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
        return {
            MASKS_FILE: lambda directory: save_masks(
                directory / MASKS_FILE, self.masks, self.lagrangian, final=self.final_masks()
            )
        }

    def manifest_extra(self) -> dict[str, Any]:
        return {"prune_encoder": self.results()}

    # --- results ----------------------------------------------------------------------------

    def final_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The output's masks (what compact removes), from the current log_alphas.

        The Lagrangian's deterministic masks when they are within 0.01 of the target; otherwise
        the masks ranked by log_alpha to meet it (`nash_cli.l0.masks_for_target`). The engine has
        restored the log_alphas of the weights it outputs (`--keep best`, `--resume`) by now.
        """
        return masks_for_target(
            self.masks.heads_log_alpha, self.masks.ffn_log_alpha, self.shape, self.settings.target_sparsity,
            **self.structure(),
        )

    def structure(self) -> dict[str, Any]:
        """The constraint the final masks meet: `uniform_heads`, `ffn_multiple_of`."""
        return {"uniform_heads": self.settings.uniform_heads, "ffn_multiple_of": self.settings.ffn_multiple_of}

    def results(self) -> dict[str, Any]:
        """Target, achieved sparsity (expected, Lagrangian's, final), whole-model sparsity, kept widths.

        Everything but `expected_sparsity` and `lagrangian_sparsity` describes the final masks.
        """
        lagrangian_heads, lagrangian_ffn = self.masks.deterministic()
        heads, ffn = self.final_masks()
        own = torch.equal(heads, lagrangian_heads) and torch.equal(ffn, lagrangian_ffn)
        # the per-layer counts the final masks were rounded from: the distribution's own (the
        # Lagrangian's masks round them), or those the fall-back met the target with
        heads_log_alpha, ffn_log_alpha = self.masks.heads_log_alpha, self.masks.ffn_log_alpha
        structure = self.structure()
        structured = structure["uniform_heads"] or structure["ffn_multiple_of"] > 1
        shift = ffn_shift = 0.0
        if not own:
            counts = drop_counts_for_target(
                heads_log_alpha, ffn_log_alpha, self.shape, self.settings.target_sparsity, **structure
            )
            shift = counts.shift
            # uniform heads: the FFN's counts were rounded from their own shift (see l0)
            ffn_shift = counts.ffn_shift if structure["uniform_heads"] else shift
        removed = pruned_params(self.shape, heads, ffn)
        whole = None
        if self.teacher_non_embedding:
            whole = whole_model_sparsity(self.student_non_embedding, removed, self.teacher_non_embedding)
        return {
            "target_sparsity": self.settings.target_sparsity,
            "expected_sparsity": float(self.masks.expected_sparsity().detach()),
            "lagrangian_sparsity": mask_sparsity(lagrangian_heads, lagrangian_ffn, self.shape),
            "deterministic_sparsity": mask_sparsity(heads, ffn, self.shape),
            "mask_selection": "lagrangian" if own else ("structured" if structured else "ranked_to_target"),
            "structure": structure,
            "whole_model_sparsity": whole,
            "heads_per_layer": [int(row.sum()) for row in heads],
            "ffn_units_per_layer": [int(row.sum()) for row in ffn],
            "expected_heads_dropped_per_layer": [round(n, 6) for n in expected_drops(heads_log_alpha, shift).tolist()],
            "expected_ffn_units_dropped_per_layer": [round(n, 6) for n in expected_drops(ffn_log_alpha, ffn_shift).tolist()],
            "log_alpha_shift": shift,
            "ffn_log_alpha_shift": ffn_shift,
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


def check_structure(settings: PruneSettings, shape) -> None:
    """NashError, before training, for a structure this encoder cannot have: uniform heads with a
    target that leaves no head in any layer. (An FFN multiple above the FFN width is allowed: each
    layer then keeps all its units or none.)"""
    if settings.uniform_heads and settings.target_sparsity > max_uniform_heads_sparsity(shape):
        raise NashError(
            f"--target-sparsity {settings.target_sparsity} leaves no attention head: with the same number of heads "
            f"in every layer (--uniform-heads) the encoder keeps at least one per layer, at most sparsity "
            f"{max_uniform_heads_sparsity(shape):.4f}; lower the target or pass --no-uniform-heads"
        )
