"""`distill`: train a student against a teacher (CE + T^2 KL + hidden-state MSE), or fine-tune it.

Without a teacher the loss is cross-entropy alone, which is how a recipe's `finetune_teacher`
stage fine-tunes the teacher first. Runs on CPU, one GPU, or many processes (`accelerate
launch` / `torchrun -m nash_cli distill ...`); `resume` continues an interrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nash_cli.artifact import releases_outputs
from nash_cli.errors import require_at_least
from nash_cli.stages import Stage, arguments, declare, output_state
from nash_cli.threads import use_threads
from nash_cli.train.inputs import TrainingOptions


@dataclass(kw_only=True)
class DistillOptions(TrainingOptions):
    """What `nash distill` does: every field of `TrainingOptions`, with its defaults."""

    threads: int | None = None
    """CPU threads for torch (default: `OMP_NUM_THREADS`, else torch's, one per core); on a machine
    shared with other jobs, 1 per job."""

    def check(self) -> None:
        """NashError for an impossible training option."""
        TrainingOptions.check(self)
        require_at_least("--threads", self.threads)


@dataclass
class TrainingStageResult:
    """What a training stage did (`distill`, `prune-encoder`)."""

    output: str
    """The written checkpoint."""
    student: str
    """The student it started from."""
    teacher: str | None
    """The teacher it distilled from, or None (fine-tuning)."""
    training: dict[str, Any]
    """`nash_cli.train.config.TrainResult.summary()`: steps, losses, eval, timing, objective."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know."""
    pruning: dict[str, Any] | None = None
    """prune-encoder only: target and achieved sparsity, kept heads and units per layer."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result (the training summary's keys at the top level)."""
        document = {"output": self.output, "student": self.student, "teacher": self.teacher, **self.training}
        if self.pruning is not None:
            document["pruning"] = self.pruning
        document["train_log"] = str(Path(self.output) / "train_log.jsonl")
        document["notes"] = list(self.notes)
        return document


@releases_outputs
def run(options: DistillOptions, *, progress=None) -> TrainingStageResult:
    """Distils (or, without a teacher, fine-tunes) the student and writes it to `options.output`.

    Args:
        options: The stage's options.
        progress: A `nash_cli.progress` reporter for the training steps (default: a Rich bar on
            a terminal, plain lines every `log_every` steps otherwise).

    Returns:
        The result, on every process (only the main process writes).

    Raises:
        NashError: bad options, data, checkpoints or layer maps; an existing output without
            `force`; an interrupted run without `resume` or `force`.
    """
    from nash_cli import artifact
    from nash_cli.train.inputs import load_training_inputs, teacher_reference, train_with
    from nash_cli.train.outputs import save_output

    options.check()
    use_threads(options.threads)  # before any torch work: --threads, else OMP_NUM_THREADS
    artifact.check_output(
        options.output,
        options.force,
        inputs={"student": options.student, "teacher": options.teacher, "data": options.data, "eval data": options.eval_data},
    )
    artifact.check_partial(options.output)  # resumed from or removed below: only nash's own state
    inputs = load_training_inputs(options, STAGE)
    recorded = arguments(options)
    with artifact.disk_full_refused(artifact.partial_path(options.output), fix=artifact.TRAINING_DISK_FULL_FIX):
        result = train_with(options, inputs, run_info=recorded, progress=progress)
    save_output(
        result,
        options.output,
        source=options.student,
        stage="distill",
        arguments=recorded,
        state=output_state(STAGE, inputs.student_input.state),
        extra={"teacher_checkpoint": teacher_reference(options)},
        force=options.force,
        dtypes=inputs.storage_dtypes,
        tokenizer_settings=inputs.languages.tokenizer_settings(),
    )
    return TrainingStageResult(
        output=str(options.output),
        student=options.student,
        teacher=options.teacher,
        training=result.summary(),
        notes=inputs.notes + result.notes,
    )


STAGE = declare(
    Stage(
        name="distill",
        command="distill",
        options=DistillOptions,
        run=run,
        order=50,
        model_input="student",
        teacher_input="teacher",
        data="train",
    )
)

#: A recipe's first stage when the teacher is not fine-tuned yet: `distill` without a teacher
#: (cross-entropy alone); its output is the teacher of every later stage.
FINETUNE_TEACHER = declare(replace(STAGE, name="finetune_teacher", order=10, role="teacher"))
