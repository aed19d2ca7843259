"""Slicing plans for kept heads and FFN units."""

from __future__ import annotations

import pytest
import torch

from nash_cli.surgery.slicing import (
    LinearKeys,
    apply_plan,
    attention_plan,
    ffn_plan,
    head_index,
    kept_indices,
)


def test_head_index():
    assert head_index([0, 2], 3).tolist() == [0, 1, 2, 6, 7, 8]
    assert head_index([], 4).tolist() == []


def test_kept_indices():
    assert kept_indices(torch.tensor([1.0, 0.0, 1.0, 1.0])) == [0, 2, 3]
    assert kept_indices(torch.zeros(3)) == []


def test_attention_plan_slices_rows_of_qkv_and_columns_of_o():
    d, heads, head_dim = 5, 3, 2
    keys = {name: LinearKeys(f"{name}.weight", f"{name}.bias") for name in ("q", "k", "v", "o")}
    state = {}
    for name in ("q", "k", "v"):
        state[f"{name}.weight"] = torch.randn(heads * head_dim, d)
        state[f"{name}.bias"] = torch.randn(heads * head_dim)
    state["o.weight"] = torch.randn(d, heads * head_dim)
    state["o.bias"] = torch.randn(d)
    state["other"] = torch.randn(4)
    new = apply_plan(state, attention_plan(keys["q"], keys["k"], keys["v"], keys["o"], [2, 0], head_dim))
    rows = [4, 5, 0, 1]
    for name in ("q", "k", "v"):
        assert torch.equal(new[f"{name}.weight"], state[f"{name}.weight"][rows])
        assert torch.equal(new[f"{name}.bias"], state[f"{name}.bias"][rows])
    assert torch.equal(new["o.weight"], state["o.weight"][:, rows])
    assert new["o.bias"] is state["o.bias"] and new["other"] is state["other"]


def test_gated_ffn_plan_slices_both_inputs_together():
    state = {"wi_0.weight": torch.randn(6, 4), "wi_1.weight": torch.randn(6, 4), "wo.weight": torch.randn(4, 6)}
    plan = ffn_plan([LinearKeys("wi_0.weight"), LinearKeys("wi_1.weight")], LinearKeys("wo.weight"), [1, 4])
    new = apply_plan(state, plan)
    assert torch.equal(new["wi_0.weight"], state["wi_0.weight"][[1, 4]])
    assert torch.equal(new["wi_1.weight"], state["wi_1.weight"][[1, 4]])
    assert torch.equal(new["wo.weight"], state["wo.weight"][:, [1, 4]])


def test_ffn_plan_with_biases_and_empty():
    state = {"fc1.weight": torch.randn(6, 4), "fc1.bias": torch.randn(6), "fc2.weight": torch.randn(4, 6), "fc2.bias": torch.randn(4)}
    new = apply_plan(state, ffn_plan([LinearKeys("fc1.weight", "fc1.bias")], LinearKeys("fc2.weight", "fc2.bias"), []))
    assert new["fc1.weight"].shape == (0, 4) and new["fc1.bias"].shape == (0,) and new["fc2.weight"].shape == (4, 0)
    assert torch.equal(new["fc2.bias"], state["fc2.bias"])


def test_apply_plan_rejects_unknown_keys():
    with pytest.raises(KeyError):
        apply_plan({}, {"x.weight": (0, torch.tensor([0]))})
