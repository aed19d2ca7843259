"""The compact stage: remove masked encoder heads and FFN units physically.

Input: a `masked` checkpoint (trained weights in `model.safetensors`, L0 masks in
`masks.safetensors`). Output: a `compact` checkpoint whose logits equal the masked model's
(deterministic masks). Layers keep different widths, so the output config lists each encoder
layer's kept heads and FFN width and names nash's self-contained modeling file (copied into the
output) in `auto_map`; when the stock config can express the result, a plain config is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nash_cli.arch import family_of
from nash_cli.errors import NashError
from nash_cli.masking import encoder_shape, load_masks, non_embedding_params, total_params
from nash_cli.surgery.prune import LinearKeys, Plan, apply_plan, attention_plan, ffn_plan, kept_indices


@dataclass
class CompactPlan:
    """What each encoder layer keeps, in terms of the model's original heads and units."""

    heads: list[list[int]]
    """Kept head indices per encoder layer (indices of the original, unpruned model)."""
    units: list[list[int]]
    """Kept FFN unit indices per encoder layer (indices into the layer's current FFN)."""
    local_heads: list[list[int]] = field(default_factory=list)
    """Kept head indices per layer relative to the layer's current heads (what the weights are sliced by)."""


def plan_from_masks(model, heads_mask: torch.Tensor, ffn_mask: torch.Tensor) -> CompactPlan:
    """Turns binary masks into kept indices; heads are mapped back to the original model's heads.

    A model that is already a nash compact model (per-layer head subsets) maps mask column k of
    layer l to its k-th kept original head.
    """
    local = [kept_indices(row) for row in heads_mask]
    units = [kept_indices(row) for row in ffn_mask]
    config = model.config
    if getattr(config, "encoder_heads", None) is not None:
        original = [[config.encoder_layer_heads(i)[k] for k in row] for i, row in enumerate(local)]
    else:
        original = [list(row) for row in local]
    return CompactPlan(heads=original, units=units, local_heads=local)


def _full_heads(config, family) -> int:
    return config.num_heads if family.name == "t5" else config.encoder_attention_heads


def _full_ffn(config, family) -> int:
    return config.d_ff if family.name == "t5" else config.encoder_ffn_dim


def compact_config(config, plan: CompactPlan):
    """The output config: stock when it can express the widths, else nash's per-layer config.

    Stock T5 has one `num_heads` and `d_ff` for both stacks and one relative-position bias shared
    by all layers, so it fits only when nothing was pruned. Stock BART has separate encoder
    widths but derives the head size from d_model / heads, so it fits when every layer keeps all
    heads and the same number of FFN units.

    Returns:
        `(config, custom)`: the new config and whether it needs nash's modeling file.
    """
    from nash_cli import modeling

    family = family_of(config)
    full_heads = _full_heads(config, family)
    all_heads = all(row == list(range(full_heads)) for row in plan.heads)
    widths = {len(row) for row in plan.units}
    data = config.to_dict()
    if all_heads and len(widths) == 1 and getattr(config, "encoder_heads", None) is None:
        width = widths.pop()
        if family.name == "bart" or width == _full_ffn(config, family):
            new = type(config).from_dict(data)
            if family.name == "bart":
                new.encoder_ffn_dim = width
            return new, False
    config_class, model_class = modeling.classes(family.name)
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        data.pop(key, None)
    data["encoder_heads"] = [list(row) for row in plan.heads]
    data["encoder_ffn_dims"] = [len(row) for row in plan.units]
    new = config_class.from_dict(data)
    new.architectures = [model_class.__name__]
    new.auto_map = modeling.auto_map(family.name)
    return new, True


def _linear_keys(names: dict[int, str], linear) -> LinearKeys:
    name = names[id(linear)]
    return LinearKeys(weight=f"{name}.weight", bias=f"{name}.bias" if linear.bias is not None else None)


def slicing_plan(model, plan: CompactPlan) -> Plan:
    """The state-dict slicing that removes every pruned head and FFN unit of `model`'s encoder."""
    family = family_of(model)
    names = {id(module): name for name, module in model.named_modules()}
    slices: Plan = {}
    for index, layer in enumerate(family.layers(model, "encoder")):
        attention = family.self_attention(layer)
        ffn = family.ffn(layer)
        slices.update(
            attention_plan(
                *(_linear_keys(names, linear) for linear in (attention.q, attention.k, attention.v, attention.o)),
                kept_heads=plan.local_heads[index],
                head_dim=attention.head_dim,
            )
        )
        slices.update(
            ffn_plan([_linear_keys(names, linear) for linear in ffn.inputs], _linear_keys(names, ffn.output), plan.units[index])
        )
    return slices


def compact_model(model, heads_mask: torch.Tensor, ffn_mask: torch.Tensor):
    """Builds the compact model equal to `model` under the binary masks (returns `(model, custom)`).

    The input model is not modified.
    """
    from nash_cli import modeling
    from nash_cli._hf import quiet_transformers

    plan = plan_from_masks(model, heads_mask, ffn_mask)
    state = apply_plan(model.state_dict(), slicing_plan(model, plan))
    config, custom = compact_config(model.config, plan)
    if custom:
        model_class = modeling.classes(family_of(model).name)[1]
    else:
        model_class = type(model)
    with quiet_transformers():
        compact = model_class.from_pretrained(None, config=config, state_dict=state, dtype=next(model.parameters()).dtype)
    return compact.eval(), custom


@dataclass
class CompactResult:
    """What `run_compact` did, for printing and JSON."""

    output: str
    """The written checkpoint."""
    custom_code: bool
    """Whether the output needs nash's modeling file (per-layer widths)."""
    parameters: dict[str, dict[str, int]]
    """`{"before"|"after": {"total", "non_embedding"}}`."""
    heads: list[int]
    """Kept heads per encoder layer."""
    units: list[int]
    """Kept FFN units per encoder layer."""
    full_heads: int
    """Heads per layer before compaction."""
    full_units: int
    """FFN units per layer before compaction."""
    file_size: int
    """Bytes of the output's weight files."""
    seconds: float
    """Wall time of loading, slicing and writing."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_masked(source: str | Path) -> dict[str, Any]:
    """The manifest of a masked checkpoint; NashError for a dense or compact input."""
    from nash_cli import artifact

    artifact.check_checkpoint(source)
    manifest = artifact.read_manifest(source)
    state = (manifest or {}).get("state", "dense")
    if state != "masked":
        raise NashError(
            f"{source} is a {state} checkpoint with no masks: nothing to compact; compact the output of "
            "nash prune-encoder"
        )
    return manifest


def run_compact(source: str | Path, output: str | Path, *, arguments: dict[str, Any], force: bool = False) -> CompactResult:
    """Loads a masked checkpoint, removes pruned units, writes a compact checkpoint."""
    from nash_cli import artifact

    started = time.perf_counter()
    artifact.check_output(output, force)
    manifest = check_masked(source)
    config = artifact.load_config(source)
    model = artifact.load_model(source, config=config)
    shape = encoder_shape(model)
    masks = load_masks(Path(source), shape)
    before = {"total": total_params(model), "non_embedding": non_embedding_params(model)}
    compact, custom = compact_model(model, masks.heads_mask, masks.ffn_mask)
    after = {"total": total_params(compact), "non_embedding": non_embedding_params(compact)}
    del model
    # The nash classes are registered for their auto classes: save_pretrained copies their
    # modeling file beside the weights and writes the config's auto_map.
    heads = [int(row.sum()) for row in masks.heads_mask]
    units = [int(row.sum()) for row in masks.ffn_mask]
    extra = {
        "compact": {
            "custom_code": custom,
            "heads_per_layer": heads,
            "ffn_units_per_layer": units,
            "parameters": {"before": before, "after": after},
        },
        "prune_encoder": manifest.get("prune_encoder"),
    }
    artifact.save_checkpoint(
        compact,
        output,
        source=source,
        stage="compact",
        arguments=arguments,
        state="compact",
        extra=extra,
        force=force,
    )
    size = sum(path.stat().st_size for path in artifact.weight_files(Path(output)))
    return CompactResult(
        output=str(output),
        custom_code=custom,
        parameters={"before": before, "after": after},
        heads=heads,
        units=units,
        full_heads=shape.num_heads,
        full_units=shape.d_ff,
        file_size=size,
        seconds=time.perf_counter() - started,
    )
