"""How a stage adds its own parameters, loss and files to the training loop.

`distill` trains with the loop as it is. `prune-encoder` needs more: L0 mask parameters and
Lagrangian multipliers with their own learning rates (the multipliers with a negative one, i.e.
gradient ascent), a sparsity penalty added to the loss and logged, a clamp after every optimiser
step, their state saved with every resumable state, and a masks file in the final output. A
`TrainingExtension` carries exactly those, so the loop stays one loop.

The loop calls an extension's methods in this order:

1. `prepare(model, device)`: once, after the student is on its device and before the optimiser
   is built. Install forward hooks, move the extension's tensors to `device`, and (optionally)
   register the extension's modules as submodules of `model` so data-parallel wrapping covers them.
2. `param_groups()`: once; the groups are appended to the AdamW optimiser after the model's.
3. Every optimiser step, for every gradient-accumulation micro-batch: the student's forward
   pass (the extension's hooks run inside it), then `loss(step, total_steps)`, added to the
   distillation loss with weight 1 / accumulation steps.
4. `after_optimizer_step(step)`: after each optimiser step (`step` counts completed steps).
5. `state_dict()` whenever a resumable state or the best checkpoint is written, and
   `load_state_dict(state)` on `--resume` (and when the best checkpoint is restored at the end).
6. `extra_files()` and `manifest_extra()`: once, when the final output is written.

Gradients of extension parameters that live outside the (data-parallel wrapped) model are
averaged across processes by the loop before the optimiser step, like DDP does for the model.
Gradient clipping (`--max-grad-norm`) applies to the model's parameters only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn


@runtime_checkable
class TrainingExtension(Protocol):
    """Extra parameters, loss terms, state and output files for one training run."""

    name: str
    """Short name; the prefix of the extension's values in `train_log.jsonl` is up to `loss()`."""

    def prepare(self, model: nn.Module, device: torch.device) -> None:
        """Hooks into the (unwrapped) student and moves the extension's tensors to `device`."""

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups: `{"params": [...], "lr": float, "weight_decay": float, ...}`.

        `lr` may be negative: AdamW then ascends the loss for that group (Lagrangian
        multipliers). A group keeps a constant learning rate unless it sets `"scheduled": True`,
        in which case it follows the run's warm-up and linear decay like the model does.
        """

    def loss(self, step: int, total_steps: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The extra loss term for the current micro-batch, and plain floats to log.

        Args:
            step: Optimiser steps completed so far (0 at the first step).
            total_steps: Optimiser steps the run will take in all.

        Returns:
            A scalar tensor added to the loss (it may be a constant zero) and named values, such
            as `{"expected_sparsity": 0.12, "target_sparsity": 0.1, "lambda_1": 0.3}`, which
            are logged to `train_log.jsonl` beside the loop's own terms.
        """

    def after_optimizer_step(self, step: int) -> None:
        """Runs after every optimiser step (e.g. clamps log_alpha); `step` counts completed steps."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as tensors and plain Python values (saved with
        `torch.save` and read back with `weights_only=True`). Parameters the optimiser holds
        must be included: the loop restores the optimiser's moments, not the values."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` returned."""

    def extra_files(self) -> dict[str, Callable[[Path], None]]:
        """Files for the final output: name -> writer called with the output's staging directory."""

    def manifest_extra(self) -> dict[str, Any]:
        """Fields merged into the output's manifest (nash.json)."""


class BaseExtension:
    """A `TrainingExtension` that does nothing; subclass it and override what you need."""

    name = "extension"

    def prepare(self, model, device) -> None:  # noqa: D102
        return None

    def param_groups(self) -> list[dict[str, Any]]:  # noqa: D102
        return []

    def loss(self, step: int, total_steps: int):  # noqa: D102
        import torch

        return torch.zeros(()), {}

    def after_optimizer_step(self, step: int) -> None:  # noqa: D102
        return None

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        return None

    def extra_files(self) -> dict[str, Callable[[Path], None]]:  # noqa: D102
        return {}

    def manifest_extra(self) -> dict[str, Any]:  # noqa: D102
        return {}
