"""`plan`: from a speed target on this machine to a recipe, before any training.

Latency depends on shapes, not on trained weights, so `run` follows the method on the teacher
without training anything: it loads the teacher and the call to time (`workload`), builds every
configuration the pipeline could produce with the stages' own surgery (`candidates`: select-layers'
uniform selection, prune-encoder's masks at the target sparsity from random scores, compact,
prune-vocab's vocabulary), times them with the bench core under the user's settings with the
number of new tokens forced, beside the teacher (`harness`), and predicts what the budget leaves
untimed with a cost model fitted to what was timed (`cost`). The recommendation is the
configuration that meets the target with the most capacity, confirmed beside the teacher, and a
`nash run` recipe for it is written (`recipe_writer`, the paper's hyperparameters for the rest).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nash_cli import artifact
from nash_cli.arch import family_of
from nash_cli.artifact import LoadOptions, releases_outputs
from nash_cli.data import ExampleReading, SourceLength
from nash_cli.errors import NashError, require_at_least, require_finite_options, require_seed
from nash_cli.export import QUANTIZATIONS
from nash_cli.progress import Progress
from nash_cli.stages import Stage, arguments, declare, open_input
from nash_cli.stages.bench import require_source_length
from nash_cli.stages.plan import cost, summary
from nash_cli.stages.plan.candidates import (
    build_candidate,
    candidate_config,
    candidate_space,
    empty_model,
    encoder_masks,
    has_untied_head,
    kept_vocabulary,
    model_shape,
)
from nash_cli.stages.plan.cost import Candidate, Workload
from nash_cli.stages.plan.harness import Search
from nash_cli.stages.plan.recipe_writer import recipe_text
from nash_cli.stages.plan.summary import confirmation_notes
from nash_cli.stages.plan.workload import TimedCall, timed_call
from nash_cli.threads import use_threads

# The candidates' and the recipe's functions are part of `nash plan`'s interface (tests, notebooks).
__all__ = [
    "AGAINST", "DEFAULT_SPARSITIES", "ENGINES", "Candidate", "PlanOptions", "PlanResult", "Workload",
    "build_candidate", "candidate_config", "confirmation_notes", "empty_model", "encoder_masks",
    "has_untied_head", "kept_vocabulary", "model_shape", "recipe_text", "run",
]

ENGINES = ("transformers", "ctranslate2")
AGAINST = ("engine", "transformers")
DEFAULT_SPARSITIES = (0.0, 0.3, 0.5)


@dataclass(kw_only=True)
class PlanOptions(ExampleReading, SourceLength, LoadOptions):
    """What `nash plan` does."""

    checkpoint: str
    """The fine-tuned teacher (a dense checkpoint)."""
    speedup: float
    """The speedup to reach, e.g. 3 for three times faster than the teacher."""
    data: str | None = None
    """Real inputs and targets: input lengths, the teacher's output length, and the vocabulary
    restriction candidates. Without it, random inputs of `source_length`."""
    batch: int = 32
    """Sequences per generate() call, as served."""
    beams: int = 4
    """Beam width, as served."""
    engine: str = "transformers"
    """What serves the model: transformers or ctranslate2 (each candidate exported, as nash export does)."""
    quantization: str = "float32"
    """CTranslate2 weight type (int8, ...); transformers runs float32."""
    threads: int | None = None
    """CPU threads for torch and CTranslate2 alike (default: `OMP_NUM_THREADS`, else torch's, one
    per core); on a machine shared with other jobs, 1 per job."""
    source_length: int | None = None
    """Tokens per input: random inputs of this length (default 512 without `data`)."""
    new_tokens: int | None = None
    """Tokens generated per input (default: the teacher's own mean output length on a batch of
    `data`, else its generation config's cap)."""
    budget_minutes: float = 5.0
    """Time spent building and timing models; what is left untimed is predicted."""
    decoder_layers: list[int] | None = None
    """Decoder depths to consider (default: every depth from 1 to the teacher's)."""
    sparsities: list[float] = field(default_factory=lambda: list(DEFAULT_SPARSITIES))
    """Encoder sparsities to consider (0: no encoder pruning)."""
    speedup_against: str = "engine"
    """The target is measured against the teacher on the same engine and quantization (engine),
    or against the teacher in transformers at float32 (transformers)."""
    repeats: int = 3
    """Timed calls per model at most (after a warm-up call); fewer where the budget is short."""
    seed: int = 0
    """Seed of the random inputs and of the random pruning scores."""
    output: Path | None = None
    """Directory for `recipe.yaml` and `plan.json`."""
    force: bool = False
    """Replace `output` if it exists."""

    def check(self) -> None:
        """NashError for an impossible setting (checked before any model loads)."""
        require_finite_options(self)
        require_seed("--seed", self.seed)
        if not self.speedup > 1:
            raise NashError(f"--speedup must be above 1 (the teacher itself is 1), got {self.speedup:g}")
        for flag, value in (("--batch", self.batch), ("--beams", self.beams), ("--repeats", self.repeats),
                            ("--source-length", self.source_length), ("--new-tokens", self.new_tokens),
                            ("--threads", self.threads)):
            require_at_least(flag, value)
        require_source_length(self.source_length)
        SourceLength.check(self)
        if not self.budget_minutes > 0:
            raise NashError(f"--budget-minutes must be above 0, got {self.budget_minutes:g}")
        if self.engine not in ENGINES:
            raise NashError(f"unknown --engine {self.engine!r}; use {', '.join(ENGINES)}")
        if self.quantization not in QUANTIZATIONS:
            raise NashError(f"unknown --quantization {self.quantization!r}; use {', '.join(QUANTIZATIONS)}")
        if self.engine == "transformers" and self.quantization != "float32":
            raise NashError("--quantization applies to --engine ctranslate2; add --engine ctranslate2 or drop it")
        if self.speedup_against not in AGAINST:
            raise NashError(f"unknown --speedup-against {self.speedup_against!r}; use {', '.join(AGAINST)}")
        if self.engine == "ctranslate2":
            from nash_cli.export import available, missing_message

            if not available():
                raise NashError(missing_message("nash plan --engine ctranslate2"))
        if self.decoder_layers is not None:
            if not self.decoder_layers:
                raise NashError("--decoder-layers is empty; write e.g. --decoder-layers 1,2,3")
            require_at_least("--decoder-layers", min(self.decoder_layers))
        if not self.sparsities:
            raise NashError("--sparsities is empty; write e.g. --sparsities 0,0.3,0.5")
        for value in self.sparsities:
            if not 0 <= value < 1:
                raise NashError(f"--sparsities values must be in [0, 1), got {value:g}")
        if self.data is None and (self.source_column or self.target_column or self.source_template or self.split
                                  or self.source_lang or self.target_lang):
            raise NashError("--source-column / --target-column / --source-template / --split / --source-lang / "
                            "--target-lang read --data; give --data too")
        ExampleReading.check(self)


@dataclass
class PlanResult:
    """The plan: every candidate's speed, the recommendation and its recipe."""

    teacher: str
    """The teacher checkpoint."""
    target: float
    """The speedup asked for."""
    speedup_against: str
    """What the target is measured against: engine or transformers."""
    engine: dict[str, Any]
    """Engine, quantization and threads the candidates ran with."""
    workload: dict[str, Any]
    """Batch, beams, source length and new tokens of one timed call; `source_from` and
    `new_tokens_from` say where the lengths came from."""
    references: dict[str, Any]
    """The teacher's median seconds per call: `transformers` (float32) and `engine` (the chosen
    engine); `calls` holds every timed call; `reference` names the candidate every other was
    timed beside, and `teacher_over_reference` the teacher's time over its (median of ratios);
    `calibration` the factor on every unconfirmed candidate's speedup (confirmed / estimated)."""
    candidates: list[dict[str, Any]]
    """Per candidate, most capacity first: configuration, `timed` (and `timed_calls`), seconds per
    call at the teacher's conditions (measured or predicted), `predicted_s`, speedups against both
    references, parameters, weight MiB."""
    cost_model: dict[str, Any]
    """The fitted model (`nash_cli.stages.plan.cost.CostModel`)."""
    recommendation: dict[str, Any]
    """The chosen candidate, its speedup, whether it meets the target, whether it was timed, why."""
    vocabulary: dict[str, Any] | None
    """The vocabulary restriction estimate (with `data`): kept tokens and how they were counted."""
    budget: dict[str, Any]
    """Minutes allowed, seconds used, how many candidates were timed and predicted."""
    recipe: str
    """The `nash run` recipe for the recommendation (YAML)."""
    output: str | None = None
    """Where recipe.yaml and plan.json were written."""
    environment: dict[str, Any] = field(default_factory=dict)
    """Device, threads, library versions."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


# ---------------------------------------------------------------------- the stage


@releases_outputs
def run(options: PlanOptions, *, progress: Progress | None = None) -> PlanResult:
    """Builds, times and predicts every candidate, recommends one and writes its recipe.

    Args:
        options: The stage's options.
        progress: Advanced after every timed `generate()` call, its status naming the model.

    Raises:
        NashError: bad options, checkpoint or data; an existing `output` without `force`.
    """
    started = time.monotonic()
    options.check()
    use_threads(options.threads)  # before any torch work: --threads, else OMP_NUM_THREADS
    if options.output is not None:
        artifact.check_output(
            options.output, options.force, kind="plan", inputs={"checkpoint": options.checkpoint, "data": options.data}
        )
    progress = progress or Progress("plan", unit="call")

    # The teacher, and the call every model is timed with (the vocabulary restriction with it).
    teacher, tokenizer, decoder_layers = _load_teacher(options, progress)
    call = timed_call(options, teacher, tokenizer, progress)
    space = candidate_space(teacher, decoder_layers, options.sparsities, call.kept, call.workload, seed=options.seed)

    # The search: the teacher beside the reference, candidates beside the reference (the cost model
    # refitted to each), then the recommendation confirmed beside the teacher.
    with Search(options, space, tokenizer, call, progress, started=started) as search:
        search.time_reference()
        search.explore()
        search.confirm()

    speedups = search.speedups()
    choice, meets = cost.recommend(speedups, options.speedup)
    measured = choice in search.timings.timed()
    recipe = recipe_text(options, choice, speedups[choice], measured, call.workload, family_of(teacher).name)
    result = _result(options, search, call, choice, meets, speedups, recipe, started=started)
    if options.output is not None:
        _write(options, result)
    return result


def _load_teacher(options: PlanOptions, progress: Progress):
    """(teacher, tokenizer, decoder depths to consider). The tokenizer is loaded when data or an
    export needs it (else None). Every check that needs no weights runs before they load.

    Raises:
        NashError: an unreadable, masked or compact checkpoint; more decoder layers than it has.
    """
    import torch

    open_input(STAGE, options.checkpoint, allow_pickle=options.allow_pickle)
    load = {"allow_pickle": options.allow_pickle, "trust_remote_code": options.trust_remote_code}
    config = artifact.load_config(options.checkpoint, **load)
    depth = family_of(config).num_layers(config, "decoder")
    ks = sorted(set(options.decoder_layers or range(1, depth + 1)))
    if ks[-1] > depth:
        raise NashError(f"--decoder-layers {ks[-1]}: the teacher has only {depth} decoder layers; choose 1..{depth}")
    needs_tokenizer = options.data is not None or options.engine == "ctranslate2"
    tokenizer = (
        artifact.load_tokenizer(options.checkpoint, trust_remote_code=options.trust_remote_code) if needs_tokenizer else None
    )
    progress.update(status="loading the teacher")
    teacher = artifact.load_model(options.checkpoint, config=config, dtype=torch.float32, **load)
    return teacher, tokenizer, ks


def _result(options: PlanOptions, search: Search, call: TimedCall, choice: Candidate, meets: bool,
            speedups: dict[Candidate, float], recipe: str, *, started: float) -> PlanResult:
    """The `PlanResult` of a finished search."""
    import torch

    timed = search.timings.timed()
    return PlanResult(
        teacher=options.checkpoint,
        target=options.speedup,
        speedup_against=options.speedup_against,
        engine={"engine": options.engine, "quantization": options.quantization if options.engine == "ctranslate2" else "float32",
                "threads": torch.get_num_threads()},
        workload={**asdict(call.workload), **call.origin},
        references=summary.references(search),
        candidates=summary.candidate_rows(search, speedups),
        cost_model=search.timings.model.to_dict(),
        recommendation=summary.recommendation(search, choice, meets, speedups),
        vocabulary=call.vocabulary,
        budget={"minutes": options.budget_minutes, "used_s": time.monotonic() - started, "timed": len(timed),
                "predicted": len(search.space.candidates) - len(timed)},
        recipe=recipe,
        environment=search.timer.environment,
        notes=call.notes + summary.notes(search, choice, speedups, restricted=call.vocabulary is not None),
    )


def _write(options: PlanOptions, result: PlanResult) -> None:
    """recipe.yaml, plan.json and nash.json into `options.output`, atomically; sets `result.output`."""
    result.output = str(options.output)
    # nash.json marks the directory as nash's plan, so `--force` may replace it later
    manifest = artifact.build_manifest(
        source=options.checkpoint, stage="plan", arguments=arguments(options), state="dense", layer_map=None, extra=None
    )
    with artifact.staged_output(options.output, force=options.force, kind="plan") as staging:
        artifact.write_files_atomic({
            staging / "recipe.yaml": result.recipe,
            staging / "plan.json": artifact.json_text(result.to_dict()),
            staging / artifact.MANIFEST: artifact.json_text(manifest),
        })


STAGE = declare(
    Stage(
        name="plan",
        command="plan",
        options=PlanOptions,
        run=run,
        order=None,
        role=None,
        reads=frozenset({"dense"}),
        refusal="nash plan starts from the dense, fine-tuned teacher",
        writes=None,
    )
)
