"""The timing harness of `nash plan`: models timed with the bench core, candidates beside a
reference, the cost model refitted to them, and the recommendation confirmed beside the teacher.

The reference is the fastest candidate (by work): cheap to run beside every other model. The
teacher is timed interleaved with it, and each candidate then interleaved with it, so a
candidate's speedup is (teacher / reference) x (reference / candidate), each a median of ratios
within the same repeats, and the teacher is not re-timed for every candidate. That product of
two noisy ratios was 16% above what `nash bench` then measured (docs/plan.md, run F), so the
recommendation is confirmed at the end: timed beside the teacher as `nash bench` times it, and
its speedup is that measurement. Seconds are stated at the teacher's conditions.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nash_cli.progress import Progress
from nash_cli.stages.plan.cost import Candidate, Workload

if TYPE_CHECKING:
    from nash_cli.stages.plan import PlanOptions
    from nash_cli.stages.plan.candidates import CandidateSpace

#: Factor on a predicted call time when deciding whether it fits in the budget left.
BUDGET_MARGIN = 1.25


class _Timer:
    """Times models with the bench core, interleaved within a group, after one full warm-up call each.

    The warm-up is a whole call, as `nash bench`'s. A 2-token warm-up was tried first: in one
    benchmark run (T5-base shape, docs/plan.md) the first timed calls of a model were then several
    times slower than its later ones, which made the first ratios meaningless.
    """

    def __init__(self, batch, workload: Workload, progress: Progress):
        self.batch = batch
        self.workload = workload
        self.progress = progress
        self.environment: dict[str, Any] = {}
        self._warm: set[str] = set()

    def forget(self, name: str) -> None:
        """The next group warms `name` up again (a new model under a name timed before)."""
        self._warm.discard(name)

    def group(self, models: dict[str, Any], count: int) -> dict[str, list[float]]:
        """Seconds of each of `count` repeats per model (min new tokens = max new tokens), the
        models interleaved as `nash bench` runs them, so drift of the machine hits them alike."""
        from nash_cli.generation import generate, resolve_settings
        from nash_cli.timing import BenchSettings, run_bench

        settings = {
            name: resolve_settings(model, num_beams=self.workload.beams, fixed_length=self.workload.new_tokens)
            for name, model in models.items()
        }
        for name, model in models.items():
            if name not in self._warm:
                self.progress.update(status=f"warming up {name}")
                generate(model, self.batch.input_ids, self.batch.attention_mask, settings[name])
                self._warm.add(name)
        result = run_bench(
            models, [self.batch], settings, BenchSettings(repeats=count, warmup=0),
            on_call=lambda phase, name: self.progress.advance(status=f"{name}: {phase} call done"),
        )
        self.environment = result.environment
        return {report.name: list(report.repeat_s) for report in result.models}


def ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over repeats of numerator / denominator within the same repeat (drift cancels)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


@dataclass
class _Timings:
    """What the plan has timed, and the speedup it gives every candidate.

    Three kinds of timing: the teacher(s) beside the reference (`beside_teacher`, calls by model
    name; a teacher left out of a later group pairs with the reference's first repeats, since
    groups only ever drop it after the first), a candidate beside the reference (`relative`), and
    a confirmed candidate beside the teacher(s) and the reference (`direct`, bench's speedup).
    """

    teacher_names: dict[str, str]
    """Model name of the teacher per key: "transformers" (torch float32) and "engine"."""
    reference: Candidate
    """The candidate every other is timed beside."""
    work: dict[Candidate, dict[str, float]]
    """Cost-model features of every candidate."""
    teacher_work: dict[str, float]
    """Cost-model features of the teacher."""
    beside_teacher: dict[str, list[float]] = field(default_factory=dict)
    """Seconds per repeat of the teacher(s) and the reference, timed together."""
    relative: dict[Candidate, float] = field(default_factory=dict)
    """A candidate's seconds over the reference's, in the same repeats (median of ratios)."""
    direct: dict[Candidate, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Per confirmed candidate and teacher key, `nash_cli.timing.speedup_stats` beside that teacher
    ("engine" always; "transformers" when that teacher was in the group)."""
    model: Any = None
    """The cost model (`cost.CostModel`) fitted to the reference's frame: teacher and `relative`."""

    def teacher_seconds(self) -> dict[str, float]:
        """Median seconds per call of the teacher, per key."""
        return {key: statistics.median(self.beside_teacher[name]) for key, name in self.teacher_names.items()}

    def estimate_seconds(self, c: Candidate) -> float:
        """Seconds per call at the teacher's conditions in the reference's frame: timed beside the
        reference, or predicted by the cost model fitted to those timings."""
        if c in self.relative:
            engine = self.teacher_names["engine"]
            over = ratio(self.beside_teacher[engine], self.beside_teacher[self.reference.label])
            return self.teacher_seconds()["engine"] / over * self.relative[c]
        return self.model.predict(self.work[c])

    def calibration(self) -> float:
        """What the confirmations measured over what the reference's frame estimates for the same
        candidates, on the engine (geometric mean; 1 before any). The estimate's error lies mostly
        in the teacher-to-reference factor, which every candidate shares, so the unconfirmed
        candidates' estimated seconds are divided by it."""
        teacher_s = self.teacher_seconds()["engine"]
        factors = [self.direct[c]["engine"]["value"] * self.estimate_seconds(c) / teacher_s for c in self.direct]
        return statistics.geometric_mean(factors) if factors else 1.0

    def seconds(self, c: Candidate) -> float:
        """Seconds per call on the engine at the teacher's conditions: from the confirmation where
        confirmed, otherwise the estimate, calibrated."""
        if c in self.direct:
            return self.teacher_seconds()["engine"] / self.direct[c]["engine"]["value"]
        return self.estimate_seconds(c) / self.calibration()

    def speedup(self, c: Candidate, against: str) -> float:
        """Against the teacher of `against`: measured beside it where confirmed there, otherwise its
        seconds over the candidate's."""
        if against in self.direct.get(c, {}):
            return self.direct[c][against]["value"]
        return self.teacher_seconds()[against] / self.seconds(c)

    def timed(self) -> set[Candidate]:
        """Candidates timed in any way."""
        return set(self.relative) | set(self.direct)

    def refit(self) -> None:
        """Fits the cost model to the teacher and the candidates timed beside the reference."""
        from nash_cli.stages.plan import cost

        samples = [(self.teacher_work, self.teacher_seconds()["engine"])]
        samples += [(self.work[c], self.estimate_seconds(c)) for c in sorted(self.relative, key=Candidate.capacity_key)]
        self.model = cost.fit_cost_model(samples)


class Search:
    """The plan's timing within its budget: the reference beside the teacher, then candidates
    beside the reference (`explore`), then the recommendation beside the teacher (`confirm`).

    A context manager: the exported models' directory and the models held for timing go at exit.

    Args:
        options: The stage's options (engine, target, budget, repeats).
        space: The candidates, and the teacher they are cut from.
        tokenizer: The teacher's tokenizer (exports need it; None for transformers without data).
        call: The `workload.TimedCall` every model is timed with.
        progress: Advanced after every timed call.
        started: `time.monotonic()` at the start of the command; the budget counts from it.
    """

    def __init__(self, options: PlanOptions, space: CandidateSpace, tokenizer, call, progress: Progress, *,
                 started: float):
        from nash_cli.stages.plan import cost

        self.options, self.space, self.tokenizer, self.progress = options, space, tokenizer, progress
        self.started, self.budget_s = started, options.budget_minutes * 60
        self.timer = _Timer(call.batch, call.workload, progress)
        self.estimates: dict[Candidate, float] = {}  # a confirmed candidate's speedup before its confirmation
        self.calls: dict[Candidate, int] = {}
        self.sizes: dict[Candidate, float] = {}
        self.teacher_size: float | None = None
        scale = cost.fit_cost_model([(space.teacher_work, 1.0)])
        self.reference = max(space.candidates, key=lambda c: (-scale.predict(space.work[c]), c.capacity_key()))
        engine_name = "ct2" if options.engine == "ctranslate2" else "torch"
        self.teacher_names = {"transformers": "teacher (torch float32)",
                              "engine": f"teacher ({engine_name} {options.quantization})"}
        if options.engine != "ctranslate2":
            self.teacher_names["engine"] = self.teacher_names["transformers"]
        self.timings = _Timings(self.teacher_names, self.reference, space.work, space.teacher_work)
        # The teachers a confirmation times: the one the target is measured against, and the engine's
        # (the torch teacher, the slowest model by far, only when the target is against it).
        self.confirming = {self.teacher_names["engine"], self.teacher_names[options.speedup_against]}
        self.build_s = 0.0
        self.teachers: dict[str, Any] = {}
        self.reference_model: Any = None
        self.workdir: Path | None = None

    def __enter__(self) -> Search:
        self.workdir = Path(tempfile.mkdtemp(prefix="nash-plan-"))
        return self

    def __exit__(self, *exc) -> None:
        import shutil

        self.teachers, self.reference_model = {}, None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def speedups(self) -> dict[Candidate, float]:
        """Every candidate's speedup against the teacher of `--speedup-against`, as timed so far."""
        return {c: self.timings.speedup(c, self.options.speedup_against) for c in self.space.candidates}

    def left_s(self) -> float:
        """Seconds of the budget left."""
        return self.budget_s - (time.monotonic() - self.started)

    def confirmation_cost(self, c: Candidate, repeats: int) -> float:
        """Predicted seconds to confirm `c`: its build and warm-up call, then `repeats` repeats of the
        teacher(s), the reference and `c`, with the margin."""
        timings = self.timings
        per_repeat = sum(statistics.median(timings.beside_teacher[name]) for name in self.confirming)
        per_repeat += timings.seconds(self.reference)
        if c == self.reference:
            return BUDGET_MARGIN * repeats * per_repeat
        return self.build_s + BUDGET_MARGIN * (repeats * (per_repeat + timings.seconds(c)) + timings.seconds(c))

    def time_reference(self) -> None:
        """The teacher(s) beside the reference, one repeat: the frame every candidate is timed in.
        The confirmation adds the teacher's other repeats."""
        options, reference = self.options, self.reference
        self.progress.update(status=f"building {reference.label}")
        reference_model = self.space.build(reference)
        self.teachers = {self.teacher_names["transformers"]: self.space.teacher}
        if options.engine == "ctranslate2":
            self.teachers[self.teacher_names["engine"]], self.teacher_size = _export(
                self.space.teacher, self.tokenizer, self.workdir, "teacher", options.quantization, options.threads)
            reference_model, self.sizes[reference] = _export(
                reference_model, self.tokenizer, self.workdir, "reference", options.quantization, options.threads)
        self.reference_model = reference_model
        self.timings.beside_teacher = self.timer.group({**self.teachers, reference.label: reference_model}, 1)
        self.timings.relative[reference], self.calls[reference] = 1.0, 1
        self.timings.refit()

    def explore(self) -> None:
        """Times candidates beside the reference in `cost.next_to_time`'s order, refitting the cost
        model after each, until every one is timed or the budget left is the confirmation's."""
        from nash_cli.stages.plan import cost

        options, timings, reference = self.options, self.timings, self.reference
        while True:
            speedups = self.speedups()
            choice = cost.next_to_time(speedups, set(timings.relative), options.speedup)
            if choice is None:
                break
            # As many repeats as the budget allows (up to --repeats) once the confirmation of the
            # current recommendation is set aside; none: stop timing. Predicted times get a quarter
            # more, since on a busy machine they are often that far off.
            recommended, _ = cost.recommend(speedups, options.speedup)
            left = self.left_s() - self.build_s - self.confirmation_cost(recommended, options.repeats)
            repeat_cost = BUDGET_MARGIN * (timings.seconds(choice) + timings.seconds(reference))
            count = min(options.repeats, int((left - BUDGET_MARGIN * timings.seconds(choice)) // max(repeat_cost, 1e-9)))
            if count < 1:
                break
            built = time.monotonic()
            candidate = self._build(choice)
            self.build_s = time.monotonic() - built
            pair = self.timer.group({reference.label: self.reference_model, choice.label: candidate}, count)
            timings.relative[choice], self.calls[choice] = ratio(pair[choice.label], pair[reference.label]), count
            del candidate
            timings.refit()

    def confirm(self) -> None:
        """The recommendation beside the teacher(s) and the reference, with as many repeats as the
        budget left allows (up to --repeats). One that misses the target there hands over to the
        next recommendation, confirmed in turn while the budget lasts."""
        from nash_cli import timing
        from nash_cli.stages.plan import cost

        options, timings, reference = self.options, self.timings, self.reference
        while True:
            choice, _ = cost.recommend(self.speedups(), options.speedup)
            left = self.left_s()
            count = next((n for n in range(options.repeats, 0, -1) if self.confirmation_cost(choice, n) <= left), 0)
            if choice in timings.direct or count < 1:
                break
            self.estimates[choice] = timings.speedup(choice, options.speedup_against)
            group = {name: model for name, model in self.teachers.items() if name in self.confirming}
            group[reference.label] = self.reference_model
            if choice != reference:
                group[choice.label] = self._build(choice)
                self.timer.forget(choice.label)  # a new object under a name timed before: warm it up again
            repeats_s = self.timer.group(group, count)
            for name in (*self.confirming, reference.label):
                timings.beside_teacher[name] += repeats_s[name]
            timings.direct[choice] = {key: timing.speedup_stats(repeats_s[name], repeats_s[choice.label])
                                      for key, name in self.teacher_names.items() if name in self.confirming}
            self.calls[choice] = self.calls.get(choice, 0) + count
            if choice != reference:
                self.calls[reference] += count
            del group
            timings.refit()

    def _build(self, candidate: Candidate):
        """The candidate, built by the surgery and, for CTranslate2, exported (its size in `sizes`)."""
        options = self.options
        self.progress.update(status=f"building {candidate.label}")
        model = self.space.build(candidate)
        if options.engine == "ctranslate2":
            # a directory of its own: the confirmation may build a candidate timed before
            own = Path(tempfile.mkdtemp(prefix="candidate-", dir=self.workdir))
            model, self.sizes[candidate] = _export(model, self.tokenizer, own, "candidate", options.quantization,
                                                   options.threads)
        return model


def _export(model, tokenizer, workdir: Path, name: str, quantization: str, threads: int | None):
    """Writes `model` as a checkpoint, exports it with `nash export`'s own run, and loads the export."""
    from nash_cli._hf import quiet_transformers
    from nash_cli.export.runtime import CTranslate2Model
    from nash_cli.stages.export import ExportOptions
    from nash_cli.stages.export import run as export

    checkpoint = workdir / f"{name}-checkpoint"
    with quiet_transformers():
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
    output = workdir / f"{name}-ct2"
    export(ExportOptions(checkpoint=str(checkpoint), output=output, quantization=quantization, device="cpu", verify=False))
    loaded = CTranslate2Model(output, device="cpu", threads=threads)
    size = (output / "model.bin").stat().st_size / 2**20
    return loaded, size
