"""`distill` as a library call, and the setup steps `prune-encoder` shares with it.

The order matters for the house rule "a user mistake writes nothing": every check that can
fail on user input (options, checkpoints, data, vocabularies, layer maps) runs before training
starts and before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nash_cli.errors import NashError
from nash_cli.train.config import TrainConfig


@dataclass
class DataSpec:
    """Where the examples come from and how to read them (the shared data options)."""

    data: str
    """Training data: a local file or directory, or a hub dataset name."""
    split: str | None = None
    """Split of the training data (hub / saved DatasetDict / JSON keyed by split)."""
    eval_data: str | None = None
    """Held-out data, read with the same column options."""
    eval_split: str | None = None
    """Split of the eval data (default: "validation" where splits exist)."""
    source_column: str | None = None
    """Input column (default: a common name such as source / document / dialogue)."""
    target_column: str | None = None
    """Reference column (default: a common name such as target / summary / answer)."""
    source_template: str | None = None
    """Builds the input from several columns, e.g. "question: {Question} context: {Tweet}"."""
    source_prefix: str = ""
    """Text put before every input."""
    max_source_length: int = 512
    """Longest input in tokens."""
    max_target_length: int = 128
    """Longest target in tokens."""
    limit: int | None = None
    """Use only the first N training (and eval) examples."""


def parse_layer_map(text: str | None, option: str) -> list[int] | None:
    """Parses "0,5,11" into [0, 5, 11]; NashError naming `option` when malformed."""
    if text is None:
        return None
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise NashError(f"{option} {text!r} is not a list of layer numbers; write it like 0,5,11") from None
    if not values:
        raise NashError(f"{option} is empty; write it like 0,5,11")
    return values


def load_features(spec: DataSpec, tokenizer):
    """Reads and tokenises the training and eval data. Returns (train, eval or None)."""
    from nash_cli.data import load_examples, tokenize_examples

    def read(data: str, split: str | None):
        examples = load_examples(
            data,
            split=split,
            source_column=spec.source_column,
            target_column=spec.target_column,
            source_template=spec.source_template,
            source_prefix=spec.source_prefix,
            limit=spec.limit,
            require_references=True,
        )
        return tokenize_examples(
            examples, tokenizer, max_source_length=spec.max_source_length, max_target_length=spec.max_target_length
        )

    train = read(spec.data, spec.split)
    evaluation = None
    if spec.eval_data is not None:
        # Files without splits ignore it; hub data, saved DatasetDicts and JSON keyed by split use it.
        evaluation = read(spec.eval_data, spec.eval_split or "validation")
    return train, evaluation


def check_vocabularies(student, teacher, *, student_tokenizer, teacher_source: str) -> None:
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
            teacher_tokenizer = load_tokenizer(teacher_source)
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


def load_training_inputs(
    student_source: str,
    teacher_source: str | None,
    *,
    data: DataSpec,
    config: TrainConfig,
    decoder_layer_map: str | None = None,
    encoder_layer_map: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    student_config: Any = None,
) -> TrainingInputs:
    """Checks and loads the student, the teacher, the tokenizer, the data and the layer maps.

    Every check that needs no weights (layer-map syntax, configs, vocabularies, data) runs before
    the models are loaded. Shared by `distill` and `prune-encoder`.
    """
    from nash_cli import artifact

    decoder_map = parse_layer_map(decoder_layer_map, "--decoder-layer-map")
    encoder_map = parse_layer_map(encoder_layer_map, "--encoder-layer-map")
    if teacher_source is None and (decoder_map or encoder_map):
        raise NashError("--decoder-layer-map / --encoder-layer-map need a --teacher; drop them or add --teacher")
    if student_config is None:
        student_config = artifact.load_config(student_source, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    teacher_config = None
    if teacher_source is not None:
        teacher_config = artifact.load_config(teacher_source, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        if teacher_config.vocab_size != student_config.vocab_size:
            raise NashError(
                f"the student's vocabulary has {student_config.vocab_size} entries and the teacher's "
                f"{teacher_config.vocab_size}; distil from a teacher with the student's tokenizer "
                "(the checkpoint the student came from)"
            )
    tokenizer = artifact.load_tokenizer(student_source)
    train_features, eval_features = load_features(data, tokenizer)

    student = artifact.load_model(
        student_source, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, config=student_config
    )
    teacher = None
    notes: list[str] = []
    encoder, decoder = None, None
    if teacher_source is not None:
        teacher = artifact.load_model(
            teacher_source, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, config=teacher_config
        )
        check_vocabularies(student, teacher, student_tokenizer=tokenizer, teacher_source=teacher_source)
        encoder, decoder, notes = resolve_layer_maps(
            student,
            teacher,
            student_source=student_source,
            decoder_layer_map=decoder_map,
            encoder_layer_map=encoder_map,
            alpha_dec=config.alpha_dec,
            alpha_enc=config.alpha_enc,
        )
    return TrainingInputs(student, teacher, tokenizer, train_features, eval_features, encoder, decoder, notes)


def run_distill(
    student_source: str,
    *,
    teacher_source: str | None,
    output: Path,
    data: DataSpec,
    config: TrainConfig,
    arguments: dict[str, Any],
    decoder_layer_map: str | None = None,
    encoder_layer_map: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Distils (or, without a teacher, fine-tunes) a student and writes it to `output`.

    Returns the JSON-ready result (on every process; only the main process writes).
    """
    from nash_cli import artifact
    from nash_cli.train.loop import train
    from nash_cli.train.outputs import save_output

    config.check()
    artifact.check_output(output, config.force)
    inputs = load_training_inputs(
        student_source,
        teacher_source,
        data=data,
        config=config,
        decoder_layer_map=decoder_layer_map,
        encoder_layer_map=encoder_layer_map,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    student, teacher, tokenizer = inputs.student, inputs.teacher, inputs.tokenizer
    train_features, eval_features = inputs.train_features, inputs.eval_features
    encoder, decoder, notes = inputs.encoder_layer_map, inputs.decoder_layer_map, inputs.notes

    result = train(
        config,
        student,
        train_features,
        pad_token_id=tokenizer.pad_token_id,
        teacher=teacher,
        eval_features=eval_features,
        encoder_layer_map=encoder,
        decoder_layer_map=decoder,
        run_info=arguments,
    )
    manifest = artifact.read_manifest(student_source) or {}
    save_output(
        result,
        output,
        source=student_source,
        stage="distill",
        arguments=arguments,
        state=manifest.get("state", "dense"),
        extra={"teacher_checkpoint": str(Path(teacher_source).absolute()) if teacher_source and artifact.is_local(teacher_source) else teacher_source},
        force=config.force,
    )
    return {
        "output": str(output),
        "student": student_source,
        "teacher": teacher_source,
        **result.summary(),
        "train_log": str(Path(output) / "train_log.jsonl"),
        "notes": notes + result.notes,
    }
