"""`prune-encoder`: L0 masks on encoder heads and FFN units, trained under a Lagrangian.

The training loop is `distill`'s; what pruning adds (mask parameters, Lagrange multipliers, the
Lagrangian term, the clamp, resumable state, `masks.safetensors`) is the engine extension
`nash_cli.train.l0_extension.L0Extension`. The output is a `masked` checkpoint for `compact`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nash_cli.artifact import releases_outputs
from nash_cli.errors import NashError, require_at_least
from nash_cli.stages import Stage, arguments, declare
from nash_cli.stages.distill import TrainingStageResult
from nash_cli.threads import use_threads
from nash_cli.train.config import PruneSettings
from nash_cli.train.inputs import TrainingOptions


@dataclass(kw_only=True)
class PruneEncoderOptions(TrainingOptions, PruneSettings):
    """What `nash prune-encoder` does: every training option plus the pruning settings."""

    lr: float = 3e-5
    """Peak learning rate of the model (AdamW); the reference prunes with 3e-5."""
    keep: Literal["best", "last"] = "last"
    """With eval data: output the last step (it has the target sparsity) or the best by eval loss."""
    threads: int | None = None
    """CPU threads for torch (default: `OMP_NUM_THREADS`, else torch's, one per core); on a machine
    shared with other jobs, 1 per job."""

    def check(self) -> None:
        """NashError for an impossible training or pruning option."""
        TrainingOptions.check(self)
        PruneSettings.check(self)
        require_at_least("--threads", self.threads)


# --- the stage ------------------------------------------------------------------------------


def _reference_non_embedding(teacher, student_manifest: dict) -> tuple[int | None, str | None]:
    """Non-embedding parameters of the full original teacher, and where they were counted.

    The paper's whole-model sparsity divides by the full teacher, so the lineage's root (the
    `teacher` in the student's nash.json, the model select-layers started from) is preferred;
    its config is enough (the model is built on the meta device). Otherwise the `--teacher`.
    """
    from nash_cli import artifact
    from nash_cli.arch import count_parameters

    root = student_manifest.get("teacher")
    if root and Path(root).is_dir() and (Path(root) / "config.json").is_file():
        try:
            config = artifact.load_config(root)
            from transformers import AutoModelForSeq2SeqLM

            import torch

            with torch.device("meta"):
                model = AutoModelForSeq2SeqLM.from_config(config)
            return count_parameters(model)["non_embedding"], str(root)
        except NashError:
            pass
    if teacher is not None:
        return count_parameters(teacher)["non_embedding"], "--teacher"
    return None, None


def structure_note(pruning: dict) -> str:
    """One line on the masks chosen under the engine structure (`mask_selection: structured`)."""
    structure = pruning["structure"]
    parts = []
    if structure["uniform_heads"]:
        parts.append(f"{pruning['heads_per_layer'][0]} of {pruning['num_heads']} heads in every encoder layer")
    if structure["ffn_multiple_of"] > 1:
        parts.append(f"FFN widths that are multiples of {structure['ffn_multiple_of']}")
    return (
        f"the final masks keep {' and '.join(parts)}, ranked by log_alpha (CTranslate2 then runs the encoder without "
        f"padding): sparsity {pruning['deterministic_sparsity']:.4f}, the Lagrangian's own masks "
        f"{pruning['lagrangian_sparsity']:.4f}"
    )


@releases_outputs
def run(options: PruneEncoderOptions, *, progress=None) -> TrainingStageResult:
    """Trains L0 masks on the student's encoder (with distillation) and writes a `masked` checkpoint.

    Every check that can fail on user input runs before training and before anything is written.

    Args:
        options: The stage's options (the student is usually select-layers' output).
        progress: A `nash_cli.progress` reporter for the training steps.

    Returns:
        The result, on every process (only the main process writes).
    """
    from nash_cli import artifact
    from nash_cli.train.outputs import save_output
    from nash_cli.train.inputs import load_training_inputs, teacher_reference, train_with
    from nash_cli.train.l0_extension import L0Extension

    options.check()
    use_threads(options.threads)  # before any torch work: --threads, else OMP_NUM_THREADS
    artifact.check_output(
        options.output,
        options.force,
        inputs={"student": options.student, "teacher": options.teacher, "data": options.data, "eval data": options.eval_data},
    )
    artifact.check_partial(options.output)  # resumed from or removed below: only nash's own state
    inputs = load_training_inputs(options, STAGE)
    notes = inputs.notes
    reference, reference_origin = _reference_non_embedding(inputs.teacher, inputs.student_input.manifest)
    extension = L0Extension(inputs.student, options, teacher_non_embedding=reference, seed=options.seed)
    recorded = arguments(options)

    with artifact.disk_full_refused(artifact.partial_path(options.output), fix=artifact.TRAINING_DISK_FULL_FIX):
        result = train_with(
            options, inputs, run_info=recorded, extension=extension, progress=progress if progress is not None else "prune-encoder"
        )
    # The hooks made the model compute with masks; the saved weights are the plain trained
    # ones (masks go to masks.safetensors), so detach them before anything else uses the model.
    extension.hooks.remove()
    pruning = extension.results()
    pruning["whole_model_reference"] = reference_origin
    if pruning["mask_selection"] == "ranked_to_target":
        steps = result.best["step"] if result.selected == "best" and result.best else result.steps
        notes.append(
            f"the Lagrangian's masks removed {pruning['lagrangian_sparsity']:.3f} of the encoder after {steps} steps; "
            f"the final masks were chosen by log_alpha to remove {pruning['deterministic_sparsity']:.3f} "
            f"(target {options.target_sparsity}); train longer for masks the training chose itself"
        )
    if pruning["mask_selection"] == "structured":
        notes.append(structure_note(pruning))
    gap = pruning["deterministic_sparsity"] - options.target_sparsity
    if abs(gap) > 0.01 and pruning["mask_selection"] == "structured":
        notes.append(
            f"the final masks remove {pruning['deterministic_sparsity']:.4f} of the encoder, {gap:+.4f} from the "
            f"target {options.target_sparsity}: the structure's steps are too coarse for this encoder to come closer "
            f"(a smaller --ffn-multiple-of, or --no-uniform-heads, comes closer)"
        )
    elif abs(gap) > 0.01:
        notes.append(
            f"the final masks remove {pruning['deterministic_sparsity']:.4f} of the encoder, "
            f"{gap:+.4f} from the target {options.target_sparsity}: one head is "
            f"{extension.shape.params_per_head / extension.shape.prunable_params:.4f} of it, too coarse to come closer"
        )
    save_output(
        result,
        options.output,
        source=options.student,
        stage="prune-encoder",
        arguments=recorded,
        state="masked",
        extra={"prune_encoder": pruning, "teacher_checkpoint": teacher_reference(options)},
        extension=extension,
        force=options.force,
        dtypes=inputs.storage_dtypes,
        tokenizer_settings=inputs.languages.tokenizer_settings(),
    )
    return TrainingStageResult(
        output=str(options.output),
        student=options.student,
        teacher=options.teacher,
        training=result.summary(),
        notes=notes + result.notes,
        pruning=pruning,
    )


STAGE = declare(
    Stage(
        name="prune_encoder",
        command="prune-encoder",
        options=PruneEncoderOptions,
        run=run,
        order=30,
        reads=frozenset({"dense"}),
        refusal="prune-encoder needs a dense student, whose encoder is not pruned yet (select-layers' output of a dense teacher)",
        writes="masked",
        model_input="student",
        teacher_input="teacher",
        data="train",
    )
)
