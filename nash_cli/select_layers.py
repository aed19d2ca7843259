"""The select-layers stage: plan which layers to keep, build the student, write it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nash_cli.arch import family_of
from nash_cli.errors import NashError
from nash_cli.surgery.layers import check_indices, parse_indices, strategy_indices


@dataclass(frozen=True)
class SelectionPlan:
    """Which teacher layers a student keeps."""

    decoder: list[int]
    """Teacher decoder layers kept, in order; student layer i is teacher layer decoder[i]."""
    encoder: list[int] | None
    """Teacher encoder layers kept, or None to keep the whole encoder."""
    teacher_depths: dict[str, int]
    """The teacher's encoder and decoder depths."""


def plan_selection(
    config,
    *,
    decoder_layers: int | None = None,
    layers: str | list[int] | None = None,
    strategy: str = "uniform",
    encoder_layers: int | None = None,
) -> SelectionPlan:
    """Validates the requested selection against the teacher's config.

    Raises:
        NashError: for an impossible count, or duplicate or out-of-range indices.
    """
    family = family_of(config)
    depths = {stack: family.num_layers(config, stack) for stack in ("encoder", "decoder")}
    if layers is not None:
        indices = parse_indices(layers) if isinstance(layers, str) else list(layers)
        decoder = check_indices(indices, depths["decoder"], "decoder")
    elif decoder_layers is not None:
        decoder = strategy_indices(strategy, depths["decoder"], decoder_layers)
    else:
        raise NashError("say which decoder layers to keep: --decoder-layers K or --layers 0,5,11")
    encoder = None
    if encoder_layers is not None:
        encoder = strategy_indices(strategy, depths["encoder"], encoder_layers)
    return SelectionPlan(decoder=decoder, encoder=encoder, teacher_depths=depths)


def run_selection(
    checkpoint: str | Path,
    output: str | Path,
    plan: SelectionPlan,
    *,
    config=None,
    arguments: dict[str, Any],
    force: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Loads the teacher, keeps the planned layers, writes the student; returns a result summary."""
    from nash_cli import artifact
    from nash_cli.surgery.layers import count_parameters, select_layers

    teacher = artifact.load_model(
        checkpoint, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, config=config
    )
    before = count_parameters(teacher)
    student = select_layers(teacher, decoder=plan.decoder, encoder=plan.encoder)
    del teacher
    after = count_parameters(student)

    parent_map = (artifact.read_manifest(checkpoint) or {}).get("layer_map") or {}
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
    if family.name == "t5" and decoder_depth > encoder_depth:
        notes.append(
            f"the decoder ({decoder_depth} layers) is deeper than the encoder ({encoder_depth}); stock "
            "transformers sizes T5's generation cache by the encoder, so pass "
            "cache=EncoderDecoderCache(DynamicCache(), DynamicCache()) to generate() (nash bench/eval do)"
        )
    result = {
        "output": str(output),
        "stage": "select-layers",
        "kept": {"decoder": plan.decoder, "encoder": plan.encoder},
        "layer_map": layer_map,
        "teacher_depths": plan.teacher_depths,
        "parameters": {"before": before, "after": after},
        "notes": notes,
    }
    artifact.save_checkpoint(
        student,
        output,
        source=checkpoint,
        stage="select-layers",
        arguments=arguments,
        state="dense",
        layer_map=layer_map,
        extra={"select_layers": {"kept": result["kept"], "parameters": result["parameters"]}},
        force=force,
    )
    return result


def _compose(parent: list[int] | None, kept: list[int] | None) -> list[int] | None:
    """Maps kept parent layers back to the original teacher's layers."""
    if kept is None:
        return None
    if parent is None:
        return list(kept)
    return [parent[i] for i in kept]
