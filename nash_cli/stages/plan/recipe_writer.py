"""The `nash run` recipe `nash plan` writes for its recommendation.

The plan chooses the stages and what it measured (decoder layers, encoder sparsity, vocabulary,
engine, serving settings); every training setting it does not choose is the paper's, from
`PAPER`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nash_cli.stages.plan.candidates import STRUCTURE
from nash_cli.stages.plan.cost import Candidate, Workload

if TYPE_CHECKING:
    from nash_cli.stages.plan import PlanOptions


@dataclass(frozen=True)
class PaperHyperparameters:
    """NASH's training hyperparameters: the small-data column (SAMSum, TweetQA) of the paper's
    tables with the reference scripts' learning rates (docs/method.md, "Hyperparameters from the
    paper's tables"), as recipes/t5-base-samsum-nash3.yaml sets them."""

    epochs: int = 20
    """Epochs of pruning, and of the distillation after it."""
    sparsity_warmup: float = 0.8
    """Share of the pruning over which the target sparsity ramps up (16 of the 20 epochs)."""
    reg_lr: float = 0.01
    """Learning rate of the L0 log_alphas and the Lagrange multipliers."""
    prune_lr: float = 3.0e-5
    """The model's learning rate while pruning."""
    distill_lr: float = 3.0e-4
    """The model's learning rate in the distillation after pruning."""
    batch_size: int = 4
    """Examples per step, pruning and distillation alike."""
    alpha_enc: float = 0.001
    """Weight of the encoder hidden-state loss."""
    alpha_dec: float = 0.001
    """Weight of the decoder hidden-state loss."""

    def prune_encoder(self) -> dict[str, Any]:
        """The `prune_encoder` stage's settings besides its target sparsity, in recipe order."""
        return {"epochs": self.epochs, "sparsity_warmup": self.sparsity_warmup, "reg_lr": self.reg_lr,
                "lr": self.prune_lr, "batch_size": self.batch_size, "alpha_enc": self.alpha_enc,
                "alpha_dec": self.alpha_dec}

    def distill(self) -> dict[str, Any]:
        """The `distill` stage's settings, in recipe order."""
        return {"epochs": self.epochs, "lr": self.distill_lr, "batch_size": self.batch_size,
                "alpha_enc": self.alpha_enc, "alpha_dec": self.alpha_dec}


#: The hyperparameters the plan's recipe writes (the only place they are set).
PAPER = PaperHyperparameters()


def recipe_text(options: PlanOptions, choice: Candidate, speedup: float, timed: bool, workload: Workload,
                family: str) -> str:
    """The `nash run` recipe for `choice`: the plan's teacher and data, the chosen stages and
    settings, and the paper's hyperparameters (`PAPER`) for the rest.

    Args:
        options: The plan's options (teacher, data, engine, serving settings).
        choice: The recommended candidate.
        speedup: Its speedup, as the plan states it.
        timed: Whether that speedup was measured (else predicted by the cost model).
        workload: The timed call, for the header.
        family: The teacher's architecture family (the recipe is the same for every family today).

    Returns:
        The recipe as YAML, with a comment header.
    """
    import yaml

    name = f"{Path(options.checkpoint.rstrip('/')).name or 'teacher'}-nash{choice.decoder_layers}".replace(" ", "-")
    data: dict[str, Any] = {"train": options.data or "train.jsonl"}
    for key in ("split", "source_column", "target_column", "source_template", "source_lang", "target_lang"):
        value = getattr(options, key)
        if value is not None:
            data["train_split" if key == "split" else key] = value
    if options.source_prefix:
        data["source_prefix"] = options.source_prefix
    data["max_source_length"] = options.max_source_length
    stages: dict[str, Any] = {"select_layers": {"decoder_layers": choice.decoder_layers}}
    if choice.encoder_sparsity > 0:
        # the structure the plan timed (candidates.STRUCTURE), named so the trained encoder has it
        stages["prune_encoder"] = {"target_sparsity": choice.encoder_sparsity, **PAPER.prune_encoder(), **STRUCTURE}
        stages["compact"] = {}
    stages["distill"] = PAPER.distill()
    if choice.vocab_size is not None and options.engine == "transformers":
        stages["prune_vocab"] = {"keep_source_tokens": True}
    if options.engine == "ctranslate2":
        stages["export"] = {"quantization": options.quantization}
        if choice.vocab_size is not None:
            stages["export"]["vocab_map"] = True
    bench = {"batch": options.batch, "beams": options.beams}
    if options.threads is not None:
        bench["threads"] = options.threads
    stages["bench"] = bench
    metric = ["bleu", "chrf"] if options.target_lang else ["rouge"]  # translation is scored as the field reports it
    stages["eval"] = {"metric": metric, "beams": options.beams}
    document = {
        "name": name,
        "description": f"nash plan: {choice.label}, {speedup:.2f}x {'measured' if timed else 'predicted'} (target {options.speedup:g}x)",
        "teacher": options.checkpoint,
        "data": data,
        "stages": stages,
    }
    header = [
        f"# Written by nash plan for a {options.speedup:g}x target ({options.engine}"
        + (f" {options.quantization}" if options.engine == "ctranslate2" else "") + f", batch {workload.batch}, "
        f"beams {workload.beams}, source {workload.source_length} tokens, {workload.new_tokens} new tokens).",
        f"# Chosen: {choice.label}: {speedup:.2f}x, {'measured' if timed else 'predicted by the cost model'}.",
        "# Hyperparameters: the paper's (as recipes/t5-base-*-nash3.yaml); set epochs for your data size.",
    ]
    if options.data is None:
        header.append("# data.train is a placeholder: point it at your training data (and eval at held-out data).")
    if choice.vocab_size is not None:
        header.append(
            f"# Vocabulary: the plan counted on restricting the output vocabulary to {choice.vocab_size:,} tokens"
            + (" (the export stage's vocabulary map, built from data.train)."
               if options.engine == "ctranslate2" else " (the prune_vocab stage).")
        )
    return "\n".join(header) + "\n" + yaml.safe_dump(document, sort_keys=False)
