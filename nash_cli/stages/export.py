"""`export`: write a nash checkpoint as a CTranslate2 model directory, the engine people serve with.

Input: any dense or compact nash checkpoint (a teacher, select-layers, compact and distill
outputs) of T5 v1.0, T5 v1.1 / FLAN-T5 or BART. A masked checkpoint (prune-encoder's output) is
refused: its pruned units are still in the weights, so `nash compact` comes first.

Output: a directory CTranslate2 loads (`model.bin`, its `config.json`, the vocabulary) with the
tokenizer files, the generation defaults (`generation_config.json`) and a `nash.json` (stage
`export`, engine, quantization, padding, lineage). `nash bench` and `nash eval` recognise it.
With `vocab_map` (training data), it also writes CTranslate2's vocabulary map (`vmap.txt`,
`nash_cli.export.vocab_map`), recorded in `nash.json` as on by default, and reports the map's
size and its coverage of `eval_data`.
The specification is built by `nash_cli.export.spec`; after writing, the export is loaded back
and its greedy output compared with transformers' on random inputs (equal at float32).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nash_cli.artifact import LoadOptions, releases_outputs
from nash_cli.data import HeldOutReading, SourceLength
from nash_cli.errors import NashError, require_at_least, require_finite_options
from nash_cli.export import QUANTIZATIONS
from nash_cli.progress import Progress
from nash_cli.stages import Stage, arguments, declare, open_input
from nash_cli.threads import use_threads

DEVICES = ("auto", "cpu", "cuda")


@dataclass(kw_only=True)
class ExportOptions(HeldOutReading, SourceLength, LoadOptions):
    """What `nash export` does. The data options (`HeldOutReading`, `SourceLength`) read `vocab_map`
    and `eval_data`."""

    checkpoint: str
    """A dense or compact nash checkpoint (a local directory, or a hub id where online)."""
    output: Path
    """Directory to write the CTranslate2 model to."""
    quantization: str = "float32"
    """Weight type: int8, int8_float32, int8_float16, float16, bfloat16 or float32 (exact)."""
    device: str = "auto"
    """Where the export is loaded back and checked: auto (cuda if CTranslate2 sees one), cpu or cuda."""
    verify: bool = True
    """Load the export back and compare its greedy output with transformers' on random inputs."""
    threads: int | None = None
    """CPU threads for torch and CTranslate2 alike (default: `OMP_NUM_THREADS`, else torch's, one
    per core); on a machine shared with other jobs, 1 per job."""
    force: bool = False
    """Replace the output if it exists."""
    vocab_map: str | None = None
    """Training data (any format `distill` reads) for a vocabulary map: decoding is restricted to
    the control tokens, every token of its targets, and each batch's input tokens. None: no map.
    With it, `eval_data` is held-out data whose references' coverage by the map is reported, its
    inputs truncated to `max_source_length` as `nash eval` truncates them."""

    def check(self) -> None:
        """NashError for an unknown quantization or device, data flags without a map, or
        ctranslate2 missing (before anything is read)."""
        require_finite_options(self)
        if self.vocab_map is None:
            # (The column options alone are let through: a recipe passes its data options to every
            # stage that has them; the command line refuses them without --vocab-map.)
            given = [flag for flag, value in (
                ("--eval-data", self.eval_data), ("--split", self.split), ("--eval-split", self.eval_split),
            ) if value]
            if given:
                raise NashError(f"{' / '.join(given)} read the data of a vocabulary map; give --vocab-map train.jsonl too")
        else:
            HeldOutReading.check(self)
        SourceLength.check(self)
        require_at_least("--threads", self.threads)
        if self.quantization not in QUANTIZATIONS:
            raise NashError(f"unknown --quantization {self.quantization!r}; use {', '.join(QUANTIZATIONS)}")
        if self.device not in DEVICES:
            raise NashError(f"unknown --device {self.device!r}; use {', '.join(DEVICES)}")
        from nash_cli.export import available, missing_message

        if not available():  # a recipe with an export stage fails here, before any training
            raise NashError(missing_message())


@dataclass
class ExportResult:
    """What `run` wrote."""

    output: str
    """The CTranslate2 model directory."""
    family: str
    """t5 or bart."""
    state: str
    """The source's state: dense or compact."""
    quantization: str
    """Weight type of the export."""
    parameters: dict[str, int]
    """The source model's parameters (`nash_cli.arch.count_parameters`)."""
    padding: dict[str, Any]
    """Zero heads / FFN units the engine needs (see `nash_cli.export.spec.Padding`)."""
    padding_summary: str
    """What the padding costs, in one sentence."""
    file_size: int
    """Bytes of model.bin."""
    check: dict[str, Any] | None
    """The load-back check: device, compute type, inputs, token agreement with transformers."""
    vocab_map: dict[str, Any] | None
    """The vocabulary map (None without one): file, data, `always_allowed`, `special`,
    `from_targets`, `source_entries`, `unwritable`, `default` (on), and `coverage` of `eval_data`
    (`nash_cli.export.vocab_map.coverage`; None without it)."""
    seconds: float
    """Wall time."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result."""
        return asdict(self)


def _resolve_device(name: str, ct2) -> str:
    if name == "auto":
        return "cuda" if ct2.get_cuda_device_count() > 0 else "cpu"
    if name == "cuda" and ct2.get_cuda_device_count() == 0:
        raise NashError("--device cuda but CTranslate2 sees no CUDA device; use --device cpu")
    return name


def _special_ids(model, tokenizer) -> dict[str, int | None]:
    config = model.config

    def first(value):
        return value[0] if isinstance(value, (list, tuple)) else value

    return {
        "decoder_start": config.decoder_start_token_id,
        "eos": first(config.eos_token_id),
        "bos": getattr(config, "bos_token_id", None),
        "unk": getattr(tokenizer, "unk_token_id", None),
        "pad": config.pad_token_id,
    }


def _model_config(model, family, vocab_size: int, special: dict[str, int | None]) -> dict[str, Any]:
    """The transformers config fields bench and eval read from an export."""
    config = model.config
    return {
        "model_type": config.model_type,
        "family": family.name,
        "vocab_size": vocab_size,
        "pad_token_id": special["pad"],
        "eos_token_id": config.eos_token_id,
        "bos_token_id": special["bos"],
        "decoder_start_token_id": special["decoder_start"],
        "unk_token_id": special["unk"],
        "max_position_embeddings": getattr(config, "max_position_embeddings", None),
        "encoder_layers": len(family.layers(model, "encoder")),
        "decoder_layers": len(family.layers(model, "decoder")),
    }


def _control_ids(model, special: dict[str, int | None], tokenizer=None) -> list[int]:
    """Ids decoding must always be able to emit: pad, every eos, bos, unk, decoder start, the
    forced first / last tokens of the config and the generation config, and the target
    language's code the tokenizer is set to (a translation model emits it first: with
    transformers it is the forced first token, given at call time when the checkpoint does not
    set one)."""
    from nash_cli.arch.tokenizers import tokenizer_languages

    generation = getattr(model, "generation_config", None)
    forced = ("forced_bos_token_id", "forced_eos_token_id")
    values = list(special.values()) + [model.config.eos_token_id] + [
        getattr(generation, key, None) for key in ("eos_token_id", "decoder_start_token_id", *forced)
    ] + [getattr(model.config, key, None) for key in forced]
    if tokenizer is not None:
        languages = tokenizer_languages(tokenizer)
        if languages.target is not None:
            values.append(languages.codes[languages.target])
    ids = []
    for value in values:
        ids += [int(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if v is not None]
    return sorted(set(ids))


def _map_data(options: ExportOptions) -> tuple[list, list | None]:
    """The training examples of the map and the held-out ones of its coverage (read before
    anything is written, so a bad file or column fails first)."""
    from nash_cli.data import read_examples

    train = read_examples(options, data=options.vocab_map, require_references=True)
    return train, read_examples(options, "eval", require_references=True)


def _token_ids(tokenizer, texts: list[str], *, target: bool, max_length: int | None = None,
               chunk: int = 1000) -> list[list[int]]:
    # Targets as training tokenises them (text_target, untruncated: every token they hold
    # counts); inputs as nash eval does (truncated to --max-source-length).
    ids: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        if target:
            ids += tokenizer(text_target=part)["input_ids"]
        else:
            ids += tokenizer(part, truncation=True, max_length=max_length)["input_ids"]
    return ids


def _build_map(options: ExportOptions, tokenizer, tokens: list[str], control: list[int], train, held_out):
    """The vocabulary map of `train`'s targets, and its report (with the coverage of `held_out`)."""
    from nash_cli.export.vocab_map import VMAP_FILE, build_vocabulary_map, coverage

    references = [reference for example in train for reference in example.references]
    vocab_map = build_vocabulary_map(
        tokens, target_ids=_token_ids(tokenizer, references, target=True), special_ids=control
    )
    report = {
        "file": VMAP_FILE,
        "default": True,
        "data": options.vocab_map,
        "examples": len(train),
        "references": len(references),
        **vocab_map.summary(),
        "coverage": None,
    }
    if held_out is not None:
        flat = [reference for example in held_out for reference in example.references]
        reference_ids = iter(_token_ids(tokenizer, flat, target=True))
        grouped = [[next(reference_ids) for _ in example.references] for example in held_out]
        inputs = _token_ids(tokenizer, [example.source for example in held_out], target=False,
                            max_length=options.max_source_length)
        report["coverage"] = {"data": options.eval_data, **coverage(grouped, inputs, vocab_map.always)}
    return vocab_map, report


def verify_export(model, directory: Path, *, device: str, quantization: str, batch: int = 4, length: int = 24,
                  new_tokens: int = 16) -> dict[str, Any]:
    """Greedy outputs of the export and of the transformers model on the same random inputs.

    transformers generates with the settings CTranslate2 does not reproduce turned off
    (`nash_cli.export.runtime.unmatched_settings`: BART's forced end-of-sequence at the length
    cap, `bad_words_ids`, ...), so the two engines are compared on what they are meant to agree
    on; the check names them in `left_out`.

    Returns the device, compute type, the settings left out and how many of the generated tokens
    agree; at float32 they are equal (anything else is a converter bug).
    """
    import torch

    from nash_cli.batches import random_batches
    from nash_cli.export.runtime import CTranslate2Model, unmatched_settings
    from nash_cli.generation import GenerationSettings, generate_kwargs

    engine = CTranslate2Model(directory, device=device, vocab_map=False)  # the model itself, unrestricted
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or length
    special = [getattr(config, key, None) for key in ("pad_token_id", "eos_token_id", "bos_token_id",
                                                      "decoder_start_token_id")]
    (inputs,) = random_batches(
        vocab_size=engine.config.vocab_size,
        batch_size=batch,
        source_length=min(length, limit),
        special_ids=special,
        eos_token_id=config.eos_token_id if isinstance(config.eos_token_id, int) else None,
        seed=1234,
    )
    settings = GenerationSettings(num_beams=1, max_new_tokens=new_tokens)
    # The export's own generation config, the one CTranslate2 reads, decides what is left out.
    left_out = unmatched_settings(engine.generation_config)
    with torch.inference_mode():
        expected = model.generate(
            input_ids=inputs.input_ids.to(model.device),
            attention_mask=inputs.attention_mask.to(model.device),
            **generate_kwargs(model, settings),
            **left_out,
        ).cpu()
    got = engine.generate(inputs.input_ids, inputs.attention_mask, settings)
    width = max(expected.shape[1], got.shape[1])

    def padded(tensor):
        return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=-1)

    same = (padded(expected) == padded(got))[:, 1:]  # column 0 is the decoder start token
    return {
        "device": device,
        "compute_type": engine.translator.compute_type,
        "inputs": {"batch": batch, "source_length": int(inputs.input_ids.shape[1]), "new_tokens": new_tokens,
                   "search": "greedy"},
        "left_out": sorted(left_out),
        "tokens_equal": bool(same.all()),
        "token_agreement": float(same.float().mean()),
        "exact_expected": quantization == "float32" and engine.translator.compute_type == "float32",
    }


@releases_outputs
def run(options: ExportOptions, *, progress: Progress | None = None) -> ExportResult:
    """Converts a checkpoint to a CTranslate2 model directory.

    Args:
        options: The stage's options.
        progress: Advanced through the steps (load, build, map, write, check), each named.

    Raises:
        NashError: a bad option, an existing output without `force`, ctranslate2 missing, a masked
            checkpoint, an unsupported model; nothing is written then.
    """
    from nash_cli.export import require_ctranslate2

    progress = progress or Progress("export")
    started = time.perf_counter()
    options.check()
    use_threads(options.threads)  # before any torch work: --threads, else OMP_NUM_THREADS
    from nash_cli import artifact

    artifact.check_output(
        options.output,
        options.force,
        kind="export",
        inputs={"checkpoint": options.checkpoint, "vocabulary map data": options.vocab_map, "eval data": options.eval_data},
    )
    ct2 = require_ctranslate2()
    device = _resolve_device(options.device, ct2)
    manifest = open_input(STAGE, options.checkpoint, allow_pickle=options.allow_pickle).manifest
    map_data = _map_data(options) if options.vocab_map is not None else None

    import torch

    from nash_cli._hf import quiet_transformers
    from nash_cli.arch import count_parameters, family_of
    from nash_cli.data import set_languages
    from nash_cli.export.spec import activation_of, build_spec, vocabulary

    load = {"allow_pickle": options.allow_pickle, "trust_remote_code": options.trust_remote_code}
    config = artifact.load_config(options.checkpoint, **load)
    family = family_of(config)
    tokenizer = artifact.load_tokenizer(options.checkpoint, trust_remote_code=options.trust_remote_code)
    if map_data is not None:  # the map's targets carry the target language's code, as training's labels do
        set_languages(tokenizer, options.source_lang, options.target_lang, where=options.checkpoint)
    steps = 3 + (map_data is not None) + options.verify
    progress.update(total=steps, status="loading")
    model = artifact.load_model(options.checkpoint, config=config, dtype=torch.float32, **load)
    activation_of(family.anatomy(model).activation)  # an unsupported activation fails before writing
    progress.advance(status="building the CTranslate2 model")
    size = model.get_input_embeddings().weight.shape[0]
    tokens = vocabulary(tokenizer, size)
    special = _special_ids(model, tokenizer)
    with torch.no_grad():
        spec, padding = build_spec(model, tokens, special)
        spec.validate()
        spec.optimize(quantization=options.quantization)
    parameters = count_parameters(model)
    state = manifest.get("state", "dense")
    notes = []
    vocab_map = map_report = None
    if map_data is not None:
        progress.advance(status="building the vocabulary map")
        vocab_map, map_report = _build_map(options, tokenizer, tokens, _control_ids(model, special, tokenizer), *map_data)
        if vocab_map.unwritable:
            notes.append(
                f"{len(vocab_map.unwritable)} vocabulary tokens hold a space, tab or line break, which a "
                "vocabulary map cannot name; the map never allows them"
            )
    extra = {
        "engine": "ctranslate2",
        "quantization": options.quantization,
        "ctranslate2": {
            "version": ct2.__version__,
            "parameters": parameters,
            "padding": padding.to_dict(),
            "model_config": _model_config(model, family, size, special),
            "vocabulary_map": map_report,
        },
        "compact": manifest.get("compact"),
    }
    new_manifest = artifact.build_manifest(
        source=options.checkpoint, stage="export", arguments=arguments(options), state=state, layer_map=None, extra=extra
    )
    check = None
    with artifact.staged_output(options.output, force=options.force, kind="export") as staging, quiet_transformers():
        progress.advance(status="writing")
        spec.save(str(staging))
        del spec
        if vocab_map is not None:
            from nash_cli.export.vocab_map import VMAP_FILE, vmap_text

            artifact.write_files_atomic({staging / VMAP_FILE: vmap_text(tokens, vocab_map)})
        new_manifest["tokenizer_files"] = artifact.copy_tokenizer(options.checkpoint, staging)
        artifact.save_generation_config(options.checkpoint, model, staging)
        artifact.write_files_atomic({staging / artifact.MANIFEST: artifact.json_text(new_manifest)})
        if options.verify:
            progress.advance(status="checking the export against transformers")
            check = verify_export(model, staging, device=device, quantization=options.quantization)
            new_manifest["ctranslate2"]["check"] = check
            artifact.write_files_atomic({staging / artifact.MANIFEST: artifact.json_text(new_manifest)})
            if check["left_out"]:
                notes.append(
                    f"the load-back check generated with {', '.join(check['left_out'])} off in transformers: "
                    "CTranslate2 has no equivalent, so outputs that depend on them differ by design "
                    "(docs/export.md, \"What is exact\")"
                )
            if check["exact_expected"] and not check["tokens_equal"]:
                notes.append(
                    "the float32 export's greedy output differs from transformers' on random inputs: please report "
                    "this as a nash bug, with the checkpoint's config.json"
                )
    progress.advance(status="written")
    return ExportResult(
        output=str(options.output),
        family=family.name,
        state=state,
        quantization=options.quantization,
        parameters=parameters,
        padding=padding.to_dict(),
        padding_summary=padding.summary(),
        file_size=(Path(options.output) / "model.bin").stat().st_size,
        check=check,
        vocab_map=map_report,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


STAGE = declare(
    Stage(
        name="export",
        command="export",
        options=ExportOptions,
        run=run,
        order=70,
        role="branch",
        writes=None,
        data_switches=("vocab_map",),
    )
)
