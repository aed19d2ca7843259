"""HardConcrete masks, keep-probabilities, deterministic masks, parameter counts and the Lagrangian."""

from __future__ import annotations

import math

import pytest
import torch

from nash_cli import l0


def test_constants_match_the_method():
    assert l0.BETA == pytest.approx(2 / 3)
    assert (l0.LIMIT_L, l0.LIMIT_R, l0.EPS) == (-0.1, 1.1, 1e-6)
    assert l0.LOG_ALPHA_MIN == pytest.approx(math.log(0.01))
    assert l0.LOG_ALPHA_MAX == pytest.approx(math.log(100))


def test_sample_follows_the_formula():
    log_alpha = torch.tensor([-2.0, -0.3, 0.0, 0.7, 3.0])
    generator = torch.Generator().manual_seed(3)
    z = l0.sample_hard_concrete(log_alpha, generator=generator)
    u = torch.rand(5, generator=torch.Generator().manual_seed(3)) * (1 - 2e-6) + 1e-6
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / (2 / 3))
    assert torch.allclose(z, torch.clamp(s * 1.2 - 0.1, 0, 1))


def test_sampled_zeros_match_q0():
    log_alpha = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0])
    samples = l0.sample_hard_concrete(log_alpha.expand(200_000, 5), generator=torch.Generator().manual_seed(0))
    assert float(samples.min()) >= 0.0 and float(samples.max()) <= 1.0
    empirical_zero = (samples == 0).float().mean(0)
    assert torch.allclose(empirical_zero, l0.prob_zero(log_alpha), atol=4e-3)
    # P(z != 0) = 1 - Q(0) is what the sparsity counts
    assert torch.allclose((samples != 0).float().mean(0), l0.keep_prob(log_alpha), atol=4e-3)


def test_q0_value_and_clamp():
    expected = 1 / (1 + math.exp(-(2 / 3) * math.log(0.1 / 1.1)))
    assert float(l0.prob_zero(torch.tensor(0.0))) == pytest.approx(expected, rel=1e-6)
    assert float(l0.prob_zero(torch.tensor(-100.0))) == pytest.approx(1 - 1e-6)
    assert float(l0.prob_zero(torch.tensor(100.0))) == pytest.approx(1e-6)


def test_sampling_is_differentiable():
    log_alpha = torch.zeros(64, requires_grad=True)
    l0.sample_hard_concrete(log_alpha, generator=torch.Generator().manual_seed(1)).sum().backward()
    assert log_alpha.grad is not None and float(log_alpha.grad.abs().sum()) > 0


def test_initialisation():
    torch.manual_seed(0)
    values = l0.init_log_alpha((200, 100), 0.5)
    assert float(values.mean()) == pytest.approx(0.0, abs=1e-3)
    assert float(values.std()) == pytest.approx(0.01, rel=0.05)
    assert float(l0.init_log_alpha((1000,), 0.3).mean()) == pytest.approx(math.log(0.7 / 0.3), abs=2e-3)
    with pytest.raises(ValueError):
        l0.init_log_alpha((3,), 1.0)


def test_deterministic_mask_drops_rounded_expected_zeros_per_group():
    log_alpha = torch.tensor(
        [
            [3.0, -3.0, 2.0, -4.0],  # Q ~ .01 .93 .02 .97 -> sum 1.93 -> drop 2 (indices 3 and 1)
            [0.0, 0.0, 0.0, 0.0],  # Q = .1685 each -> sum .67 -> drop 1 (ties: lowest index)
            [4.0, 4.0, 4.0, 4.0],  # nothing dropped
        ]
    )
    q = l0.prob_zero(log_alpha)
    mask = l0.deterministic_mask(log_alpha)
    assert mask.tolist() == [[1, 0, 1, 0], [0, 1, 1, 1], [1, 1, 1, 1]]
    assert (mask == 0).sum(1).tolist() == torch.round(q.sum(1)).long().tolist()
    # every dropped unit has a smaller log_alpha than every kept one in its row
    for row, keep in zip(log_alpha, mask):
        if (keep == 0).any() and (keep == 1).any():
            assert row[keep == 0].max() <= row[keep == 1].min()
    assert l0.deterministic_mask(log_alpha[0]).tolist() == [1, 0, 1, 0]


def test_deterministic_mask_can_drop_a_whole_group():
    mask = l0.deterministic_mask(torch.full((2, 3), -40.0))
    assert mask.sum() == 0


def test_clamp():
    shape = l0.EncoderShape(2, 2, 4, 8, 8, gated=False, bias=False)
    masks = l0.L0Masks(shape)
    with torch.no_grad():
        masks.heads_log_alpha.fill_(-50)
        masks.ffn_log_alpha.fill_(50)
    masks.clamp_()
    assert torch.allclose(masks.heads_log_alpha, torch.tensor(math.log(0.01)))
    assert torch.allclose(masks.ffn_log_alpha, torch.tensor(math.log(100.0)))


@pytest.mark.parametrize("family", ["t5", "t5-gated", "bart"])
def test_parameter_counts_match_the_real_modules(family):
    """params per head / unit, summed over the encoder, equal the projections' real sizes."""
    from nash_cli.arch import family_of
    from nash_cli.masking import encoder_shape
    from nash_cli.toy import tiny_model

    model = tiny_model(family, d_model=32, num_heads=4, d_kv=6 if family != "bart" else None, d_ff=48)
    shape = encoder_shape(model)
    arch = family_of(model)
    real = 0
    for layer in arch.layers(model, "encoder"):
        parts = arch.self_attention(layer)
        ffn = arch.ffn(layer)
        for linear in (parts.q, parts.k, parts.v, *ffn.inputs):
            real += sum(p.numel() for p in linear.parameters())
        # output projections: the weight is prunable, the bias (BART) belongs to no head or unit
        real += parts.o.weight.numel() + ffn.output.weight.numel()
    assert shape.prunable_params == real
    d, dkv = 32, shape.head_dim
    if family == "t5":
        assert (shape.params_per_head, shape.params_per_unit) == (4 * d * dkv, 2 * d)
    elif family == "t5-gated":
        assert (shape.params_per_head, shape.params_per_unit) == (4 * d * dkv, 3 * d)
    else:
        assert (shape.params_per_head, shape.params_per_unit) == (4 * d * dkv + 3 * dkv, 2 * d + 1)


def test_expected_sparsity():
    shape = l0.EncoderShape(2, 4, 8, 16, 32, gated=False, bias=False)
    high, low = torch.full((2, 4), 50.0), torch.full((2, 16), -50.0)
    assert float(l0.expected_sparsity(high, torch.full((2, 16), 50.0), shape)) == pytest.approx(0, abs=1e-5)
    assert float(l0.expected_sparsity(torch.full((2, 4), -50.0), low, shape)) == pytest.approx(1, abs=1e-5)
    # heads kept, FFN dropped: the FFN's share of the parameters
    ffn_share = 2 * 16 * shape.params_per_unit / shape.prunable_params
    assert float(l0.expected_sparsity(high, low, shape)) == pytest.approx(ffn_share, abs=1e-5)
    # in between: a weighted mean of Q(0)
    heads, ffn = torch.randn(2, 4), torch.randn(2, 16)
    manual = (
        l0.prob_zero(heads).sum() * shape.params_per_head + l0.prob_zero(ffn).sum() * shape.params_per_unit
    ) / shape.prunable_params
    assert float(l0.expected_sparsity(heads, ffn, shape)) == pytest.approx(float(manual), rel=1e-5)
    # raising log_alpha keeps more: sparsity falls
    heads.requires_grad_(True)
    l0.expected_sparsity(heads, ffn, shape).backward()
    assert bool((heads.grad < 0).all())


def test_mask_sparsity():
    shape = l0.EncoderShape(1, 2, 4, 4, 8, gated=True, bias=False)
    heads, ffn = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    removed = shape.params_per_head + 2 * shape.params_per_unit
    assert l0.mask_sparsity(heads, ffn, shape) == pytest.approx(removed / shape.prunable_params)


def test_lagrangian_and_ascent():
    lagrangian = l0.Lagrangian()
    assert float(lagrangian.lambda1.detach()) == 0 and float(lagrangian.lambda2.detach()) == 0
    sparsity = torch.tensor(0.1, requires_grad=True)
    with torch.no_grad():
        lagrangian.lambda1.fill_(2.0)
        lagrangian.lambda2.fill_(3.0)
    value = lagrangian(sparsity, 0.3)
    assert float(value.detach()) == pytest.approx(2 * -0.2 + 3 * 0.04)
    value.backward()
    assert float(lagrangian.lambda1.grad) == pytest.approx(-0.2)
    assert float(lagrangian.lambda2.grad) == pytest.approx(0.04)
    # gradient ascent on the lambdas (negative learning rate) moves lambda1 to where the
    # model is pushed towards the target: below target -> lambda1 falls -> d/ds < 0 -> s rises
    fresh = l0.Lagrangian()
    optimizer = torch.optim.AdamW([{"params": fresh.parameters(), "lr": -0.01, "weight_decay": 0.0}])
    for _ in range(5):
        optimizer.zero_grad()
        fresh(torch.tensor(0.1), 0.3).backward()
        optimizer.step()
    assert float(fresh.lambda1.detach()) < 0 and float(fresh.lambda2.detach()) > 0


def test_target_schedule_and_warmup():
    assert l0.target_at(0, 0.3, 100) == 0.0
    assert l0.target_at(50, 0.3, 100) == pytest.approx(0.15)
    assert l0.target_at(100, 0.3, 100) == pytest.approx(0.3)
    assert l0.target_at(500, 0.3, 100) == pytest.approx(0.3)
    assert l0.target_at(0, 0.3, 0) == pytest.approx(0.3)
    assert l0.resolve_warmup(0.8, 1000) == 800
    assert l0.resolve_warmup(250, 1000) == 250
    assert l0.resolve_warmup(0, 1000) == 0
    with pytest.raises(ValueError):
        l0.resolve_warmup(-1, 10)


def test_module_sample_and_deterministic_modes():
    shape = l0.EncoderShape(3, 4, 8, 16, 32, gated=False, bias=False)
    masks = l0.L0Masks(shape, generator=torch.Generator().manual_seed(0))
    z_heads, z_ffn = masks.sample()
    assert z_heads.shape == (3, 4) and z_ffn.shape == (3, 16)
    assert z_heads.requires_grad
    heads, ffn = masks.deterministic()
    assert set(heads.unique().tolist()) <= {0.0, 1.0}
    # at initialisation Q(0) = 0.1685: 4 heads -> round(.67) = 1 dropped, 16 units -> round(2.7) = 3 dropped
    assert heads.sum(1).tolist() == [3, 3, 3] and ffn.sum(1).tolist() == [13, 13, 13]
    assert masks.deterministic_sparsity() == pytest.approx(l0.mask_sparsity(heads, ffn, shape))
    assert float(masks.expected_sparsity().detach()) == pytest.approx(float(l0.prob_zero(torch.tensor(0.0))), abs=1e-3)


# --------------------------------------------------------------------------- masks for the target

#: Real encoder shapes: T5-base (ReLU FFN), FLAN-T5-base (gated), BART-base (biases), and a tiny
#: gated T5 where one head is a large share of the encoder.
SHAPES = {
    "t5-base": l0.EncoderShape(12, 12, 64, 3072, 768, gated=False, bias=False),
    "flan-t5-base": l0.EncoderShape(12, 12, 64, 2048, 768, gated=True, bias=False),
    "bart-base": l0.EncoderShape(6, 12, 64, 3072, 768, gated=False, bias=True),
    "tiny-gated": l0.EncoderShape(2, 8, 8, 256, 64, gated=True, bias=False),
}


def _random_log_alphas(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    span = l0.LOG_ALPHA_MAX - l0.LOG_ALPHA_MIN
    heads = torch.rand(shape.num_layers, shape.num_heads, generator=generator) * span + l0.LOG_ALPHA_MIN
    ffn = torch.rand(shape.num_layers, shape.d_ff, generator=generator) * span + l0.LOG_ALPHA_MIN
    return heads, ffn


def _removed_and_kept(heads_log_alpha, ffn_log_alpha, heads, ffn):
    scores = torch.cat([heads_log_alpha.reshape(-1), ffn_log_alpha.reshape(-1)])
    keep = torch.cat([heads.reshape(-1), ffn.reshape(-1)])
    return scores[keep == 0], scores[keep == 1]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_masks_for_target_meet_the_target_within_half_a_head(name):
    """Random log_alphas, several targets: the final masks are within half the crossing unit's
    share (at most half a head's) of the target, binary, shaped (L, H) and (L, F), and every
    removed unit has a log_alpha no larger than any kept one."""
    shape = SHAPES[name]
    head_share = shape.params_per_head / shape.prunable_params
    for seed in range(3):
        heads_log_alpha, ffn_log_alpha = _random_log_alphas(shape, seed)
        for target in (0.05, 0.3, 0.5, 0.8):
            heads, ffn = l0.masks_for_target(heads_log_alpha, ffn_log_alpha, shape, target, tolerance=0.0)
            assert heads.shape == heads_log_alpha.shape and ffn.shape == ffn_log_alpha.shape
            assert set(heads.unique().tolist()) <= {0.0, 1.0} and set(ffn.unique().tolist()) <= {0.0, 1.0}
            assert abs(l0.mask_sparsity(heads, ffn, shape) - target) <= head_share / 2 + 1e-12, (seed, target)
            removed, kept = _removed_and_kept(heads_log_alpha, ffn_log_alpha, heads, ffn)
            assert float(removed.max()) <= float(kept.min())
            # with the default tolerance, the result is within 0.01 or half a head, whichever is larger
            heads, ffn = l0.masks_for_target(heads_log_alpha, ffn_log_alpha, shape, target)
            assert abs(l0.mask_sparsity(heads, ffn, shape) - target) <= max(0.01, head_share / 2) + 1e-12


def _small():
    """2 layers of 2 heads (128 parameters each) and 16 FFN units (16 each): 1024 prunable parameters."""
    shape = l0.EncoderShape(2, 2, 4, 16, 8, gated=False, bias=False)
    assert (shape.params_per_head, shape.params_per_unit, shape.prunable_params) == (128, 16, 1024)
    return shape


def test_masks_for_target_remove_the_lowest_log_alphas_first():
    shape = _small()
    heads = torch.tensor([[3.0, -2.0], [1.0, 2.0]])
    ffn = torch.full((2, 16), 4.0)
    ffn[0, :3] = torch.tensor([-3.0, 0.5, 0.4])
    ffn[1, 0] = -1.0
    # the Lagrangian drops head (0, 1) and FFN unit (0, 0): 144 parameters, far from 0.3
    lagrangian = (l0.deterministic_mask(heads), l0.deterministic_mask(ffn))
    assert l0.mask_sparsity(*lagrangian, shape) == pytest.approx(144 / 1024)
    # ascending log_alpha: ffn(0,0) -3, head(0,1) -2, ffn(1,0) -1, ffn(0,2) .4, ffn(0,1) .5, head(1,0) 1
    # removed parameters 16, 144, 160, 176, 192, 320: the budget 0.3 * 1024 = 307.2 is closest to 320
    got_heads, got_ffn = l0.masks_for_target(heads, ffn, shape, 0.3)
    assert got_heads.tolist() == [[1, 0], [0, 1]]
    expected_ffn = torch.ones(2, 16)
    expected_ffn[0, :3] = 0
    expected_ffn[1, 0] = 0
    assert torch.equal(got_ffn, expected_ffn)
    assert l0.mask_sparsity(got_heads, got_ffn, shape) == pytest.approx(320 / 1024)
    # a smaller target stops before the head: 0.18 * 1024 = 184.3 is closest to 192 (five units)
    got_heads, got_ffn = l0.masks_for_target(heads, ffn, shape, 0.18)
    assert got_heads.tolist() == [[1, 0], [1, 1]] and int((got_ffn == 0).sum()) == 4


def test_masks_for_target_resolve_the_last_step_to_the_closest_and_ties_below():
    shape = _small()
    heads = torch.full((2, 2), 4.0)
    ffn = torch.full((2, 16), 4.0)
    ffn[0, :3] = torch.tensor([-1.0, -0.9, -0.8])  # the Lagrangian drops one: 16 / 1024
    assert l0.mask_sparsity(l0.deterministic_mask(heads), l0.deterministic_mask(ffn), shape) == 16 / 1024
    # 40 parameters: 32 (two units) and 48 (three) are equally close -> two, not exceeding
    got_heads, got_ffn = l0.masks_for_target(heads, ffn, shape, 40 / 1024)
    assert got_heads.sum() == 4 and got_ffn[0, :3].tolist() == [0, 0, 1] and got_ffn.sum() == 30
    # 44 parameters: 48 is closer than 32 -> three units, exceeding by 4
    got_heads, got_ffn = l0.masks_for_target(heads, ffn, shape, 44 / 1024)
    assert got_ffn[0, :3].tolist() == [0, 0, 0] and got_ffn.sum() == 29


def test_masks_for_target_keep_the_lagrangians_masks_within_tolerance():
    shape = SHAPES["flan-t5-base"]
    heads_log_alpha, ffn_log_alpha = _random_log_alphas(shape, 11)
    lagrangian = (l0.deterministic_mask(heads_log_alpha), l0.deterministic_mask(ffn_log_alpha))
    reached = l0.mask_sparsity(*lagrangian, shape)
    for target in (reached - 0.009, reached + 0.009, reached):
        heads, ffn = l0.masks_for_target(heads_log_alpha, ffn_log_alpha, shape, target)
        assert torch.equal(heads, lagrangian[0]) and torch.equal(ffn, lagrangian[1])
    # the ranking alone would have chosen other masks: the Lagrangian's are not a log_alpha prefix
    heads, ffn = l0.masks_for_target(heads_log_alpha, ffn_log_alpha, shape, reached + 0.009, tolerance=0.0)
    assert not (torch.equal(heads, lagrangian[0]) and torch.equal(ffn, lagrangian[1]))
    # beyond the tolerance they are replaced
    heads, ffn = l0.masks_for_target(heads_log_alpha, ffn_log_alpha, shape, reached + 0.05)
    assert l0.mask_sparsity(heads, ffn, shape) == pytest.approx(reached + 0.05, abs=shape.params_per_head / shape.prunable_params)


def test_masks_for_target_fall_back_to_the_lagrangian_when_whole_heads_cannot_come_closer():
    """One head is 1024 of 2304 parameters. The Lagrangian drops head (0, 0) and one FFN unit per
    layer whose log_alpha (0.3) is above the kept head's (0.2): 1088 parameters, 0.012 below the
    target. The ranking reaches only 1024 or 2048 near it, so the Lagrangian's masks stay."""
    shape = l0.EncoderShape(2, 1, 16, 4, 16, gated=False, bias=False)
    assert (shape.params_per_head, shape.params_per_unit, shape.prunable_params) == (1024, 32, 2304)
    heads = torch.tensor([[-4.0], [0.2]])
    ffn = torch.full((2, 4), 0.3)
    lagrangian = (l0.deterministic_mask(heads), l0.deterministic_mask(ffn))
    assert lagrangian[0].tolist() == [[0], [1]] and lagrangian[1].sum(1).tolist() == [3, 3]
    target = 1088 / 2304 + 0.012
    got = l0.masks_for_target(heads, ffn, shape, target)
    assert torch.equal(got[0], lagrangian[0]) and torch.equal(got[1], lagrangian[1])
    # where the ranking does come closer it wins: both heads (2048) for a target of 0.85
    got = l0.masks_for_target(heads, ffn, shape, 0.85)
    assert got[0].tolist() == [[0], [0]] and got[1].sum() == 8


def test_masks_for_target_may_remove_every_head_of_a_layer():
    """No per-layer minimum: compact supports a layer without heads (or without FFN units)."""
    shape = _small()
    heads = torch.tensor([[-1.0, -1.0], [4.0, 4.0]])  # the Lagrangian drops one head of layer 0
    ffn = torch.full((2, 16), 4.0)
    got_heads, got_ffn = l0.masks_for_target(heads, ffn, shape, 0.25)
    assert got_heads.tolist() == [[0, 0], [1, 1]] and got_ffn.sum() == 32
