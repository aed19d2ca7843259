"""Masks act on head slices before the output projection and on FFN units before wo / fc2."""

from __future__ import annotations

import copy

import pytest
import torch

from nash_cli.arch import family_of
from nash_cli.errors import NashError
from nash_cli.l0 import L0Masks
from nash_cli.arch import count_parameters
from nash_cli.masking import (
    attach_fixed,
    attach_l0,
    encoder_shape,
    load_masks,
    pruned_params,
    save_masks,
    whole_model_sparsity,
    write_mask_file,
)
from nash_cli.toy import tiny_model




def _batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 128, (2, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": torch.randint(4, 128, (2, 4), generator=generator)}


def _zero_weights(model, heads, ffn):
    """The same pruning done by zeroing weights: o's columns of masked heads, wo's columns of masked units."""
    model = copy.deepcopy(model)
    family = family_of(model)
    with torch.no_grad():
        for index, layer in enumerate(family.layers(model, "encoder")):
            parts = family.self_attention(layer)
            for head in range(parts.num_heads):
                if heads[index, head] == 0:
                    parts.o.weight[:, head * parts.head_dim : (head + 1) * parts.head_dim] = 0
            family.ffn(layer).output.weight[:, ffn[index] == 0] = 0
    return model


def test_encoder_shape(family):
    model = tiny_model(family, d_model=32, num_heads=4, d_ff=48, encoder_layers=3)
    shape = encoder_shape(model)
    assert (shape.num_layers, shape.num_heads, shape.d_ff, shape.d_model) == (3, 4, 48, 32)
    assert shape.gated == (family == "t5-gated") and shape.bias == (family == "bart")


def test_fixed_masks_equal_zeroed_weights(family):
    model = tiny_model(family, d_model=32, num_heads=4, d_ff=48)
    heads = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    ffn = (torch.rand(2, 48, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    batch = _batch()
    with torch.no_grad():
        plain = model(**batch)
        hooks = attach_fixed(model, heads, ffn)
        masked = model(**batch)
        expected = _zero_weights(model, heads, ffn)(**batch)
    assert torch.allclose(masked.logits, expected.logits, atol=1e-5)
    assert torch.allclose(masked.encoder_last_hidden_state, expected.encoder_last_hidden_state, atol=1e-5)
    assert not torch.allclose(masked.encoder_last_hidden_state, plain.encoder_last_hidden_state, atol=1e-2)
    hooks.remove()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, plain.logits)


def test_all_ones_masks_change_nothing():
    model = tiny_model("t5-gated")
    shape = encoder_shape(model)
    batch = _batch()
    with torch.no_grad():
        plain = model(**batch).logits
        attach_fixed(model, torch.ones(shape.num_layers, shape.num_heads), torch.ones(shape.num_layers, shape.d_ff))
        assert torch.allclose(model(**batch).logits, plain)


def test_l0_masks_sample_in_training_and_are_deterministic_in_eval():
    model = tiny_model("t5")
    masks = L0Masks(encoder_shape(model), generator=torch.Generator().manual_seed(0))
    hooks = attach_l0(model, masks)
    batch = _batch()
    model.train()
    first = model(**batch).logits
    first_masks = hooks.current
    second = model(**batch).logits
    assert not torch.equal(first_masks[1], hooks.current[1])  # a fresh sample per forward
    assert not torch.allclose(first, second)
    # gradients reach the log_alphas through the sampled masks
    second.sum().backward()
    assert masks.heads_log_alpha.grad is not None and masks.heads_log_alpha.grad.abs().sum() > 0
    assert masks.ffn_log_alpha.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        a, b = model(**batch).logits, model(**batch).logits
    assert torch.equal(a, b)
    heads, ffn = masks.deterministic()
    assert torch.equal(hooks.current[0], heads) and torch.equal(hooks.current[1], ffn)
    with torch.no_grad():
        expected = _zero_weights(model, heads, ffn)(**batch).logits
    hooks.remove()
    assert torch.allclose(a, expected, atol=1e-5)


def test_masks_work_under_generate(family):
    model = tiny_model(family)
    shape = encoder_shape(model)
    heads = torch.ones(shape.num_layers, shape.num_heads)
    heads[0, 1] = 0
    ffn = torch.ones(shape.num_layers, shape.d_ff)
    ffn[:, ::3] = 0
    batch = _batch()
    reference = _zero_weights(model, heads, ffn).generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=2, max_new_tokens=6
    )
    attach_fixed(model, heads, ffn)
    out = model.generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=2, max_new_tokens=6
    )
    assert torch.equal(out, reference)


def test_masks_file_round_trip(tmp_path):
    model = tiny_model("bart")
    shape = encoder_shape(model)
    masks = L0Masks(shape)
    with torch.no_grad():
        masks.ffn_log_alpha[0, :20] = -4.0
    from nash_cli.l0 import Lagrangian

    lagrangian = Lagrangian()
    with torch.no_grad():
        lagrangian.lambda1.fill_(-0.5)
    save_masks(tmp_path / "masks.safetensors", masks, lagrangian)
    loaded = load_masks(tmp_path, shape)
    heads, ffn = masks.deterministic()
    assert torch.equal(loaded.heads_mask, heads) and torch.equal(loaded.ffn_mask, ffn)
    assert torch.equal(loaded.ffn_log_alpha, masks.ffn_log_alpha.detach())
    assert loaded.lambda1 == pytest.approx(-0.5)
    assert ffn[0].sum() < shape.d_ff
    # explicit final masks (prune-encoder's target-meeting ones) are stored instead, log_alphas as before
    final = (torch.ones_like(heads), torch.zeros_like(ffn))
    save_masks(tmp_path / "masks.safetensors", masks, lagrangian, final=final)
    loaded = load_masks(tmp_path, shape)
    assert torch.equal(loaded.heads_mask, final[0]) and torch.equal(loaded.ffn_mask, final[1])
    assert torch.equal(loaded.ffn_log_alpha, masks.ffn_log_alpha.detach())


def test_masks_file_errors(tmp_path):
    shape = encoder_shape(tiny_model("t5"))
    with pytest.raises(NashError, match="missing"):
        load_masks(tmp_path, shape)
    (tmp_path / "masks.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(NashError, match="not a readable safetensors"):
        load_masks(tmp_path, shape)
    ones = {"heads_log_alpha": torch.zeros(2, 4), "ffn_log_alpha": torch.zeros(2, 64)}
    write_mask_file(tmp_path / "masks.safetensors", **ones, heads_mask=torch.ones(2, 4), ffn_mask=torch.ones(2, 32) * 0.5)
    with pytest.raises(NashError):
        load_masks(tmp_path, shape)
    write_mask_file(tmp_path / "masks.safetensors", **ones, heads_mask=torch.ones(2, 4), ffn_mask=torch.full((2, 64), 0.5))
    with pytest.raises(NashError, match="0s and 1s"):
        load_masks(tmp_path, shape)
    write_mask_file(
        tmp_path / "masks.safetensors",
        heads_log_alpha=torch.zeros(3, 4),
        ffn_log_alpha=torch.zeros(3, 64),
        heads_mask=torch.ones(3, 4),
        ffn_mask=torch.ones(3, 64),
    )
    with pytest.raises(NashError, match="use the masks written with this checkpoint"):
        load_masks(tmp_path, shape)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "masks.safetensors"))
    with pytest.raises(NashError, match="not a nash masks file"):
        load_masks(tmp_path, shape)


def test_parameter_accounting():
    teacher = tiny_model("t5-gated", encoder_layers=2, decoder_layers=2)
    embeddings = teacher.shared.weight.numel() + teacher.lm_head.weight.numel()
    relative = sum(
        m.weight.numel() for n, m in teacher.named_modules() if n.endswith("relative_attention_bias")
    )
    assert count_parameters(teacher)["non_embedding"] == sum(p.numel() for p in teacher.parameters()) - embeddings - relative
    shape = encoder_shape(teacher)
    heads = torch.ones(2, shape.num_heads)
    heads[0, 0] = 0
    ffn = torch.ones(2, shape.d_ff)
    ffn[1, :10] = 0
    removed = pruned_params(shape, heads, ffn)
    assert removed == shape.params_per_head + 10 * shape.params_per_unit
    full = count_parameters(teacher)["non_embedding"]
    assert whole_model_sparsity(full, removed, full) == pytest.approx(removed / full)
    # a student with a shallower decoder counts its deleted layers as pruned too
    assert whole_model_sparsity(full - 1000, 0, full) == pytest.approx(1000 / full)
