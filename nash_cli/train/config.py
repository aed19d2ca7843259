"""The settings of a training run (and of the pruning it may carry) and what it returns.

`TrainConfig` holds the hyperparameters every training stage shares (`distill`, `prune-encoder`
and a recipe's `finetune_teacher`); the stages' options extend it, so each default is declared
here once. `TrainResult` is what the loop hands to `nash_cli.train.outputs.save_output`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nash_cli.errors import NashError, require_at_least, require_finite_options, require_seed


@dataclass(kw_only=True)
class TrainConfig:
    """Hyperparameters and bookkeeping of one training run (the CLI flags of `distill`)."""

    output: Path
    """Final checkpoint directory; resumable state goes to `<output>.partial/`."""
    epochs: int = 3
    """Passes over the training data (ignored when `max_steps` is set)."""
    max_steps: int | None = None
    """Optimiser steps to take in all; overrides `epochs`."""
    batch_size: int = 4
    """Examples per process per micro-batch (the paper: 4)."""
    grad_accum: int = 1
    """Micro-batches per optimiser step; global batch = batch_size * grad_accum * processes."""
    lr: float = 3e-4
    """Peak learning rate of the model's parameters (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and layer norms)."""
    warmup_steps: int = 0
    """Steps of linear warm-up from 0 to `lr`; then linear decay to 0 at the last step."""
    max_grad_norm: float = 1.0
    """Clip the model's gradient norm to this; 0 disables clipping."""
    seed: int = 42
    """Seeds data order, dropout and anything else random."""
    temperature: float = 2.0
    """Distillation temperature T of the KL term."""
    alpha_ce: float = 0.5
    """Weight of the cross-entropy to the labels when a teacher is given (1 without one)."""
    alpha_kd: float = 1.0
    """Weight of T^2 * KL_T(teacher || student)."""
    alpha_enc: float = 0.001
    """Weight of the encoder hidden-state MSE (0 turns it off)."""
    alpha_dec: float = 0.001
    """Weight of the decoder hidden-state MSE (0 turns it off)."""
    freeze_embeddings: bool = False
    """Keep the token embeddings fixed (a tied lm_head is then fixed too)."""
    save_every: int = 500
    """Write a resumable state every this many optimiser steps (0: never)."""
    eval_every: int | None = None
    """Evaluate every this many steps; default: at the end of every epoch. Always at the end."""
    log_every: int = 10
    """Write a train_log.jsonl line (means over the window) every this many steps."""
    keep: Literal["best", "last"] = "best"
    """With eval data: output the best checkpoint by eval loss, or the last one."""
    resume: bool = False
    """Continue from the newest state in `<output>.partial/`."""
    force: bool = False
    """Replace an existing output, and discard an interrupted run's state when not resuming."""
    mixed_precision: str | None = None
    """"no", "fp16" or "bf16"; None defers to accelerate's config / launcher."""
    show_progress: bool = True
    """Report progress on stderr (main process only): a Rich bar on a terminal, else a plain
    line every `log_every` steps (see `nash_cli.progress`)."""

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimiser steps of the whole run."""
        return self.max_steps if self.max_steps is not None else self.epochs * steps_per_epoch

    def check(self) -> None:
        """Raises NashError for impossible settings; call it before any heavy work."""
        require_finite_options(self)
        require_seed("--seed", self.seed)
        for name in ("batch_size", "grad_accum", "log_every"):
            require_at_least(f"--{name.replace('_', '-')}", getattr(self, name))
        require_at_least("--max-steps", self.max_steps)
        if self.max_steps is None:  # --max-steps overrides --epochs
            require_at_least("--epochs", self.epochs)
        if not self.lr > 0:
            raise NashError(f"--lr must be positive, got {self.lr}")
        if not self.temperature > 0:
            raise NashError(f"--temperature must be positive, got {self.temperature}")
        for name in ("alpha_ce", "alpha_kd", "alpha_enc", "alpha_dec", "weight_decay", "max_grad_norm"):
            if not getattr(self, name) >= 0:
                raise NashError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.save_every < 0:
            raise NashError(f"--save-every must be 0 (never) or more, got {self.save_every}")
        if self.warmup_steps < 0:
            raise NashError(f"--warmup-steps must not be negative, got {self.warmup_steps}")
        require_at_least("--eval-every", self.eval_every)
        if self.keep not in ("best", "last"):
            raise NashError(f"--keep must be best or last, not {self.keep!r}")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise NashError(f"--mixed-precision must be no, fp16 or bf16, not {self.mixed_precision!r}")


@dataclass
class TrainResult:
    """What a training run produced; `save_output` writes it."""

    model: Any
    """The unwrapped student holding the selected weights (best or last)."""
    steps: int
    """Optimiser steps completed."""
    epochs: float
    """Passes over the training data completed."""
    train: dict[str, float]
    """Mean loss terms of the last logging window."""
    eval: dict[str, float] | None
    """The last evaluation (eval_ce, eval_kl, eval_loss), if there is eval data."""
    best: dict[str, Any] | None
    """{"step", "eval_loss"} of the best evaluation, if any."""
    selected: str
    """"best" or "last": which weights `model` holds."""
    resumed_from: int | None
    """The step the run resumed from, or None."""
    seconds: float
    """Wall-clock time of this process's training loop."""
    steps_per_second: float
    """Optimiser steps per second over this invocation."""
    partial: Path
    """The run's staging directory (log and states)."""
    objective: dict[str, Any]
    """The objective as run: weights, temperature, layer maps."""
    global_batch_size: int
    """Examples per optimiser step, over all processes."""
    examples: int
    """Training examples."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know (frozen tied lm_head, skipped hidden loss, changed flags)."""
    accelerator: Any = None
    """The accelerate.Accelerator the run used."""

    @property
    def is_main_process(self) -> bool:
        """True on the process that writes files and prints."""
        return self.accelerator is None or self.accelerator.is_main_process

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary for the CLI result and the manifest."""
        return {
            "steps": self.steps,
            "epochs": round(self.epochs, 4),
            "examples": self.examples,
            "global_batch_size": self.global_batch_size,
            "processes": self.accelerator.num_processes if self.accelerator is not None else 1,
            "final_train": self.train,
            "eval": self.eval,
            "best": self.best,
            "selected": self.selected,
            "resumed_from": self.resumed_from,
            "seconds": round(self.seconds, 3),
            "steps_per_second": round(self.steps_per_second, 4),
            "objective": self.objective,
        }


@dataclass(kw_only=True)
class PruneSettings:
    """The pruning options of `nash prune-encoder` (the log_alpha initialisation uses the run's seed)."""

    target_sparsity: float = 0.3
    """Fraction of the encoder's prunable parameters (attention + FFN) to remove."""
    sparsity_warmup: float = 0.8
    """Steps over which the target rises linearly from 0; below 1, a fraction of the run's steps."""
    reg_lr: float = 0.01
    """Learning rate of the log_alphas and (negated, for gradient ascent) of lambda1 and lambda2."""
    droprate_init: float = 0.5
    """Initial drop rate p: log_alpha starts at N(log(1 - p) - log(p), 0.01)."""
    uniform_heads: bool = True
    """The final masks keep the same number of heads in every encoder layer (chosen from the
    log_alphas), so CTranslate2, which has one head count per stack, runs the encoder narrow
    instead of padding it with zero heads (docs/prune-encoder.md, "An encoder the engine runs narrow")."""
    ffn_multiple_of: int = 64
    """The final masks keep FFN widths that are multiples of this (or the full width); 1 turns it
    off. Widths that are multiples of 64 run faster per unit on CPU engines."""

    def check(self) -> None:
        """NashError for an impossible pruning option."""
        require_finite_options(self)
        if isinstance(self.ffn_multiple_of, bool) or not isinstance(self.ffn_multiple_of, int) or self.ffn_multiple_of < 1:
            raise NashError(
                f"--ffn-multiple-of must be a positive whole number (64 aligns FFN widths for the engine, 1 turns it off), "
                f"not {self.ffn_multiple_of!r}"
            )
        if not 0.0 < self.target_sparsity < 1.0:
            raise NashError(f"--target-sparsity must be between 0 and 1 (e.g. 0.3), not {self.target_sparsity}")
        if self.sparsity_warmup < 0:
            raise NashError(f"--sparsity-warmup must be >= 0 (steps, or a fraction of training below 1), not {self.sparsity_warmup}")
        if self.reg_lr <= 0:
            raise NashError(f"--reg-lr must be positive (e.g. 0.01), not {self.reg_lr}")
        if not 0.0 < self.droprate_init < 1.0:
            raise NashError(f"--droprate-init must be between 0 and 1 (e.g. 0.5), not {self.droprate_init}")
