"""HardConcrete masks, keep-probabilities, deterministic masks, parameter counts and the Lagrangian."""

from __future__ import annotations

import math

import pytest
import torch

from nash_cli import l0, rounding


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


def _check_the_rule(heads_log_alpha, ffn_log_alpha, shape, target, heads, ffn):
    """The fall-back's rule, checked against a brute force over the floor / ceiling choices.

    Each layer drops the floor or the ceiling of its expected count (under the log_alphas lowered
    by the shift that makes the expected sparsity the target), its lowest log_alphas; no choice
    of floors and ceilings comes closer to the target; within a kind, the layers rounded up are
    those nearest their ceiling."""
    import itertools

    counts = l0.drop_counts_for_target(heads_log_alpha, ffn_log_alpha, shape, target)
    shifted = (heads_log_alpha.double() - counts.shift, ffn_log_alpha.double() - counts.shift)
    if 1e-4 < target < 1 - 1e-4:
        assert float(l0.expected_sparsity(*shifted, shape)) == pytest.approx(target, abs=1e-9)
    budget = target * shape.prunable_params
    rounding = []
    for log_alpha, mask, expected, size in (
        (heads_log_alpha, heads, counts.expected_heads, shape.params_per_head),
        (ffn_log_alpha, ffn, counts.expected_ffn_units, shape.params_per_unit),
    ):
        dropped = (mask == 0).sum(-1).tolist()
        expected = torch.tensor(expected, dtype=torch.float64)
        assert torch.allclose(expected, l0.prob_zero(log_alpha.double() - counts.shift).sum(-1))
        floor, ceil = expected.floor().tolist(), expected.ceil().tolist()
        assert all(n in (lo, hi) for n, lo, hi in zip(dropped, floor, ceil)), (dropped, expected)
        _drops_lowest_in_each_row(log_alpha, mask)
        fraction = (expected - expected.floor()).tolist()
        up = [f for n, lo, hi, f in zip(dropped, floor, ceil, fraction) if n == hi != lo]
        down = [f for n, lo, hi, f in zip(dropped, floor, ceil, fraction) if n == lo != hi]
        if up and down:
            assert min(up) >= max(down)
        rounding.append((floor, [hi - lo for lo, hi in zip(floor, ceil)], size))
    removed = l0.mask_sparsity(heads, ffn, shape) * shape.prunable_params
    # the brute force: any number of rows of each kind rounded up (rows of a kind are equal in size)
    options = [
        sum(sum(floor) * size for floor, _, size in rounding) + a * rounding[0][2] + b * rounding[1][2]
        for a, b in itertools.product(range(int(sum(rounding[0][1])) + 1), range(int(sum(rounding[1][1])) + 1))
    ]
    best = min(abs(option - budget) for option in options)
    assert abs(removed - budget) == pytest.approx(best, abs=1e-6)
    ties = [option for option in options if abs(abs(option - budget) - best) <= 1e-6]
    assert removed == pytest.approx(min(ties), abs=1e-6)  # a tie stops below the target


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_masks_for_target_meet_the_target_within_half_a_head(name):
    """Random log_alphas, several targets: the final masks are within half a head's share of the
    target, binary, shaped (L, H) and (L, F), and follow the rule (`_check_the_rule`)."""
    shape = SHAPES[name]
    head_share = shape.params_per_head / shape.prunable_params
    for seed in range(3):
        heads_log_alpha, ffn_log_alpha = _random_log_alphas(shape, seed)
        for target in (0.05, 0.3, 0.5, 0.8):
            heads, ffn = l0.masks_for_target(heads_log_alpha, ffn_log_alpha, shape, target, tolerance=0.0)
            assert heads.shape == heads_log_alpha.shape and ffn.shape == ffn_log_alpha.shape
            assert set(heads.unique().tolist()) <= {0.0, 1.0} and set(ffn.unique().tolist()) <= {0.0, 1.0}
            assert abs(l0.mask_sparsity(heads, ffn, shape) - target) <= head_share / 2 + 1e-12, (seed, target)
            _check_the_rule(heads_log_alpha, ffn_log_alpha, shape, target, heads, ffn)
            # with the default tolerance, the result is within 0.01 or half a head, whichever is larger
            heads, ffn = l0.masks_for_target(heads_log_alpha, ffn_log_alpha, shape, target)
            assert abs(l0.mask_sparsity(heads, ffn, shape) - target) <= max(0.01, head_share / 2) + 1e-12


def _small():
    """2 layers of 2 heads (128 parameters each) and 16 FFN units (16 each): 1024 prunable parameters."""
    shape = l0.EncoderShape(2, 2, 4, 16, 8, gated=False, bias=False)
    assert (shape.params_per_head, shape.params_per_unit, shape.prunable_params) == (128, 16, 1024)
    return shape


def test_masks_for_target_round_each_layers_expected_count():
    shape = _small()
    heads = torch.tensor([[3.0, -2.0], [1.0, 2.0]])
    ffn = torch.full((2, 16), 4.0)
    ffn[0, :3] = torch.tensor([-3.0, 0.5, 0.4])
    ffn[1, 0] = -1.0
    # the Lagrangian drops head (0, 1) and FFN unit (0, 0): 144 parameters, far from 0.3
    lagrangian = (l0.deterministic_mask(heads), l0.deterministic_mask(ffn))
    assert l0.mask_sparsity(*lagrangian, shape) == pytest.approx(144 / 1024)
    for target in (0.3, 0.18):
        got_heads, got_ffn = l0.masks_for_target(heads, ffn, shape, target)
        _check_the_rule(heads, ffn, shape, target, got_heads, got_ffn)
    # 0.3: the expected counts, lowered to the target, are 1.07 and 0.77 heads, 2.87 and 1.59 FFN
    # units; rounding to 1, 1 heads and 2, 1 units removes 304 of the budget's 307.2 parameters
    counts = l0.drop_counts_for_target(heads, ffn, shape, 0.3)
    assert counts.expected_heads == pytest.approx([1.072, 0.770], abs=1e-3)
    assert counts.expected_ffn_units == pytest.approx([2.869, 1.594], abs=1e-3)
    assert (counts.heads, counts.ffn_units) == ([1, 1], [2, 1])
    got_heads, got_ffn = l0.masks_for_target(heads, ffn, shape, 0.3)
    assert got_heads.tolist() == [[1, 0], [0, 1]]
    assert (got_ffn == 0).nonzero().tolist() == [[0, 0], [0, 2], [1, 0]]  # each layer's lowest
    assert l0.mask_sparsity(got_heads, got_ffn, shape) == pytest.approx(304 / 1024)


def test_masks_for_target_resolve_the_last_step_to_the_closest_and_ties_below():
    shape = _small()
    heads = torch.full((2, 2), 4.0)
    ffn = torch.full((2, 16), 4.0)
    ffn[0, :3] = torch.tensor([-1.0, -0.9, -0.8])  # the Lagrangian drops one: 16 / 1024
    assert l0.mask_sparsity(l0.deterministic_mask(heads), l0.deterministic_mask(ffn), shape) == 16 / 1024
    # 40 parameters: 32 (two units) and 48 (three) are equally close -> two, not exceeding
    got_heads, got_ffn = l0.masks_for_target(heads, ffn, shape, 40 / 1024)
    assert got_heads.sum() == 4 and got_ffn[0, :3].tolist() == [0, 0, 1] and got_ffn.sum() == 30
    # 44 parameters: 48 is closer than 32 -> three units, exceeding by 4. Layer 0 expects 2.11
    # drops, layer 1 0.21: layer 1 is nearer its ceiling, so it is the one rounded up.
    got_heads, got_ffn = l0.masks_for_target(heads, ffn, shape, 44 / 1024)
    assert got_ffn[0, :3].tolist() == [0, 0, 1] and got_ffn[1, 0] == 0 and got_ffn.sum() == 29
    _check_the_rule(heads, ffn, shape, 44 / 1024, got_heads, got_ffn)


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
    target. Rounding reaches only 1024 or 2048 (and a few FFN units) near it, so the Lagrangian's
    masks stay."""
    shape = l0.EncoderShape(2, 1, 16, 4, 16, gated=False, bias=False)
    assert (shape.params_per_head, shape.params_per_unit, shape.prunable_params) == (1024, 32, 2304)
    heads = torch.tensor([[-4.0], [0.2]])
    ffn = torch.full((2, 4), 0.3)
    lagrangian = (l0.deterministic_mask(heads), l0.deterministic_mask(ffn))
    assert lagrangian[0].tolist() == [[0], [1]] and lagrangian[1].sum(1).tolist() == [3, 3]
    target = 1088 / 2304 + 0.012
    got = l0.masks_for_target(heads, ffn, shape, target)
    assert torch.equal(got[0], lagrangian[0]) and torch.equal(got[1], lagrangian[1])
    # where rounding does come closer it wins: both heads for a target of 0.85, and the floor of
    # each layer's expected FFN drops (2 of 4), 2176 parameters, the closest the rounding reaches
    got = l0.masks_for_target(heads, ffn, shape, 0.85)
    assert got[0].tolist() == [[0], [0]] and got[1].sum(1).tolist() == [2, 2]
    _check_the_rule(heads, ffn, shape, 0.85, *got)


def test_masks_for_target_may_remove_every_head_of_a_layer():
    """No per-layer minimum: compact supports a layer without heads (or without FFN units)."""
    shape = _small()
    heads = torch.tensor([[-1.0, -1.0], [4.0, 4.0]])  # the Lagrangian drops one head of layer 0
    ffn = torch.full((2, 16), 4.0)
    got_heads, got_ffn = l0.masks_for_target(heads, ffn, shape, 0.25)
    assert got_heads.tolist() == [[0, 0], [1, 1]] and got_ffn.sum() == 32


#: T5-small's encoder: 6 layers of 8 heads (d_kv 64) and 2048 ReLU FFN units, d_model 512.
T5_SMALL = l0.EncoderShape(6, 8, 64, 2048, 512, gated=False, bias=False)


def _clustered(shape, head_drop: float, ffn_drop: float, seed: int, spread: float = 0.01):
    """log_alphas clustered (as at initialisation, or in a short run) where Q(0) is `head_drop`
    for the heads and `ffn_drop` for the FFN units."""

    def centre(drop):
        return l0.BETA * math.log(-l0.LIMIT_L / l0.LIMIT_R) - math.log(drop / (1 - drop))

    generator = torch.Generator().manual_seed(seed)
    heads = centre(head_drop) + spread * torch.randn(shape.num_layers, shape.num_heads, generator=generator)
    ffn = centre(ffn_drop) + spread * torch.randn(shape.num_layers, shape.d_ff, generator=generator)
    return heads.double(), ffn.double()


def _expected_drops(log_alpha):
    return l0.prob_zero(log_alpha.double()).sum(-1)


def _drops_lowest_in_each_row(log_alpha, mask):
    for scores, kept in zip(log_alpha, mask):
        if bool((kept == 0).any()) and bool((kept == 1).any()):
            assert float(scores[kept == 0].max()) <= float(scores[kept == 1].min())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("head_drop", "ffn_drop"), [(0.30, 0.30), (0.31, 0.295)])
def test_the_target_fall_back_keeps_the_distributions_structure(head_drop, ffn_drop, seed):
    """Clustered log_alphas at T5-small's shape, expected sparsity 0.30: rounding each layer's
    expected drop count (about 2.4 heads, 614 units) gives 0.28, beyond the tolerance. The final
    masks must still prune the heads and FFN units the distribution expects (one global cut-off
    pruned 90% of the heads and no FFN unit when the heads sat slightly lower), every layer
    dropping the floor or the ceiling of its expected count, the lowest log_alphas of that layer."""
    shape = T5_SMALL
    heads_la, ffn_la = _clustered(shape, head_drop, ffn_drop, seed)
    assert float(l0.expected_sparsity(heads_la, ffn_la, shape)) == pytest.approx(0.30, abs=2e-3)
    target = float(l0.expected_sparsity(heads_la, ffn_la, shape))
    lagrangian = (l0.deterministic_mask(heads_la), l0.deterministic_mask(ffn_la))
    assert abs(l0.mask_sparsity(*lagrangian, shape) - target) > l0.TARGET_TOLERANCE
    heads, ffn = l0.masks_for_target(heads_la, ffn_la, shape, target)
    assert abs(l0.mask_sparsity(heads, ffn, shape) - target) <= shape.params_per_head / shape.prunable_params / 2
    assert float(1 - heads.mean()) == pytest.approx(head_drop, abs=0.03)
    assert float(1 - ffn.mean()) == pytest.approx(ffn_drop, abs=0.005)
    for log_alpha, mask in ((heads_la, heads), (ffn_la, ffn)):
        expected = _expected_drops(log_alpha)
        dropped = (mask == 0).sum(-1).double()
        assert bool(((dropped == expected.floor()) | (dropped == expected.ceil())).all()), (dropped, expected)
        _drops_lowest_in_each_row(log_alpha, mask)
    counts = l0.drop_counts_for_target(heads_la, ffn_la, shape, target)
    assert counts.heads == [int(n) for n in (heads == 0).sum(-1)]
    assert counts.ffn_units == [int(n) for n in (ffn == 0).sum(-1)]
    assert counts.shift == pytest.approx(0.0, abs=1e-6)  # expected sparsity is the target: no shift
    assert counts.expected_heads == pytest.approx(_expected_drops(heads_la).tolist())


# ---------------------------------------------------------------------- the engine structure

#: T5-base's encoder: 12 layers of 12 heads x 64 and 3072 ReLU FFN units, d_model 768
BASE = l0.EncoderShape(num_layers=12, num_heads=12, head_dim=64, d_ff=3072, d_model=768, gated=False, bias=False)


def _trend(shape, seed=0, spread=2.0):
    """Untrained scores with later layers pruned more, as real runs prune them."""
    generator = torch.Generator().manual_seed(seed)
    offset = torch.linspace(spread, -spread, shape.num_layers, dtype=torch.float64)[:, None]
    return (torch.randn(shape.num_layers, shape.num_heads, generator=generator, dtype=torch.float64) + offset,
            torch.randn(shape.num_layers, shape.d_ff, generator=generator, dtype=torch.float64) + offset)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.6])
def test_uniform_heads_and_aligned_widths_meet_the_target_from_the_scores(target):
    heads_la, ffn_la = _trend(BASE)
    free = l0.masks_for_target(heads_la, ffn_la, BASE, target)
    heads, ffn = l0.masks_for_target(heads_la, ffn_la, BASE, target, uniform_heads=True, ffn_multiple_of=64)
    kept_heads = heads.sum(1).tolist()
    widths = ffn.sum(1).long().tolist()
    assert len(set(kept_heads)) == 1 and all(w % 64 == 0 for w in widths), (kept_heads, widths)
    # the unconstrained masks of the same scores differ per layer: the structure changed something
    assert len(set(free[0].sum(1).tolist())) > 1
    # the target is met within half of 64 FFN units' share
    assert abs(l0.mask_sparsity(heads, ffn, BASE) - target) <= 32 * BASE.params_per_unit / BASE.prunable_params
    # the head count is the nearest to the layers' mean expected kept heads at the target
    shift = l0.shift_for_target(heads_la, ffn_la, BASE, target)
    mean_kept = BASE.num_heads - float(l0.expected_drops(heads_la, shift).mean())
    assert abs(kept_heads[0] - mean_kept) <= 0.5
    # within a layer the highest log_alphas stay, and the layers' order of widths is the scores'
    for row, scores in zip(heads, heads_la):
        assert scores[row == 1].min() >= scores[row == 0].max()
    assert widths == sorted(widths, reverse=True)


def test_each_half_of_the_structure_alone():
    heads_la, ffn_la = _trend(BASE, seed=1)
    heads, ffn = l0.masks_for_target(heads_la, ffn_la, BASE, 0.5, uniform_heads=True, ffn_multiple_of=1)
    assert len(set(heads.sum(1).tolist())) == 1 and any(int(w) % 64 for w in ffn.sum(1))
    assert abs(l0.mask_sparsity(heads, ffn, BASE) - 0.5) <= BASE.params_per_unit / BASE.prunable_params
    heads, ffn = l0.masks_for_target(heads_la, ffn_la, BASE, 0.5, uniform_heads=False, ffn_multiple_of=64)
    assert len(set(heads.sum(1).tolist())) > 1 and all(int(w) % 64 == 0 for w in ffn.sum(1))
    assert abs(l0.mask_sparsity(heads, ffn, BASE) - 0.5) <= 32 * BASE.params_per_unit / BASE.prunable_params


def test_the_lagrangian_masks_stay_when_they_already_have_the_structure():
    shape = l0.EncoderShape(num_layers=2, num_heads=4, head_dim=8, d_ff=8, d_model=32, gated=False, bias=False)
    # settled log_alphas (at the clamp): one head and 4 of 8 FFN units of each layer far below the rest
    low, high = l0.LOG_ALPHA_MIN, l0.LOG_ALPHA_MAX
    heads_la = torch.full((2, 4), high)
    heads_la[:, 0] = low
    ffn_la = torch.full((2, 8), high)
    ffn_la[:, :4] = low
    lagrangian = (l0.deterministic_mask(heads_la), l0.deterministic_mask(ffn_la))
    assert lagrangian[0].sum(1).tolist() == [3, 3] and lagrangian[1].sum(1).tolist() == [4, 4]
    target = l0.mask_sparsity(*lagrangian, shape) + 0.005  # within the tolerance, not exact
    chosen = l0.masks_for_target(heads_la, ffn_la, shape, target, uniform_heads=True, ffn_multiple_of=4)
    assert all(torch.equal(a, b) for a, b in zip(chosen, lagrangian))
    # a multiple they do not meet (4 kept is not a multiple of 8): rounded under it
    heads, ffn = l0.masks_for_target(heads_la, ffn_la, shape, target, uniform_heads=True, ffn_multiple_of=8)
    assert set(ffn.sum(1).tolist()) <= {0.0, 8.0} and len(set(heads.sum(1).tolist())) == 1


def test_a_width_that_is_no_multiple_keeps_its_full_width_as_an_option():
    assert rounding.allowed_drops(100, 64) == [0, 36, 100]
    shape = l0.EncoderShape(num_layers=3, num_heads=4, head_dim=8, d_ff=100, d_model=32, gated=True, bias=True)
    heads, ffn = l0.masks_for_target(*_trend(shape, spread=0.5), shape, 0.1, uniform_heads=True, ffn_multiple_of=64)
    assert set(ffn.sum(1).long().tolist()) <= {0, 64, 100}


def test_a_target_no_uniform_head_count_reaches_is_refused():
    assert l0.max_uniform_heads_sparsity(BASE) == pytest.approx(1 - 1 / 36)
    heads_la, ffn_la = _trend(BASE)
    heads, ffn = l0.masks_for_target(heads_la, ffn_la, BASE, 0.97, uniform_heads=True, ffn_multiple_of=64)
    assert heads.sum(1).tolist() == [1.0] * 12
    with pytest.raises(ValueError, match="at most 0.9722"):
        l0.masks_for_target(heads_la, ffn_la, BASE, 0.98, uniform_heads=True, ffn_multiple_of=64)
    # without uniform heads a layer may lose every head: 0.98 is reachable
    heads, ffn = l0.masks_for_target(heads_la, ffn_la, BASE, 0.98)
    assert abs(l0.mask_sparsity(heads, ffn, BASE) - 0.98) < 0.01
