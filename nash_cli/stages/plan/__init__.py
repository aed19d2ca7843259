"""`plan`: from a speed target on this machine to a recipe, before any training.

Latency depends on shapes, not on trained weights, so every configuration the pipeline could
produce is built here from the teacher by the real surgery (select-layers' uniform selection,
prune-encoder's masks at the target sparsity from random scores, compact), timed with the bench
core (`nash_cli.timing`) under the user's settings with the number of new tokens forced, and
compared with the teacher. What the budget leaves untimed is predicted by the cost model of
`nash_cli.planning`, fitted to what was timed. The recommendation is the configuration that meets
the target with the most capacity, and a `nash run` recipe for it is written.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nash_cli.artifact import LoadOptions, releases_outputs
from nash_cli.data import DataOptions
from nash_cli.errors import NashError
from nash_cli.export import QUANTIZATIONS
from nash_cli.stages.plan.cost import Candidate, Workload
from nash_cli.progress import Progress
from nash_cli.stages import arguments

if TYPE_CHECKING:
    import torch

ENGINES = ("transformers", "ctranslate2")
AGAINST = ("engine", "transformers")
DEFAULT_SPARSITIES = (0.0, 0.3, 0.5)

#: The paper's hyperparameters (recipes/t5-base-*-nash3.yaml), written into the plan's recipe.
PAPER_PRUNE = {"epochs": 20, "sparsity_warmup": 0.8, "reg_lr": 0.01, "lr": 3.0e-5, "batch_size": 4,
               "alpha_enc": 0.001, "alpha_dec": 0.001}
PAPER_DISTILL = {"epochs": 20, "lr": 3.0e-4, "batch_size": 4, "alpha_enc": 0.001, "alpha_dec": 0.001}


@dataclass(kw_only=True)
class PlanOptions(LoadOptions):
    """What `nash plan` does."""

    checkpoint: str
    """The fine-tuned teacher (a dense checkpoint)."""
    speedup: float
    """The speedup to reach, e.g. 3 for three times faster than the teacher."""
    data: str | None = None
    """Real inputs and targets: input lengths, the teacher's output length, and the vocabulary
    restriction candidates. Without it, random inputs of `source_length`."""
    split: str | None = None
    """Split of `data` (hub / saved DatasetDict / JSON keyed by split)."""
    source_column: str | None = None
    """Input column of `data`."""
    target_column: str | None = None
    """Target column of `data` (the vocabulary estimate)."""
    source_template: str | None = None
    """Builds the input from several columns of `data`."""
    source_prefix: str = DataOptions.source_prefix
    """Text put before every input."""
    max_source_length: int = DataOptions.max_source_length
    """Longest input in tokens (real inputs)."""
    batch: int = 32
    """Sequences per generate() call, as served."""
    beams: int = 4
    """Beam width, as served."""
    engine: str = "transformers"
    """What serves the model: transformers or ctranslate2 (each candidate exported, as nash export does)."""
    quantization: str = "float32"
    """CTranslate2 weight type (int8, ...); transformers runs float32."""
    threads: int | None = None
    """CPU threads for torch and CTranslate2 alike (default: torch's)."""
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
        if not self.speedup > 1:
            raise NashError(f"--speedup must be above 1 (the teacher itself is 1), got {self.speedup:g}")
        for flag, value in (("--batch", self.batch), ("--beams", self.beams), ("--repeats", self.repeats),
                            ("--max-source-length", self.max_source_length)):
            if value < 1:
                raise NashError(f"{flag} must be at least 1, got {value}")
        for flag, value in (("--source-length", self.source_length), ("--new-tokens", self.new_tokens),
                            ("--threads", self.threads)):
            if value is not None and value < 1:
                raise NashError(f"{flag} must be at least 1, got {value}")
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
            if min(self.decoder_layers) < 1:
                raise NashError(f"--decoder-layers must be at least 1, got {min(self.decoder_layers)}")
        if not self.sparsities:
            raise NashError("--sparsities is empty; write e.g. --sparsities 0,0.3,0.5")
        for value in self.sparsities:
            if not 0 <= value < 1:
                raise NashError(f"--sparsities values must be in [0, 1), got {value:g}")
        if self.data is None and (self.source_column or self.target_column or self.source_template or self.split):
            raise NashError("--source-column / --target-column / --source-template / --split read --data; give --data too")


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
    """The fitted model (`nash_cli.planning.CostModel`)."""
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


# ---------------------------------------------------------------------- vocabulary estimate


def kept_vocabulary(tokenizer, config, targets: list[str], source: str, *, multiple_of: int = 1) -> list[int] | None:
    """The ids `nash prune-vocab --data` would keep for these targets (its own selection,
    `stages.prune_vocab.choose_tokens`, rounded up to `multiple_of`), sorted and below the
    config's `vocab_size`; None when prune-vocab cannot rewrite this tokenizer (then no
    vocabulary candidate is planned)."""
    from nash_cli.stages.prune_vocab import choose_tokens, tokenizer_document
    from nash_cli.surgery import vocab

    try:
        document = tokenizer_document(tokenizer, source)
    except NashError:
        return None
    counts = vocab.count_tokens(tokenizer(list(targets), add_special_tokens=False)["input_ids"])
    kept = choose_tokens(document, tokenizer, config, counts, multiple_of=multiple_of).kept
    return [i for i in kept if 0 <= i < config.vocab_size]


# ---------------------------------------------------------------------- candidate models


def encoder_masks(teacher, sparsities, *, seed: int) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """Per sparsity above 0, the binary (heads, FFN) masks prune-encoder's final step would pick
    (`nash_cli.l0.masks_for_target`) from random scores: the shapes compact then produces."""
    import torch

    from nash_cli.l0 import masks_for_target
    from nash_cli.masking import encoder_shape

    shape = encoder_shape(teacher)
    generator = torch.Generator().manual_seed(seed)
    heads = torch.randn(shape.num_layers, shape.num_heads, generator=generator)
    units = torch.randn(shape.num_layers, shape.d_ff, generator=generator)
    return {s: masks_for_target(heads, units, shape, s) for s in sparsities if s > 0}


def candidate_config(teacher, candidate: Candidate, masks):
    """The config the pipeline would write for `candidate` (select-layers, compact, vocabulary)."""
    from nash_cli.arch import family_of
    from nash_cli.surgery.compact import compact_config, plan_from_masks

    family = family_of(teacher)
    config = copy.deepcopy(teacher.config)
    family.set_num_layers(config, "decoder", candidate.decoder_layers)
    if candidate.encoder_sparsity > 0:
        config, _ = compact_config(config, plan_from_masks(teacher, *masks[candidate.encoder_sparsity]))
    if candidate.vocab_size is not None:
        config.vocab_size = candidate.vocab_size
    return config


def has_untied_head(model) -> bool:
    """Whether the lm_head is a matrix of its own (T5 v1.1 / FLAN), not the shared embedding."""
    return model.get_output_embeddings().weight is not model.get_input_embeddings().weight


def empty_model(config, *, untied_head: bool = False):
    """The model of `config` on the meta device: its shape, no memory, no weights.

    Transformers 5 builds every T5 with a tied lm_head from a config; a checkpoint that has its
    own lm_head (T5 v1.1 / FLAN) loads untied, so `untied_head` gives the empty model one too.
    """
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from nash_cli import modeling
    from nash_cli._hf import quiet_transformers
    from nash_cli.arch import family_of

    with torch.device("meta"), quiet_transformers():
        if getattr(config, "encoder_heads", None) is not None:
            # a compact candidate (per-layer widths): nash's own class, as artifact.load_model uses
            model = modeling.classes(family_of(config).name)[1](config)
        else:
            model = AutoModelForSeq2SeqLM.from_config(config)
        if untied_head and not has_untied_head(model):
            model.set_output_embeddings(torch.nn.Linear(config.d_model, config.vocab_size, bias=False))
    return model


def build_candidate(teacher, candidate: Candidate, masks):
    """The candidate as the pipeline would produce it, by the real surgery on the teacher's weights:
    select-layers' uniform selection, compact under the masks, and the vocabulary cut to size."""
    from nash_cli.arch import family_of
    from nash_cli.surgery.compact import compact_model
    from nash_cli.surgery.layers import select_layers, uniform_indices

    depth = family_of(teacher).num_layers(teacher.config, "decoder")
    model = select_layers(teacher, decoder=uniform_indices(depth, candidate.decoder_layers))
    if candidate.encoder_sparsity > 0:
        model, _ = compact_model(model, *masks[candidate.encoder_sparsity])
    if candidate.vocab_size is not None:
        # The first rows are enough for timing: shapes, not weights, decide it. Resizing keeps BART's
        # final_logits_bias consistent; it would tie an untied head (transformers 5 configs say
        # tied), so an untied head is cut to size separately, as prune-vocab does.
        import torch

        head = model.get_output_embeddings().weight if has_untied_head(model) else None
        model.resize_token_embeddings(candidate.vocab_size)
        if head is not None:
            cut = torch.nn.Linear(head.shape[1], candidate.vocab_size, bias=False)
            cut.weight = torch.nn.Parameter(head[: candidate.vocab_size].detach().clone())
            model.set_output_embeddings(cut)
    return model.eval()


def model_shape(model):
    """The `planning.ModelShape` of a model (real or meta)."""
    from nash_cli.arch import count_parameters, family_of
    from nash_cli.stages.plan.cost import ModelShape

    family = family_of(model)
    params = count_parameters(model)

    def width(stack: str) -> int:
        total = 0
        for layer in family.layers(model, stack):
            attention = family.self_attention(layer)
            total += attention.num_heads * attention.head_dim
        return total

    return ModelShape(
        encoder_params=params["encoder"],
        encoder_attention_width=width("encoder"),
        decoder_layers=len(family.layers(model, "decoder")),
        decoder_params=params["decoder"],
        decoder_attention_width=width("decoder"),
        d_model=int(model.config.d_model),
        vocab_size=int(model.get_output_embeddings().weight.shape[0]),
    )


def weights_mib(model) -> float:
    """Float32 weight size (each tensor once, as safetensors stores a tied lm_head)."""
    unique = {id(p): p for p in model.parameters()}
    return sum(p.numel() for p in unique.values()) * 4 / 2**20


# ---------------------------------------------------------------------- timing


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
    """The cost model (`planning.CostModel`) fitted to the reference's frame: teacher and `relative`."""

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
        from nash_cli.stages.plan import cost as planning

        samples = [(self.teacher_work, self.teacher_seconds()["engine"])]
        samples += [(self.work[c], self.estimate_seconds(c)) for c in sorted(self.relative, key=Candidate.capacity_key)]
        self.model = planning.fit_cost_model(samples)


def _build(teacher, candidate: Candidate, masks, tokenizer, workdir: Path, options: PlanOptions, sizes, progress):
    """The candidate, built by the real surgery and, for CTranslate2, exported (its size in `sizes`)."""
    progress.update(status=f"building {candidate.label}")
    model = build_candidate(teacher, candidate, masks)
    if options.engine == "ctranslate2":
        # a directory of its own: the confirmation may build a candidate timed before
        own = Path(tempfile.mkdtemp(prefix="candidate-", dir=workdir))
        model, sizes[candidate] = _export(model, tokenizer, own, "candidate", options.quantization, options.threads)
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


# ---------------------------------------------------------------------- inputs


def _inputs(options: PlanOptions, teacher, tokenizer, progress: Progress):
    """(batch, workload facts, targets, sources) for the timed calls, from the flags, `data` or the teacher."""
    import torch

    from nash_cli.timing import random_batches, text_batches

    config = teacher.config
    origin: dict[str, Any] = {}
    targets: list[str] = []
    sources: list[str] = []
    batch = None
    if options.data is not None:
        from nash_cli.data import load_examples

        examples = load_examples(
            options.data,
            split=options.split,
            source_column=options.source_column,
            target_column=options.target_column,
            source_template=options.source_template,
            source_prefix=options.source_prefix,
        )
        targets = [reference for example in examples for reference in example.references[:1]]
        sources = [example.source for example in examples]
        if options.source_length is None:
            (batch,) = text_batches(tokenizer, sources[: options.batch],
                                    batch_size=options.batch, max_source_length=options.max_source_length)
            if batch.size < options.batch:
                raise NashError(f"{options.data} has {batch.size} examples; --batch {options.batch} needs that many")
            origin["source_from"] = f"the first {options.batch} inputs of {options.data}, padded to the longest"
    if batch is None:
        length = options.source_length or 512
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and length > limit:
            raise NashError(f"--source-length {length} exceeds the model's {limit} positions")
        special = [getattr(config, key, None) for key in ("pad_token_id", "eos_token_id", "bos_token_id",
                                                          "decoder_start_token_id", "unk_token_id")]
        (batch,) = random_batches(
            vocab_size=config.vocab_size, batch_size=options.batch, source_length=length,
            low=max([4] + [s + 1 for s in special if isinstance(s, int)]),
            eos_token_id=config.eos_token_id if isinstance(config.eos_token_id, int) else None, seed=options.seed,
        )
        origin["source_from"] = "--source-length" if options.source_length else "random tokens, 512 (the default)"
    if options.new_tokens is not None:
        new_tokens = options.new_tokens
        origin["new_tokens_from"] = "--new-tokens"
    elif options.data is not None:
        from nash_cli.generation import generate, generated_lengths, resolve_settings

        progress.update(status="the teacher's own outputs")
        settings = resolve_settings(teacher, num_beams=options.beams)
        with torch.inference_mode():
            sequences = generate(teacher, batch.input_ids, batch.attention_mask, settings)
        lengths = generated_lengths(sequences, teacher.generation_config.eos_token_id or config.eos_token_id)
        new_tokens = max(1, round(statistics.fmean(lengths)))
        origin["new_tokens_from"] = f"the teacher's mean output length on that batch (beams {options.beams})"
    else:
        from nash_cli.generation import resolve_settings

        new_tokens = resolve_settings(teacher, num_beams=options.beams).max_new_tokens
        origin["new_tokens_from"] = "the teacher's generation config (its length cap)"
    return batch, new_tokens, origin, targets, sources


def _within_vocabulary(batch, kept: list[int], unk: int | None):
    """The batch with ids renumbered as a restricted vocabulary would: kept ids to their rank,
    others to the unknown token. Timing does not depend on id values, so every model gets these."""
    import torch

    from nash_cli.timing import Batch

    table = torch.full((int(batch.input_ids.max()) + 1,), 0, dtype=torch.long)
    fallback = kept.index(unk) if unk in kept else 0
    table[:] = fallback
    for rank, index in enumerate(kept):
        if index < table.shape[0]:
            table[index] = rank
    return Batch(table[batch.input_ids], batch.attention_mask)


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
    from nash_cli import artifact

    if options.output is not None:
        artifact.check_output(
            options.output, options.force, kind="plan", inputs={"checkpoint": options.checkpoint, "data": options.data}
        )
    progress = progress or Progress("plan", unit="call")
    load = {"allow_pickle": options.allow_pickle, "trust_remote_code": options.trust_remote_code}
    config = artifact.load_config(options.checkpoint, **load)
    manifest = artifact.read_manifest(options.checkpoint) or {}
    if manifest.get("state", "dense") != "dense":
        raise NashError(
            f"{options.checkpoint} is a {manifest['state']} checkpoint; nash plan starts from the dense, fine-tuned teacher"
        )
    from nash_cli.arch import family_of

    family = family_of(config)
    depth = family.num_layers(config, "decoder")
    ks = sorted(set(options.decoder_layers or range(1, depth + 1)))
    if ks[-1] > depth:
        raise NashError(f"--decoder-layers {ks[-1]}: the teacher has only {depth} decoder layers; choose 1..{depth}")
    needs_tokenizer = options.data is not None or options.engine == "ctranslate2"
    tokenizer = (
        artifact.load_tokenizer(options.checkpoint, trust_remote_code=options.trust_remote_code) if needs_tokenizer else None
    )

    import torch

    from nash_cli import timing
    from nash_cli.stages.plan import cost as planning

    if options.threads is not None:
        torch.set_num_threads(options.threads)
    progress.update(status="loading the teacher")
    teacher = artifact.load_model(options.checkpoint, config=config, dtype=torch.float32, **load)
    batch, new_tokens, origin, targets, sources = _inputs(options, teacher, tokenizer, progress)
    notes: list[str] = []

    vocabulary = None
    vocab_sizes: list[int | None] = [None]
    if targets:
        # The recipe's prune-vocab keeps the inputs' tokens too (--keep-source-tokens), so the encoder
        # reads the pieces it was trained on; a CTranslate2 vocabulary map allows the targets' tokens
        # always and each batch's own input tokens on top, which the targets-only size approximates
        # (and is not rounded up, as prune-vocab's output is).
        from nash_cli.stages.prune_vocab import PruneVocabOptions

        transformers = options.engine == "transformers"
        kept = kept_vocabulary(
            tokenizer, config, targets + sources if transformers else targets, options.checkpoint,
            multiple_of=PruneVocabOptions.multiple_of if transformers else 1,
        )
        if kept is None:
            notes.append("the teacher's tokenizer is not one prune-vocab can rewrite, so no vocabulary candidate is planned")
        elif len(kept) < config.vocab_size:
            vocab_sizes.append(len(kept))
            batch = _within_vocabulary(batch, kept, tokenizer.unk_token_id)
            rule = (
                "nash prune-vocab's selection: special and config ids, every single-character piece, every token "
                "of the targets" + (" and inputs" if transformers else "") + ", and the BPE closure"
            )
            if transformers:
                rule += f", rounded up to a multiple of {PruneVocabOptions.multiple_of} tokens"
            vocabulary = {"kept": len(kept), "of": int(config.vocab_size), "targets": len(targets), "rule": rule}
    workload = Workload(batch=batch.size, beams=options.beams, source_length=int(batch.input_ids.shape[1]),
                        new_tokens=new_tokens)
    sparsities = sorted({float(s) for s in options.sparsities})
    candidates = planning.candidate_grid(ks, sparsities, vocab_sizes)
    masks = encoder_masks(teacher, sparsities, seed=options.seed)
    from nash_cli.arch import count_parameters

    work, parameters = {}, {}
    for c in candidates:
        shape_only = empty_model(candidate_config(teacher, c, masks), untied_head=has_untied_head(teacher))
        work[c] = planning.features(model_shape(shape_only), workload)
        parameters[c] = count_parameters(shape_only)
    teacher_work = planning.features(model_shape(teacher), workload)

    budget_s = options.budget_minutes * 60
    timer = _Timer(batch, workload, progress)
    engine_name = "ct2" if options.engine == "ctranslate2" else "torch"
    workdir = Path(tempfile.mkdtemp(prefix="nash-plan-"))
    estimates: dict[Candidate, float] = {}  # a confirmed candidate's speedup before its confirmation
    calls: dict[Candidate, int] = {}
    sizes: dict[Candidate, float] = {}
    # The reference is the fastest candidate (by work): cheap to run beside every other model. The
    # teacher is timed interleaved with it, and each candidate then interleaved with it, so a
    # candidate's speedup is (teacher / reference) x (reference / candidate), each a median of ratios
    # within the same repeats, and the teacher is not re-timed for every candidate. That product of
    # two noisy ratios was 16% above what `nash bench` then measured (docs/plan.md, run F), so the
    # recommendation is confirmed at the end: timed beside the teacher as `nash bench` times it, and
    # its speedup is that measurement. Seconds are stated at the teacher's conditions.
    scale = planning.fit_cost_model([(teacher_work, 1.0)])
    reference = max(candidates, key=lambda c: (-scale.predict(work[c]), c.capacity_key()))
    teacher_names = {"transformers": "teacher (torch float32)", "engine": f"teacher ({engine_name} {options.quantization})"}
    if options.engine != "ctranslate2":
        teacher_names["engine"] = teacher_names["transformers"]
    timings = _Timings(teacher_names, reference, work, teacher_work)
    # The teachers a confirmation times: the one the target is measured against, and the engine's
    # (the torch teacher, the slowest model by far, only when the target is against it).
    confirming = {teacher_names["engine"], teacher_names[options.speedup_against]}
    build_s = 0.0

    def confirmation_cost(c: Candidate, repeats: int) -> float:
        """Predicted seconds to confirm `c`: its build and warm-up call, then `repeats` repeats of the
        teacher(s), the reference and `c`, with the margin."""
        per_repeat = sum(statistics.median(timings.beside_teacher[name]) for name in confirming)
        per_repeat += timings.seconds(reference)
        if c == reference:
            return BUDGET_MARGIN * repeats * per_repeat
        return build_s + BUDGET_MARGIN * (repeats * (per_repeat + timings.seconds(c)) + timings.seconds(c))

    def speedups_now() -> dict[Candidate, float]:
        return {c: timings.speedup(c, options.speedup_against) for c in candidates}

    try:
        progress.update(status=f"building {reference.label}")
        reference_model = build_candidate(teacher, reference, masks)
        teachers: dict[str, Any] = {teacher_names["transformers"]: teacher}
        teacher_size = None
        if options.engine == "ctranslate2":
            teachers[teacher_names["engine"]], teacher_size = _export(teacher, tokenizer, workdir, "teacher",
                                                                      options.quantization, options.threads)
            reference_model, sizes[reference] = _export(reference_model, tokenizer, workdir, "reference",
                                                        options.quantization, options.threads)
        # One repeat steers the search; the confirmation adds the teacher's other repeats.
        timings.beside_teacher = timer.group({**teachers, reference.label: reference_model}, 1)
        timings.relative[reference], calls[reference] = 1.0, 1
        timings.refit()
        while True:
            speedups = speedups_now()
            choice = planning.next_to_time(speedups, set(timings.relative), options.speedup)
            if choice is None:
                break
            # As many repeats as the budget allows (up to --repeats) once the confirmation of the
            # current recommendation is set aside; none: stop timing. Predicted times get a quarter
            # more, since on a busy machine they are often that far off.
            recommended, _ = planning.recommend(speedups, options.speedup)
            left = budget_s - (time.monotonic() - started) - build_s - confirmation_cost(recommended, options.repeats)
            repeat_cost = BUDGET_MARGIN * (timings.seconds(choice) + timings.seconds(reference))
            count = min(options.repeats, int((left - BUDGET_MARGIN * timings.seconds(choice)) // max(repeat_cost, 1e-9)))
            if count < 1:
                break
            built = time.monotonic()
            candidate = _build(teacher, choice, masks, tokenizer, workdir, options, sizes, progress)
            build_s = time.monotonic() - built
            pair = timer.group({reference.label: reference_model, choice.label: candidate}, count)
            timings.relative[choice], calls[choice] = ratio(pair[choice.label], pair[reference.label]), count
            del candidate
            timings.refit()

        # The confirmation: the recommendation beside the teacher(s) and the reference, with as many
        # repeats as the budget left allows (up to --repeats). One that misses the target there
        # hands over to the next recommendation, confirmed in turn while the budget lasts.
        while True:
            choice, _ = planning.recommend(speedups_now(), options.speedup)
            left = budget_s - (time.monotonic() - started)
            count = next((n for n in range(options.repeats, 0, -1) if confirmation_cost(choice, n) <= left), 0)
            if choice in timings.direct or count < 1:
                break
            estimates[choice] = timings.speedup(choice, options.speedup_against)
            group = {name: model for name, model in teachers.items() if name in confirming}
            group[reference.label] = reference_model
            if choice != reference:
                group[choice.label] = _build(teacher, choice, masks, tokenizer, workdir, options, sizes, progress)
                timer.forget(choice.label)  # a new object under a name timed before: warm it up again
            repeats_s = timer.group(group, count)
            for name in (*confirming, reference.label):
                timings.beside_teacher[name] += repeats_s[name]
            timings.direct[choice] = {key: timing.speedup_stats(repeats_s[name], repeats_s[choice.label])
                                      for key, name in teacher_names.items() if name in confirming}
            calls[choice] = calls.get(choice, 0) + count
            if choice != reference:
                calls[reference] += count
            del group
            timings.refit()
        del reference_model, teachers
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)

    references = timings.teacher_seconds()
    calibration = timings.calibration()
    teacher_calls = {key: timings.beside_teacher[name] for key, name in teacher_names.items()}
    over_reference = {key: ratio(values, timings.beside_teacher[reference.label]) for key, values in teacher_calls.items()}
    timed, direct, model = timings.timed(), timings.direct, timings.model
    seconds = {c: timings.seconds(c) for c in candidates}
    speedups = speedups_now()
    choice, meets = planning.recommend(speedups, options.speedup)
    bytes_per_param = None
    if options.engine == "ctranslate2" and teacher_size is not None:
        bytes_per_param = teacher_size / count_parameters(teacher)["total"]
    rows = []
    for c in candidates:
        row = {
            **c.to_dict(),
            "label": c.label,
            "timed": c in timed,
            "confirmed": c in direct,
            "timed_calls": calls.get(c, 0),
            "seconds": seconds[c],
            "predicted_s": model.predict(work[c]),
            "speedup": speedups[c],
            "speedup_vs_engine_teacher": timings.speedup(c, "engine"),
            "speedup_vs_transformers_teacher": timings.speedup(c, "transformers"),
            "parameters": parameters[c]["total"],
            "meets_target": speedups[c] >= options.speedup,
        }
        if options.engine == "ctranslate2":
            row["weights_mib"] = sizes.get(c, parameters[c]["total"] * (bytes_per_param or 4) / 2**20)
            row["weights_estimated"] = c not in sizes
        else:
            row["weights_mib"] = parameters[c]["total"] * 4 / 2**20
            row["weights_estimated"] = False
        rows.append(row)
    best = max(speedups.values())
    why = _why(choice, meets, speedups, options.speedup, candidates)
    notes += confirmation_notes(estimates, speedups, choice, options.speedup)
    if direct and len(direct) < len(candidates) and abs(calibration - 1) > 0.005:
        notes.append(f"the other candidates' speedups are scaled by {calibration:.2f}: what "
                     f"timing {', '.join(c.label for c in direct)} beside the teacher measured over its estimate")
    if choice not in timed:
        notes.append(f"the recommended configuration ({choice.label}) was predicted, not timed: the budget ran out; "
                     "give a larger --budget-minutes to time it")
    elif choice not in direct:
        notes.append(f"the recommended configuration ({choice.label}) was timed beside the reference only, not beside "
                     "the teacher: the budget ran out; its speedup is a product of two ratios, which can be 15% off; "
                     "give a larger --budget-minutes to confirm it")
    if vocabulary is not None:
        notes.append("vocabulary candidates are timed with a model of the reduced vocabulary size"
                     + (" (a CTranslate2 vocabulary map restricts per batch; the reduced size approximates it)"
                        if options.engine == "ctranslate2" else ""))
    recipe = recipe_text(options, choice, speedups[choice], choice in timed, workload, family.name)
    result = PlanResult(
        teacher=options.checkpoint,
        target=options.speedup,
        speedup_against=options.speedup_against,
        engine={"engine": options.engine, "quantization": options.quantization if options.engine == "ctranslate2" else "float32",
                "threads": torch.get_num_threads()},
        workload={**asdict(workload), **origin},
        references={**references, "calls": teacher_calls, "reference": reference.label,
                    "teacher_over_reference": over_reference, "calibration": calibration},
        candidates=rows,
        cost_model=model.to_dict(),
        recommendation={
            **choice.to_dict(), "label": choice.label, "speedup": speedups[choice], "meets_target": meets,
            "timed": choice in timed, "confirmed": choice in direct, "best_reachable": best, "why": why,
            **({"estimate": estimates[choice], "per_repeat": direct[choice][options.speedup_against]["per_repeat"]}
               if choice in direct else {}),
        },
        vocabulary=vocabulary,
        budget={"minutes": options.budget_minutes, "used_s": time.monotonic() - started, "timed": len(timed),
                "predicted": len(candidates) - len(timed)},
        recipe=recipe,
        environment=timer.environment,
        notes=notes,
    )
    if options.output is not None:
        result.output = str(options.output)
        # nash.json marks the directory as nash's plan, so `--force` may replace it later
        manifest = artifact.build_manifest(
            source=options.checkpoint, stage="plan", arguments=arguments(options), state="dense", layer_map=None, extra=None
        )
        with artifact.staged_output(options.output, force=options.force, kind="plan") as staging:
            artifact.write_files_atomic({
                staging / "recipe.yaml": recipe,
                staging / "plan.json": artifact.json_text(result.to_dict()),
                staging / artifact.MANIFEST: artifact.json_text(manifest),
            })
    return result


def confirmation_notes(estimates: dict[Candidate, float], speedups: dict[Candidate, float], choice: Candidate,
                       target: float) -> list[str]:
    """One line per confirmed candidate that is not the recommendation: it missed the target beside
    the teacher, or it met it and the recommendation keeps more capacity on its (calibrated) estimate."""
    notes = []
    for c, estimate in estimates.items():
        if c == choice:
            continue
        measured = f"{c.label} was estimated at {estimate:.2f}x and measured {speedups[c]:.2f}x beside the teacher"
        if speedups[c] < target:
            notes.append(f"{measured}, below the target, so it is not the recommendation")
        else:
            notes.append(f"{measured}; the recommendation, {choice.label}, keeps more capacity and reaches the target on "
                         "its estimate")
    return notes


def _why(choice: Candidate, meets: bool, speedups, target: float, candidates) -> str:
    """One line: why this candidate."""
    if not meets:
        return (f"no candidate reaches {target:g}x; the best reachable is {speedups[choice]:.2f}x ({choice.label}), "
                "the fastest configuration considered")
    more = [c for c in candidates if c.capacity_key() > choice.capacity_key()]
    if not more:
        return f"it keeps the teacher's full capacity among the candidates and reaches {speedups[choice]:.2f}x"
    closest = min(more, key=lambda c: c.capacity_key())
    return (f"the configuration with the most capacity that reaches {target:g}x ({speedups[choice]:.2f}x); the next one "
            f"up, {closest.label}, reaches {speedups[closest]:.2f}x")


def recipe_text(options: PlanOptions, choice: Candidate, speedup: float, timed: bool, workload: Workload,
                family: str) -> str:
    """The `nash run` recipe for `choice`: the plan's teacher and data, the chosen stages and
    settings, and the paper's hyperparameters for the rest."""
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
