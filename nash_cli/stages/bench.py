"""`bench`: generation speed of checkpoints against a baseline, models interleaved.

This module loads the models and builds the inputs (random tokens, or real texts from a data
set); the timing itself is `nash_cli.timing`. A `masked` checkpoint (prune-encoder's output) is
timed with its deterministic masks applied, as the model it stands for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nash_cli.artifact import LoadOptions, releases_outputs
from nash_cli.data import InputReading, SourceLength
from nash_cli.errors import NashError, require_at_least, require_finite_options, require_seed
from nash_cli.progress import Progress
from nash_cli.stages import ANY_STATE, Stage, declare
from nash_cli.threads import use_threads

if TYPE_CHECKING:
    from nash_cli.timing import BenchResult

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(kw_only=True)
class BenchOptions(InputReading, SourceLength, LoadOptions):
    """What `nash bench` does. The data options (`InputReading`, `SourceLength`) read `data`."""

    models: list[str]
    """Checkpoints to time (local directories or hub ids)."""
    baseline: str | None = None
    """Checkpoint the others are compared with (speedup)."""
    data: str | None = None
    """Real inputs (any format `nash eval` reads); outputs take their natural length. Without
    it, random tokens of `source_length`."""
    source_length: int = 512
    """Tokens per random input (without `data`)."""
    num_batches: int = 1
    """Batches per repeat (different inputs)."""
    batch: int = 32
    """Sequences per generate() call."""
    beams: int = 4
    """Beam width."""
    fixed_length: int | None = None
    """Generate exactly N tokens (min = max new tokens): compares models per token."""
    max_new_tokens: int | None = None
    """Length cap (default: the generation config of the baseline, else the first model)."""
    compile: bool = False
    """torch.compile each model's forward and decode over a static cache (first calls compile)."""
    repeats: int = 10
    """Timed passes over all models."""
    warmup: int | None = None
    """Untimed passes first (default: 1; 3 with `compile`)."""
    breakdown: bool = False
    """One extra hooked pass: time in encoder, decoder layers, lm_head and the rest."""
    device: str = "auto"
    """auto (cuda if present), cpu or cuda."""
    dtype: str = "float32"
    """float32, bfloat16 or float16."""
    threads: int | None = None
    """CPU threads for torch and CTranslate2 alike (default: `OMP_NUM_THREADS`, else torch's, one
    per core); on a machine shared with other jobs, 1 per job."""
    vocab_map: bool = True
    """Decode CTranslate2 exports that have a vocabulary map (`nash export --vocab-map`) with it."""
    seed: int = 0
    """Seed of the random inputs."""
    output: Path | None = None
    """Also write the JSON report to this file."""
    force: bool = False
    """Overwrite `output` if it exists."""

    def check(self) -> None:
        """NashError for an impossible setting (checked before any model loads)."""
        require_finite_options(self)
        require_seed("--seed", self.seed)
        if not self.models:
            raise NashError("give at least one model to benchmark")
        if self.data is None and (self.source_lang or self.target_lang):
            raise NashError("--source-lang / --target-lang are the languages of texts; give --data too, or drop them")
        for flag, value in (("--batch", self.batch), ("--beams", self.beams), ("--repeats", self.repeats),
                            ("--num-batches", self.num_batches), ("--source-length", self.source_length),
                            ("--fixed-length", self.fixed_length), ("--max-new-tokens", self.max_new_tokens),
                            ("--threads", self.threads)):
            require_at_least(flag, value)
        require_source_length(self.source_length)
        SourceLength.check(self)
        if self.fixed_length is not None and self.max_new_tokens is not None and self.fixed_length != self.max_new_tokens:
            raise NashError("--fixed-length sets the number of new tokens; drop --max-new-tokens")
        if self.compile and self.breakdown:
            raise NashError("--breakdown times modules through hooks, which compiled code skips; drop one of them")
        if self.warmup is not None and self.warmup < 0:
            raise NashError(f"--warmup must be 0 or more, got {self.warmup}")
        check_device(self.device, self.dtype)
        if self.data is None and (self.source_column or self.source_template or self.split):
            raise NashError("--source-column / --source-template / --split read --data; give --data too")
        InputReading.check(self)


#: The longest random input bench and plan build: far past what T5 and BART were trained on, and
#: already gigabytes of attention scores per sequence; 100,000 tokens would ask for some 80 GB.
MAX_SOURCE_LENGTH = 8192


def require_source_length(source_length: int | None) -> None:
    """NashError for a `--source-length` past `MAX_SOURCE_LENGTH` (a model with learned positions
    is held to its own, smaller bound once loaded)."""
    if source_length is not None and source_length > MAX_SOURCE_LENGTH:
        raise NashError(
            f"--source-length {source_length} exceeds the longest input nash times ({MAX_SOURCE_LENGTH} tokens); "
            f"use at most {MAX_SOURCE_LENGTH}"
        )


def check_device(device: str, dtype: str) -> None:
    """NashError for an unknown `--device` or `--dtype` (shared by bench and eval)."""
    if device not in DEVICES:
        raise NashError(f"unknown --device {device!r}; use {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise NashError(f"unknown --dtype {dtype!r}; use {', '.join(DTYPES)}")


def resolve_device(name: str):
    """The torch device for `--device` (auto: cuda when present)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NashError("--device cuda but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def is_exported(source: str) -> bool:
    """Whether `source` is a CTranslate2 model directory (`nash export`'s output)."""
    from nash_cli.export.runtime import is_ctranslate2_dir

    return is_ctranslate2_dir(source)


def load_for_generation(source: str, options: LoadOptions, *, device, dtype: str, config=None,
                        threads: int | None = None, vocab_map: bool = True) -> tuple[Any, list[str]]:
    """Loads a checkpoint to generate with, as the model it stands for; returns (model, notes).

    A `masked` checkpoint's weights are the unpruned trained ones: its deterministic masks
    (`masks.safetensors`) are applied, so it generates exactly as its compact form does.
    A CTranslate2 directory (`nash export`) is loaded in CTranslate2 on the same device, with
    `threads` intra-op threads (default: torch's), and generates through the same interface,
    restricted by its vocabulary map when it has one, unless `vocab_map` is False.
    """
    import torch

    from nash_cli import artifact
    from nash_cli.masking import apply_checkpoint_masks

    if is_exported(source):
        from nash_cli.artifact.loading import check_generation_config
        from nash_cli.export.runtime import CTranslate2Model

        # transformers would ignore an unparsable file here too, or fail with a TypeError on a list.
        check_generation_config(source)

        model = CTranslate2Model(source, device=device.type, threads=threads or torch.get_num_threads(),
                                 vocab_map=vocab_map)
        return model, []

    model = artifact.load_model(
        source, allow_pickle=options.allow_pickle, trust_remote_code=options.trust_remote_code, config=config
    )
    model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
    notes = []
    hooks = apply_checkpoint_masks(model, source)
    if hooks is not None:
        model._nash_mask_hooks = hooks  # kept alive with the model
        notes.append(
            f"{source} is a masked checkpoint: its deterministic masks (masks.safetensors) are applied; "
            "nash compact removes the pruned units for real speed"
        )
    return model, notes


def own_tokenizers(names: list[str], *, trust_remote_code: bool = False) -> dict[str, Any]:
    """Each model's tokenizer: the first model's, shared by every model with the same vocabulary
    or no tokenizer files of its own; a model whose vocabulary differs gets its own.

    Args:
        names: The models' paths or hub ids, the reference first.
        trust_remote_code: Whether a tokenizer's own code may run.
    """
    from nash_cli import artifact

    first = artifact.load_tokenizer(names[0], trust_remote_code=trust_remote_code)
    vocabulary = first.get_vocab()
    tokenizers = {names[0]: first}
    for name in names[1:]:
        tokenizers[name] = first
        if artifact.is_local(name) and any((Path(name) / f).is_file() for f in artifact.TOKENIZER_FILES):
            tokenizer = artifact.load_tokenizer(name, trust_remote_code=trust_remote_code)
            if tokenizer.get_vocab() != vocabulary:
                tokenizers[name] = tokenizer
    return tokenizers


@dataclass
class BenchStageResult:
    """The measurement and what was noticed on the way."""

    result: "BenchResult"
    """The timing report (`nash_cli.timing.BenchResult`)."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know (masks applied)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {**self.result.to_dict(), "notes": list(self.notes)}


@releases_outputs
def run(options: BenchOptions, *, progress: Progress | None = None) -> BenchStageResult:
    """Loads the models, builds the inputs, times every model and writes the report.

    Args:
        options: The stage's options.
        progress: Told the number of `generate()` calls, then advanced after each one.

    Raises:
        NashError: bad options, checkpoints or data; an existing `output` without `force`.
    """
    from nash_cli import artifact
    from nash_cli.batches import random_batches, text_batches
    from nash_cli.generation import as_engine, resolve_settings, source_positions
    from nash_cli.timing import BenchSettings, run_bench

    options.check()
    if options.output is not None:
        models = {"model" if i == 0 else f"model {i + 1}": name for i, name in enumerate(options.models)}
        inputs = {**models, "baseline": options.baseline, "data": options.data}
        artifact.refuse_existing([options.output], options.force, kinds=["bench"], inputs=inputs)
    use_threads(options.threads)  # before any torch work: --threads, else OMP_NUM_THREADS
    target = resolve_device(options.device)
    names = list(dict.fromkeys(([options.baseline] if options.baseline is not None else []) + list(options.models)))
    # Every config is checked before any weights load, so a bad path fails fast.
    load = {"allow_pickle": options.allow_pickle, "trust_remote_code": options.trust_remote_code}
    exported = {name for name in names if is_exported(name)}
    if exported:
        from nash_cli.export import require_ctranslate2

        require_ctranslate2(f"timing {sorted(exported)[0]} (a CTranslate2 model)")
    configs = {name: None if name in exported else artifact.load_config(name, **load) for name in names}
    loaded, notes = {}, []
    for name in names:
        loaded[name], loaded_notes = load_for_generation(
            name, options, device=target, dtype=options.dtype, config=configs[name], threads=options.threads,
            vocab_map=options.vocab_map,
        )
        notes += loaded_notes
    engines = {name: as_engine(model) for name, model in loaded.items()}
    reference = loaded[names[0]]
    defaults = resolve_settings(
        reference, num_beams=options.beams, max_new_tokens=options.max_new_tokens, fixed_length=options.fixed_length
    )
    generation = {
        name: resolve_settings(
            model,
            num_beams=defaults.num_beams,
            max_new_tokens=defaults.max_new_tokens,
            fixed_length=options.fixed_length,
            compile=options.compile and engines[name].compiles,
        )
        for name, model in loaded.items()
    }
    for name, engine in engines.items():
        notes += engine.notes(defaults.num_beams, fixed_length=options.fixed_length is not None)
        if options.compile and not engine.compiles:
            notes.append(f"{name}: --compile applies to transformers models; CTranslate2 runs as exported")
        if options.breakdown and engine.breakdown_parts() is None:
            notes.append(f"{name}: --breakdown hooks torch modules; CTranslate2 models have no breakdown")

    if options.data is not None:
        from nash_cli.data import read_examples, set_languages

        examples = read_examples(options, limit=options.batch * options.num_batches)
        tokenizers = own_tokenizers(names, trust_remote_code=options.trust_remote_code)
        # Each tokenizer gets the pair (a pruned vocabulary numbers the codes its own way), and
        # each model the target's code as its first generated token.
        languages = {}
        for name, tokenizer in tokenizers.items():
            if id(tokenizer) not in languages:
                languages[id(tokenizer)] = set_languages(tokenizer, options.source_lang, options.target_lang, where=name)
        for name in names:
            generation[name] = languages[id(tokenizers[name])].generation(generation[name])
        examples = languages[id(tokenizers[names[0]])].inputs(examples)

        max_source_length = options.max_source_length
        for model in loaded.values():  # within every model's positions (BART's end)
            max_source_length, _ = source_positions(getattr(model, "config", None), max_source_length)

        def encode(tokenizer):
            return text_batches(
                tokenizer,
                [e.source for e in examples],
                batch_size=options.batch,
                max_source_length=max_source_length,
                pad_to_max=options.compile,  # one input shape, so compiled graphs are reused across batches
            )

        batches = encode(tokenizers[names[0]])
        # a model with another vocabulary (prune-vocab) reads the same texts through its own tokenizer
        model_batches = {name: encode(t) for name, t in tokenizers.items() if t is not tokenizers[names[0]]}
        origin = {"kind": "data", "data": options.data, "tokenizer": names[0]}
        if options.source_lang or options.target_lang:
            origin["languages"] = languages[id(tokenizers[names[0]])].to_dict()
        if model_batches:
            origin["tokenizers"] = {name: name if name in model_batches else names[0] for name in names}
    else:
        model_batches = None
        config = reference.config
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and options.source_length > limit:
            raise NashError(f"--source-length {options.source_length} exceeds the model's {limit} positions; use at most {limit}")
        special = [getattr(config, key, None) for key in ("pad_token_id", "eos_token_id", "bos_token_id",
                                                          "decoder_start_token_id", "unk_token_id")]
        batches = random_batches(
            vocab_size=min(model.config.vocab_size for model in loaded.values()),
            batch_size=options.batch,
            source_length=options.source_length,
            num_batches=options.num_batches,
            special_ids=special,
            eos_token_id=config.eos_token_id if isinstance(config.eos_token_id, int) else None,
            seed=options.seed,
        )
        origin = {"kind": "random", "seed": options.seed}
        if len({model.config.vocab_size for model in loaded.values() if hasattr(model, "config")}) > 1:
            notes.append(
                "the models' vocabularies differ, so the same random ids are different tokens to each; "
                "give --data to time them on the same texts"
            )

    if options.compile:
        from nash_cli.generation import compile_model

        for name, model in loaded.items():
            if engines[name].compiles:
                compile_model(model)
    warmup = options.warmup if options.warmup is not None else (3 if options.compile else 1)
    settings = BenchSettings(repeats=options.repeats, warmup=warmup, breakdown=options.breakdown)
    progress = progress or Progress("bench")
    progress.update(total=len(batches) * len(names) * (settings.warmup + settings.repeats + int(options.breakdown)), completed=0)
    result = run_bench(
        engines, batches, generation, settings, baseline=options.baseline,
        on_call=lambda phase, name: progress.advance(status=f"{phase} {Path(name).name}"),
        model_batches=model_batches,
    )
    result.inputs.update(origin)
    result.environment["dtype"] = options.dtype
    staged = BenchStageResult(result=result, notes=notes)
    if options.output is not None:
        artifact.write_files_atomic({options.output: artifact.json_text(staged.to_dict())})
    return staged


STAGE = declare(
    Stage(
        name="bench",
        command="bench",
        options=BenchOptions,
        run=run,
        order=80,
        role="measure",
        reads=ANY_STATE,
        writes=None,
        model_input="models",
        teacher_input="baseline",
        teacher_reads=ANY_STATE,
        data="eval",
        result_file="bench.json",
    )
)
