"""What a training stage loads before its first step: options, models, data and layer maps.

`distill` and `prune-encoder` (and a recipe's `finetune_teacher`) share `TrainingOptions` and
`load_training_inputs`. The order matters for the house rule "a user mistake writes nothing":
every check that can fail on user input (options, checkpoints, data, vocabularies, layer maps)
runs before training starts and before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nash_cli.artifact import LoadOptions
from nash_cli.data import DataOptions, LanguagePair
from nash_cli.errors import NashError
from nash_cli.train.config import TrainConfig

if TYPE_CHECKING:
    from nash_cli.stages import Stage, StageInput


@dataclass(kw_only=True)
class TrainingOptions(TrainConfig, DataOptions, LoadOptions):
    """The options every training stage takes: the run's hyperparameters (`TrainConfig`), its
    data (`DataOptions`), how to load checkpoints (`LoadOptions`), and the models."""

    student: str
    """Student checkpoint to train: a local directory, or a hub id where online."""
    teacher: str | None = None
    """Teacher checkpoint to distil from; without it, plain fine-tuning (cross-entropy)."""
    decoder_layer_map: list[int] | None = None
    """Teacher decoder layer for each student decoder layer (default: the student's nash.json, else 1:1)."""
    encoder_layer_map: list[int] | None = None
    """Teacher encoder layer for each student encoder layer (default: 1:1 when depths match, else no encoder loss)."""

    def check(self) -> None:
        """NashError for impossible settings (hyperparameters, data lengths, maps without a teacher)."""
        TrainConfig.check(self)
        DataOptions.check(self)
        if self.teacher is None and (self.decoder_layer_map or self.encoder_layer_map):
            raise NashError("--decoder-layer-map / --encoder-layer-map need a --teacher; drop them or add --teacher")


def load_features(spec: DataOptions, tokenizer, *, where: str = "the student"):
    """Reads and tokenises the training and eval data. Returns (train, eval or None, the language
    pair set on the tokenizer).

    `--source-lang` / `--target-lang` are set on the tokenizer first (`nash_cli.data.set_languages`),
    so inputs carry the source code and labels, tokenised with `text_target=`, the target code.
    """
    from nash_cli.data import read_examples, set_languages, tokenize_examples

    train = read_examples(spec, limit=spec.limit, require_references=True)
    evaluation = read_examples(spec, "eval", limit=spec.limit, require_references=True)
    languages = set_languages(tokenizer, spec.source_lang, spec.target_lang, where=where)

    def tokenize(examples):
        return tokenize_examples(
            languages.inputs(examples), tokenizer,
            max_source_length=spec.max_source_length, max_target_length=spec.max_target_length,
        )

    return tokenize(train), tokenize(evaluation) if evaluation is not None else None, languages


def fit_batch_to_data(options: TrainConfig, examples: int) -> list[str]:
    """Lowers `options.batch_size` to the number of training examples where it is larger; the notes.

    A global batch larger than the data is filled by repeating examples (`DataOrder`): with
    `--batch-size 100000` on 40 examples every step would hold each example 2,500 times, 2,500
    times the work (or an out-of-memory error) for the gradient of the 40. A data loader gives one
    batch of all the data there, and so does this. A global batch that exceeds the data only
    through `--grad-accum` (or several processes) is kept, with a note: that is the user's
    choice of step, and its examples repeat.
    """
    notes = []
    if options.batch_size > examples:
        notes.append(
            f"--batch-size {options.batch_size} is larger than the {examples} training examples; "
            f"trained with batches of {examples} (each example once a step)"
        )
        options.batch_size = examples
    if options.batch_size * options.grad_accum > examples:
        notes.append(
            f"--batch-size {options.batch_size} x --grad-accum {options.grad_accum} is more than the {examples} "
            "training examples; each step repeats some of them (lower --grad-accum to see each once a step)"
        )
    return notes


def within_positions(spec: DataOptions, config) -> DataOptions:
    """`spec` with its source and target lengths lowered to the model's positions (BART's learned
    positions end at `max_position_embeddings`; a longer sequence is an IndexError mid-step),
    as `nash eval` and `nash bench` truncate their inputs (`generation.source_positions`)."""
    import dataclasses

    from nash_cli.generation import source_positions

    source, _ = source_positions(config, spec.max_source_length)
    target, _ = source_positions(config, spec.max_target_length)
    if (source, target) == (spec.max_source_length, spec.max_target_length):
        return spec
    return dataclasses.replace(spec, max_source_length=source, max_target_length=target)


def check_families(student_config, teacher_config, *, student: str, teacher: str) -> None:
    """NashError unless student and teacher are of one family (checked from their configs, before
    any weights are loaded): the hidden-state losses pair layers of the same architecture."""
    from nash_cli.arch import family_of

    student_family, teacher_family = family_of(student_config).name, family_of(teacher_config).name
    if student_family != teacher_family:
        raise NashError(
            f"the student {student} is a {student_family} model and the teacher {teacher} a {teacher_family} "
            "model; distil from a teacher of the student's family (the checkpoint the student came from)"
        )


def check_vocabularies(
    student, teacher, *, student_tokenizer, teacher_source: str, trust_remote_code: bool = False
) -> None:
    """NashError unless student and teacher share one vocabulary (ids must mean the same tokens)."""
    from nash_cli.artifact import TOKENIZER_FILES, is_local, load_tokenizer

    student_size, teacher_size = student.config.vocab_size, teacher.config.vocab_size
    if student_size != teacher_size:
        raise NashError(
            f"the student's vocabulary has {student_size} entries and the teacher's {teacher_size}; "
            "distil from a teacher with the student's tokenizer (the checkpoint the student came from)"
        )
    has_tokenizer = not is_local(teacher_source) or any((Path(teacher_source) / n).is_file() for n in TOKENIZER_FILES)
    if has_tokenizer:
        try:
            teacher_tokenizer = load_tokenizer(teacher_source, trust_remote_code=trust_remote_code)
        except NashError:
            return
        if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
            raise NashError(
                "the student's and the teacher's tokenizers map tokens to different ids; distil from "
                "a teacher with the student's tokenizer (the checkpoint the student came from)"
            )


def resolve_layer_maps(
    student,
    teacher,
    *,
    student_source: str,
    decoder_layer_map: list[int] | None,
    encoder_layer_map: list[int] | None,
    alpha_dec: float,
    alpha_enc: float,
) -> tuple[list[int] | None, list[int] | None, list[str]]:
    """Pairs student layers with teacher layers for the hidden-state losses.

    Decoder: `--decoder-layer-map`, else the student's manifest (written by select-layers), else
    1:1 when depths match; otherwise NashError (unless the loss is off). Encoder: the flag, the
    manifest, or 1:1 when depths match; otherwise the encoder loss is skipped with a note.

    Returns:
        (encoder map or None, decoder map or None, notes).
    """
    from nash_cli.arch import family_of
    from nash_cli.artifact import read_manifest

    family = family_of(student)
    manifest_maps = (read_manifest(student_source) or {}).get("layer_map") or {}
    notes: list[str] = []
    if student.config.d_model != teacher.config.d_model:
        if alpha_dec > 0 or alpha_enc > 0:
            notes.append(
                f"hidden sizes differ (student {student.config.d_model}, teacher {teacher.config.d_model}): "
                "hidden-state losses are off"
            )
        return None, None, notes

    maps: dict[str, list[int] | None] = {}
    for stack, given, alpha in (("decoder", decoder_layer_map, alpha_dec), ("encoder", encoder_layer_map, alpha_enc)):
        option = f"--{stack}-layer-map"
        student_depth = family.num_layers(student.config, stack)
        teacher_depth = family.num_layers(teacher.config, stack)
        if alpha <= 0:
            maps[stack] = None
            continue
        if given is not None:
            chosen, origin = given, option
        elif manifest_maps.get(stack) is not None:
            chosen, origin = list(manifest_maps[stack]), f"the layer map in {student_source}/nash.json"
        elif student_depth == teacher_depth:
            chosen, origin = list(range(student_depth)), None
        elif stack == "decoder":
            raise NashError(
                f"the student has {student_depth} decoder layers and the teacher {teacher_depth}, and the "
                f"student has no layer map (nash.json); pass --decoder-layer-map (one teacher layer per "
                "student layer, e.g. 0,5,11) or --alpha-dec 0"
            )
        else:
            notes.append(
                f"the student has {student_depth} encoder layers and the teacher {teacher_depth}: the encoder "
                "hidden-state loss is off (pass --encoder-layer-map to pair them)"
            )
            maps[stack] = None
            continue
        if len(chosen) != student_depth:
            raise NashError(
                f"{origin} lists {len(chosen)} layers but the student has {student_depth} {stack} layers; "
                f"give one teacher layer per student layer with {option}"
            )
        bad = [index for index in chosen if not 0 <= index < teacher_depth]
        if bad:
            raise NashError(
                f"{origin} names teacher {stack} layer {bad[0]}, but the teacher has {teacher_depth} "
                f"(0-{teacher_depth - 1}); fix {option}"
            )
        maps[stack] = chosen
    return maps["encoder"], maps["decoder"], notes


@dataclass
class TrainingInputs:
    """Everything a training stage loads before its first step."""

    student: Any
    """The student model."""
    teacher: Any
    """The teacher model, or None for cross-entropy only."""
    tokenizer: Any
    """The student's tokenizer."""
    train_features: Any
    """Tokenised training data."""
    eval_features: Any
    """Tokenised evaluation data, or None."""
    encoder_layer_map: list[int] | None
    """Teacher encoder layer per student encoder layer, or None (no encoder hidden loss)."""
    decoder_layer_map: list[int] | None
    """Teacher decoder layer per student decoder layer, or None."""
    notes: list[str]
    """Notes for the user (e.g. a loss turned off)."""
    student_input: StageInput
    """The student checkpoint as opened: its manifest and state."""
    languages: LanguagePair = field(default_factory=LanguagePair)
    """The language pair set on the tokenizer, which the output's generation config (the forced
    first token) and tokenizer config (`src_lang` / `tgt_lang`) record."""
    storage_dtypes: dict[str, Any] | None = None
    """The student's half-precision tensors and their storage dtypes, by name: it trains in float32
    and they are written back in these dtypes; None for a float32 checkpoint."""


def train_in_float32(model, role: str, mixed_precision: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Converts a model's half-precision (float16 / bfloat16) tensors to float32 in place.

    Trained in their storage dtype, small updates round away (a bf16 student barely changes at
    --lr 3e-5) and fp16 overflows to NaN; mixed precision is `--mixed-precision`'s job, which
    keeps float32 weights and computes in half precision.

    Returns:
        (the storage dtype of each half-precision parameter and buffer, by name, or None when
        there is none; a note for the user, or None).
    """
    import torch

    tensors = [*model.named_parameters(), *model.named_buffers()]
    dtypes = {name: t.dtype for name, t in tensors if t.dtype in (torch.float16, torch.bfloat16)}
    if not dtypes:
        return None, None
    model.float()
    storage = ", ".join(sorted({str(d).removeprefix("torch.") for d in dtypes.values()}))
    compute = (
        f"under --mixed-precision {mixed_precision}"
        if mixed_precision in ("fp16", "bf16")
        else "(pass --mixed-precision bf16 to compute in half precision)"
    )
    if role == "student":
        note = f"the student is stored in {storage}: it trains in float32 {compute} and the output is written in {storage}, like its input"
    else:
        note = f"the teacher is stored in {storage}: it runs in float32 {compute}"
    return dtypes, note


def load_training_inputs(options: TrainingOptions, stage: Stage) -> TrainingInputs:
    """Checks and loads the student, the teacher, the tokenizer, the data and the layer maps.

    Every check that needs no weights (options, checkpoint states, configs, vocabularies, data)
    runs before the models are loaded.

    Args:
        options: The stage's options.
        stage: The training stage's declaration: which checkpoint states its student and teacher
            may be in.
    """
    from nash_cli import artifact
    from nash_cli.arch import turn_off_layerdrop
    from nash_cli.stages import open_input

    options.check()
    opened = open_input(stage, options.student, role="student", allow_pickle=options.allow_pickle)
    if options.teacher is not None:
        open_input(stage, options.teacher, role="teacher", allow_pickle=options.allow_pickle)
    load = {"allow_pickle": options.allow_pickle, "trust_remote_code": options.trust_remote_code}
    student_config = artifact.load_config(options.student, **load)
    teacher_config = None
    if options.teacher is not None:
        teacher_config = artifact.load_config(options.teacher, **load)
        check_families(student_config, teacher_config, student=options.student, teacher=options.teacher)
        if teacher_config.vocab_size != student_config.vocab_size:
            raise NashError(
                f"the student's vocabulary has {student_config.vocab_size} entries and the teacher's "
                f"{teacher_config.vocab_size}; distil from a teacher with the student's tokenizer "
                "(the checkpoint the student came from)"
            )
    tokenizer = artifact.load_tokenizer(options.student, trust_remote_code=options.trust_remote_code)
    train_features, eval_features, languages = load_features(
        within_positions(options, student_config), tokenizer, where=options.student
    )
    notes: list[str] = fit_batch_to_data(options, len(train_features))

    student = artifact.load_model(options.student, config=student_config, **load)
    storage_dtypes, note = train_in_float32(student, "student", options.mixed_precision)
    dtype_notes = [note] if note else []
    languages.record_in(student)  # the output decodes into the target it was trained for
    layerdrop = turn_off_layerdrop(student)
    if layerdrop:
        settings = ", ".join(f"{stack} {probability:g}" for stack, probability in layerdrop.items())
        notes.append(
            f"LayerDrop ({settings}) is off while nash trains: its hidden-state losses compare every layer; "
            "the output's config keeps the setting"
        )
    teacher = None
    encoder, decoder = None, None
    if options.teacher is not None:
        teacher = artifact.load_model(options.teacher, config=teacher_config, **load)
        _, note = train_in_float32(teacher, "teacher", options.mixed_precision)
        dtype_notes += [note] if note else []
        check_vocabularies(
            student, teacher, student_tokenizer=tokenizer, teacher_source=options.teacher,
            trust_remote_code=options.trust_remote_code,
        )
        encoder, decoder, map_notes = resolve_layer_maps(
            student,
            teacher,
            student_source=options.student,
            decoder_layer_map=options.decoder_layer_map,
            encoder_layer_map=options.encoder_layer_map,
            alpha_dec=options.alpha_dec,
            alpha_enc=options.alpha_enc,
        )
        notes.extend(map_notes)
    return TrainingInputs(
        student, teacher, tokenizer, train_features, eval_features, encoder, decoder, dtype_notes + notes, opened,
        storage_dtypes=storage_dtypes, languages=languages,
    )


def teacher_reference(options: TrainingOptions) -> str | None:
    """The teacher as the manifest records it: an absolute path, or the hub id."""
    from nash_cli.artifact import is_local

    if options.teacher is None:
        return None
    return str(Path(options.teacher).absolute()) if is_local(options.teacher) else options.teacher


def train_with(options: TrainingOptions, inputs: TrainingInputs, *, run_info: dict[str, Any], extension=None, progress=None):
    """Runs the training loop (`nash_cli.train.loop.train`) on what `load_training_inputs` loaded.

    Args:
        options: The stage's options (its `TrainConfig` part drives the loop).
        inputs: The loaded models, data and layer maps.
        run_info: The options as recorded in `run.json` (a resumed run notes what changed).
        extension: A `TrainingExtension` (prune-encoder's L0 masks), or None.
        progress: A `nash_cli.progress.Progress` or the description of the one to build.

    Returns:
        The `nash_cli.train.config.TrainResult`.
    """
    from nash_cli.train.loop import train
    from nash_cli.train.state import model_identity

    return train(
        options,
        inputs.student,
        inputs.train_features,
        pad_token_id=inputs.tokenizer.pad_token_id,
        teacher=inputs.teacher,
        eval_features=inputs.eval_features,
        encoder_layer_map=inputs.encoder_layer_map,
        decoder_layer_map=inputs.decoder_layer_map,
        extension=extension,
        run_info=run_info,
        progress=progress,
        models={"student": model_identity(options.student), "teacher": model_identity(options.teacher)},
    )
