"""The `nash run` recipe `nash plan` writes for its recommendation.

The plan chooses the stages and what it measured (decoder layers, encoder sparsity, vocabulary,
engine, serving settings); every training setting it does not choose is the paper's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nash_cli.stages.plan.cost import Candidate, Workload

if TYPE_CHECKING:
    from nash_cli.stages.plan import PlanOptions


#: The paper's hyperparameters (recipes/t5-base-*-nash3.yaml), written into the plan's recipe.
PAPER_PRUNE = {"epochs": 20, "sparsity_warmup": 0.8, "reg_lr": 0.01, "lr": 3.0e-5, "batch_size": 4,
               "alpha_enc": 0.001, "alpha_dec": 0.001}
PAPER_DISTILL = {"epochs": 20, "lr": 3.0e-4, "batch_size": 4, "alpha_enc": 0.001, "alpha_dec": 0.001}


def recipe_text(options: PlanOptions, choice: Candidate, speedup: float, timed: bool, workload: Workload,
                family: str) -> str:
    """The `nash run` recipe for `choice`: the plan's teacher and data, the chosen stages and
    settings, and the paper's hyperparameters for the rest.

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
    for key in ("split", "source_column", "target_column", "source_template"):
        value = getattr(options, key)
        if value is not None:
            data["train_split" if key == "split" else key] = value
    if options.source_prefix:
        data["source_prefix"] = options.source_prefix
    data["max_source_length"] = options.max_source_length
    stages: dict[str, Any] = {"select_layers": {"decoder_layers": choice.decoder_layers}}
    if choice.encoder_sparsity > 0:
        stages["prune_encoder"] = {"target_sparsity": choice.encoder_sparsity, **PAPER_PRUNE}
        stages["compact"] = {}
    stages["distill"] = dict(PAPER_DISTILL)
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
    stages["eval"] = {"metric": ["rouge"], "beams": options.beams}
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
