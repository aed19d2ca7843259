"""`select-layers`: the shallow decoder. Keep k of the teacher's decoder layers and write the student.

The index rules and the surgery are `nash_cli.surgery.layers`; this module plans the selection
against the teacher's config, runs it, composes the layer map back to the original teacher and
writes the checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nash_cli.artifact import LoadOptions, releases_outputs
from nash_cli.errors import NashError, require_finite_options
from nash_cli.progress import Progress
from nash_cli.stages import Stage, arguments, declare, open_input, output_state

STRATEGIES = ("uniform", "low", "high")


@dataclass(kw_only=True)
class SelectLayersOptions(LoadOptions):
    """What `nash select-layers` does. Give `decoder_layers` (a count) or `layers` (indices)."""

    checkpoint: str
    """Teacher checkpoint: a local directory, or a hub id where online."""
    output: Path
    """Directory to write the student to."""
    decoder_layers: int | None = None
    """How many decoder layers to keep."""
    strategy: str = "uniform"
    """Which layers a count keeps: uniform (NASH), low (first k) or high (last k)."""
    layers: list[int] | None = None
    """Explicit teacher decoder layers to keep, e.g. [0, 5, 11]."""
    encoder_layers: int | None = None
    """Also keep only this many encoder layers (same strategy; an ablation)."""
    force: bool = False
    """Replace the output if it exists."""

    def check(self) -> None:
        """NashError for a selection that no teacher can satisfy."""
        require_finite_options(self)
        if self.layers is not None and self.decoder_layers is not None:
            raise NashError("--layers and --decoder-layers both given; use one: a count with --strategy, or explicit indices")
        if self.layers is None and self.decoder_layers is None:
            raise NashError("say which decoder layers to keep: --decoder-layers K (e.g. 3) or --layers 0,5,11")
        if self.strategy not in STRATEGIES:
            raise NashError(f"unknown --strategy {self.strategy!r}; use uniform, low or high")
        for name, value in (("decoder_layers", self.decoder_layers), ("encoder_layers", self.encoder_layers)):
            if value is not None and value < 1:
                flag = "--" + name.replace("_", "-")
                raise NashError(f"cannot keep {value} layers ({flag}, {name} in a recipe); keep at least 1")


@dataclass(frozen=True)
class SelectionPlan:
    """Which teacher layers a student keeps."""

    decoder: list[int]
    """Teacher decoder layers kept, in order; student layer i is teacher layer decoder[i]."""
    encoder: list[int] | None
    """Teacher encoder layers kept, or None to keep the whole encoder."""
    teacher_depths: dict[str, int]
    """The teacher's encoder and decoder depths."""


@dataclass
class SelectLayersResult:
    """What `run` did."""

    output: str
    """The written student."""
    kept: dict[str, list[int] | None]
    """Teacher layers kept per stack (encoder None: all kept)."""
    layer_map: dict[str, list[int] | None]
    """Kept layers composed back to the original teacher (through earlier selections)."""
    teacher_depths: dict[str, int]
    """The teacher's encoder and decoder depths."""
    parameters: dict[str, dict[str, int]]
    """`{"before"|"after": nash_cli.arch.count_parameters(...)}`."""
    notes: list[str]
    """Things the user should know."""
    stage: str = "select-layers"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result."""
        return asdict(self)


def plan_selection(config, options: SelectLayersOptions) -> SelectionPlan:
    """Validates the requested selection against the teacher's config.

    Raises:
        NashError: for an impossible count, or duplicate or out-of-range indices.
    """
    from nash_cli.arch import family_of
    from nash_cli.surgery.layers import check_indices, strategy_indices

    family = family_of(config)
    depths = {stack: family.num_layers(config, stack) for stack in ("encoder", "decoder")}
    if options.layers is not None:
        decoder = check_indices(list(options.layers), depths["decoder"], "decoder")
    else:
        decoder = strategy_indices(options.strategy, depths["decoder"], options.decoder_layers)
    encoder = None
    if options.encoder_layers is not None:
        encoder = strategy_indices(options.strategy, depths["encoder"], options.encoder_layers)
    return SelectionPlan(decoder=decoder, encoder=encoder, teacher_depths=depths)


@releases_outputs
def run(options: SelectLayersOptions, *, progress: Progress | None = None) -> SelectLayersResult:
    """Loads the teacher, keeps the chosen layers, writes the student.

    `progress`, when given, is advanced through the three steps (load, select, write).

    Every check that needs no weights (options, output, config, the selection) runs first.

    Raises:
        NashError: a bad selection, an unreadable or unsupported checkpoint, a masked checkpoint
            (its masks would be dropped: compact it first), an existing output without `force`.
    """
    from nash_cli import artifact
    from nash_cli.arch import count_parameters, family_of
    from nash_cli.surgery.layers import select_layers

    progress = progress or Progress("select-layers")
    options.check()
    artifact.check_output(options.output, options.force, inputs={"checkpoint": options.checkpoint})
    source = open_input(STAGE, options.checkpoint, allow_pickle=options.allow_pickle)
    load = {"allow_pickle": options.allow_pickle, "trust_remote_code": options.trust_remote_code}
    config = artifact.load_config(options.checkpoint, **load)
    plan = plan_selection(config, options)
    progress.update(total=3, status="loading")
    teacher = artifact.load_model(options.checkpoint, config=config, **load)
    before = count_parameters(teacher)
    progress.advance(status="selecting")
    student = select_layers(teacher, decoder=plan.decoder, encoder=plan.encoder)
    del teacher
    after = count_parameters(student)

    parent_map = source.manifest.get("layer_map") or {}
    layer_map = {
        "decoder": _compose(parent_map.get("decoder"), plan.decoder),
        "encoder": _compose(parent_map.get("encoder"), plan.encoder)
        if plan.encoder is not None
        else parent_map.get("encoder"),
    }
    notes = []
    family = family_of(student)
    encoder_depth = family.num_layers(student.config, "encoder")
    decoder_depth = family.num_layers(student.config, "decoder")
    if family.generation_cache_follows_encoder and decoder_depth > encoder_depth:
        notes.append(
            f"the decoder ({decoder_depth} layers) is deeper than the encoder ({encoder_depth}); stock "
            "transformers sizes this model's generation cache by the encoder, so pass "
            "cache=EncoderDecoderCache(DynamicCache(), DynamicCache()) to generate() (nash bench/eval do)"
        )
    result = SelectLayersResult(
        output=str(options.output),
        kept={"decoder": plan.decoder, "encoder": plan.encoder},
        layer_map=layer_map,
        teacher_depths=plan.teacher_depths,
        parameters={"before": before, "after": after},
        notes=notes,
    )
    progress.advance(status="writing")
    artifact.save_checkpoint(
        student,
        options.output,
        source=options.checkpoint,
        stage="select-layers",
        arguments=arguments(options),
        # a compact parent's narrow encoder is kept as it is: the student is compact too
        state=output_state(STAGE, source.state),
        layer_map=layer_map,
        extra={"select_layers": {"kept": result.kept, "parameters": result.parameters}},
        force=options.force,
    )
    progress.advance(status="written")
    return result


def _compose(parent: list[int] | None, kept: list[int] | None) -> list[int] | None:
    """Maps kept parent layers back to the original teacher's layers."""
    if kept is None:
        return None
    if parent is None:
        return list(kept)
    return [parent[i] for i in kept]


STAGE = declare(Stage(name="select_layers", command="select-layers", options=SelectLayersOptions, run=run, order=20))
