"""Slicing linear layers down to kept attention heads and kept FFN units (pure tensor functions).

A pruning plan maps state-dict keys to `(dim, index)`: keep those rows (dim 0) or columns
(dim 1) of the tensor. For attention, q, k and v lose the rows of dropped heads (weights and
biases) and the output projection loses the matching columns; its bias stays whole. For an FFN,
every input projection (T5 gated: `wi_0` and `wi_1` together) loses the rows of dropped units,
with their biases (BART `fc1`), and the output projection loses the matching columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

#: key -> (dim, indices to keep along dim)
Plan = dict[str, tuple[int, torch.Tensor]]


def head_index(kept_heads: Sequence[int], head_dim: int) -> torch.Tensor:
    """Indices into a `num_heads * head_dim` axis that belong to `kept_heads` (in the given order)."""
    heads = torch.as_tensor(list(kept_heads), dtype=torch.long)
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


def kept_indices(mask: torch.Tensor) -> list[int]:
    """Indices where a binary mask is 1, in increasing order."""
    return [int(i) for i in torch.nonzero(mask > 0.5, as_tuple=False).reshape(-1)]


@dataclass(frozen=True)
class LinearKeys:
    """State-dict keys of one linear layer."""

    weight: str
    """Key of the `(out_features, in_features)` weight."""
    bias: str | None = None
    """Key of the bias, if the layer has one."""


def attention_plan(
    q: LinearKeys, k: LinearKeys, v: LinearKeys, o: LinearKeys, kept_heads: Sequence[int], head_dim: int
) -> Plan:
    """The plan that keeps `kept_heads` of one attention block (o's bias is not sliced)."""
    index = head_index(kept_heads, head_dim)
    plan: Plan = {}
    for linear in (q, k, v):
        plan[linear.weight] = (0, index)
        if linear.bias is not None:
            plan[linear.bias] = (0, index)
    plan[o.weight] = (1, index)
    return plan


def ffn_plan(inputs: Sequence[LinearKeys], output: LinearKeys, kept_units: Sequence[int]) -> Plan:
    """The plan that keeps `kept_units` of one FFN (every input projection sliced the same way)."""
    index = torch.as_tensor(list(kept_units), dtype=torch.long)
    plan: Plan = {}
    for linear in inputs:
        plan[linear.weight] = (0, index)
        if linear.bias is not None:
            plan[linear.bias] = (0, index)
    plan[output.weight] = (1, index)
    return plan


def slice_tensor(tensor: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of `tensor` keeping `index` along `dim`."""
    return tensor.index_select(dim, index.to(tensor.device)).contiguous()


def apply_plan(state: Mapping[str, torch.Tensor], plan: Plan) -> dict[str, torch.Tensor]:
    """A new state dict with every planned tensor sliced; other tensors are shared, not copied.

    Raises:
        KeyError: a planned key is absent from `state`.
    """
    missing = [key for key in plan if key not in state]
    if missing:
        raise KeyError(f"planned keys not in the state dict: {missing[:3]}")
    return {key: slice_tensor(value, *plan[key]) if key in plan else value for key, value in state.items()}
