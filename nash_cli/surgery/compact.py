"""Compaction: rebuild a model without its masked encoder heads and FFN units.

`compact_model` is the whole operation: binary masks in, an equal (under those masks) smaller
model out, weights and config changed together. The state-dict slicing is
`nash_cli.surgery.slicing`; which config can express the result is asked of `nash_cli.arch`.
Layers keep different widths, so the result usually needs nash's modeling classes
(`nash_cli.modeling`); when a stock config can express it, the stock class is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nash_cli.arch import family_of
from nash_cli.surgery.layers import keep_generation_config
from nash_cli.surgery.slicing import LinearKeys, Plan, apply_plan, attention_plan, ffn_plan, kept_indices


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
    full_heads = family.num_heads(config, "encoder")
    all_heads = all(row == list(range(full_heads)) for row in plan.heads)
    widths = {len(row) for row in plan.units}
    data = config.to_dict()
    if all_heads and len(widths) == 1 and getattr(config, "encoder_heads", None) is None:
        new = type(config).from_dict(data)
        if family.set_encoder_ffn_dim(new, widths.pop()):
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
    keep_generation_config(model, compact)
    return compact.eval(), custom
