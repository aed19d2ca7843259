"""L0 (HardConcrete) masks for encoder heads and FFN units, expected sparsity and the Lagrangian.

Everything here follows Louizos et al. (2018) as CoFi and NASH use it; the constants and the
deterministic-mask rule are those of `docs/method.md`. The functions are pure tensor maths; the
two small modules (`L0Masks`, `Lagrangian`) only hold parameters.

Masks come in two groups per encoder layer: the layer's attention heads (shape `(L, H)`) and
its FFN intermediate units (shape `(L, F)`). Rows are groups: the deterministic mask drops
`round(sum Q(0))` units per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nash_cli.rounding import allowed_drops, best, prefix_sums, rounded, roundings

#: HardConcrete temperature.
BETA = 2.0 / 3.0
#: Lower end of the stretch interval.
LIMIT_L = -0.1
#: Upper end of the stretch interval.
LIMIT_R = 1.1
#: Keeps uniform samples and probabilities away from 0 and 1.
EPS = 1e-6
#: log_alpha is clamped to [log 0.01, log 100] after every optimiser step.
LOG_ALPHA_MIN = math.log(0.01)
LOG_ALPHA_MAX = math.log(100.0)
#: Standard deviation of the log_alpha initialisation.
INIT_STD = 0.01


def init_log_alpha(
    shape: tuple[int, ...], droprate_init: float = 0.5, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draws initial log_alphas from N(log(1 - p) - log(p), 0.01).

    Args:
        shape: Shape of the mask group tensor, e.g. `(layers, heads)`.
        droprate_init: p, the initial drop rate (0.5 gives mean 0).
        generator: Optional random generator, for reproducibility.
    """
    if not 0.0 < droprate_init < 1.0:
        raise ValueError(f"droprate_init must be in (0, 1), got {droprate_init}")
    mean = math.log(1.0 - droprate_init) - math.log(droprate_init)
    return torch.randn(shape, generator=generator) * INIT_STD + mean


def sample_hard_concrete(log_alpha: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Samples a HardConcrete mask z in [0, 1] (differentiable in log_alpha).

    u ~ U(eps, 1 - eps); s = sigmoid((log u - log(1 - u) + log_alpha) / beta);
    z = clamp(s * (r - l) + l, 0, 1).
    """
    u = torch.rand(log_alpha.shape, generator=generator, device=log_alpha.device, dtype=log_alpha.dtype)
    u = u * (1.0 - 2.0 * EPS) + EPS
    s = torch.sigmoid((torch.log(u) - torch.log(1.0 - u) + log_alpha) / BETA)
    return torch.clamp(s * (LIMIT_R - LIMIT_L) + LIMIT_L, 0.0, 1.0)


def prob_zero(log_alpha: torch.Tensor) -> torch.Tensor:
    """Q(0) = P(z == 0) = sigmoid(beta * log(-l / r) - log_alpha), clamped to [eps, 1 - eps]."""
    return torch.sigmoid(BETA * math.log(-LIMIT_L / LIMIT_R) - log_alpha).clamp(EPS, 1.0 - EPS)


def keep_prob(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z != 0) = 1 - Q(0): the probability that each unit is kept."""
    return 1.0 - prob_zero(log_alpha)


def deterministic_mask(log_alpha: torch.Tensor) -> torch.Tensor:
    """The binary eval/compaction mask: per row, drop the round(sum Q(0)) smallest log_alphas.

    Args:
        log_alpha: `(groups, units)`; each row is one group (one layer's heads or FFN units).

    Returns:
        A float tensor of the same shape with 1 for kept and 0 for dropped units.
    """
    log_alpha = log_alpha.detach()
    if log_alpha.dim() == 1:
        return deterministic_mask(log_alpha[None])[0]
    q = prob_zero(log_alpha.double())
    return drop_lowest(log_alpha, torch.round(q.sum(dim=-1)).long())


def drop_lowest(log_alpha: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The binary mask that drops, in each row, its `counts[row]` smallest log_alphas.

    Ties drop the lower index first (a stable sort), the same on every run.

    Args:
        log_alpha: `(groups, units)`.
        counts: `(groups,)` how many units each row drops (clamped to [0, units]).

    Returns:
        A float tensor shaped like `log_alpha`, 1 for kept and 0 for dropped, on its device.
    """
    log_alpha = log_alpha.detach()
    counts = counts.to(log_alpha.device).long().clamp(0, log_alpha.shape[-1])
    order = torch.sort(log_alpha.float(), dim=-1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(log_alpha.shape[-1], device=order.device).expand_as(order))
    return (rank >= counts[:, None]).float()


@dataclass(frozen=True)
class EncoderShape:
    """The prunable shape of an encoder, from which parameter counts follow."""

    num_layers: int
    """Encoder depth L."""
    num_heads: int
    """Attention heads per layer H."""
    head_dim: int
    """Size of each head d_kv (not assumed to be d_model / H)."""
    d_ff: int
    """FFN intermediate units per layer F."""
    d_model: int
    """Hidden size d."""
    gated: bool
    """T5 v1.1 / FLAN gated FFN (wi_0, wi_1, wo) rather than (wi, wo)."""
    bias: bool
    """Linear layers carry biases (BART)."""

    @property
    def params_per_head(self) -> int:
        """4 * d * d_kv weights, plus the q, k and v biases of the head (d_kv each) where present.

        The output projection's bias (d values) belongs to no head: it stays even when every
        head of the layer is pruned (compaction keeps it as a constant), so it is not prunable.
        """
        return 4 * self.d_model * self.head_dim + (3 * self.head_dim if self.bias else 0)

    @property
    def params_per_unit(self) -> int:
        """m * d weights (m = 3 gated, else 2), plus one bias per input projection where present.

        As for heads, the output projection's bias is not per unit and not prunable.
        """
        inputs = 2 if self.gated else 1
        return (inputs + 1) * self.d_model + (inputs if self.bias else 0)

    @property
    def prunable_params(self) -> int:
        """P_enc: every head's and every FFN unit's parameters over all encoder layers."""
        return self.num_layers * (self.num_heads * self.params_per_head + self.d_ff * self.params_per_unit)


def expected_sparsity(head_log_alpha: torch.Tensor, ffn_log_alpha: torch.Tensor, shape: EncoderShape) -> torch.Tensor:
    """s_hat = 1 - E_enc / P_enc with E_enc from the keep-probabilities (differentiable)."""
    kept = keep_prob(head_log_alpha).sum() * shape.params_per_head + keep_prob(ffn_log_alpha).sum() * shape.params_per_unit
    return 1.0 - kept / shape.prunable_params


def mask_sparsity(head_mask: torch.Tensor, ffn_mask: torch.Tensor, shape: EncoderShape) -> float:
    """Encoder sparsity of binary masks: the fraction of prunable parameters they remove."""
    kept = float(head_mask.sum()) * shape.params_per_head + float(ffn_mask.sum()) * shape.params_per_unit
    return 1.0 - kept / shape.prunable_params


#: `masks_for_target` keeps the Lagrangian's own masks when they are this close to the target.
TARGET_TOLERANCE = 0.01


@dataclass(frozen=True)
class DropCounts:
    """How many heads and FFN units each encoder layer drops to meet a target sparsity."""

    heads: list[int]
    """Heads dropped per layer."""
    ffn_units: list[int]
    """FFN units dropped per layer."""
    expected_heads: list[float]
    """Expected heads dropped per layer, sum Q(0) under the (shifted) distribution."""
    expected_ffn_units: list[float]
    """Expected FFN units dropped per layer, likewise."""
    shift: float
    """What every log_alpha was lowered by so that the expected sparsity is the target (0 when
    it already was; positive when the run had pruned too little)."""
    ffn_shift: float = 0.0
    """With uniform heads: what the FFN log_alphas alone were lowered by (instead of `shift`) so
    that the FFN removes what the uniform head count leaves of the target (0 otherwise)."""


def expected_drops(log_alpha: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    """Each row's expected number of dropped units, sum Q(0), with every log_alpha lowered by
    `shift` (float64, on the CPU)."""
    return prob_zero(log_alpha.detach().double().cpu() - shift).sum(dim=-1)


def shift_for_target(heads_log_alpha: torch.Tensor, ffn_log_alpha: torch.Tensor, shape: EncoderShape, target: float) -> float:
    """The common amount to lower every log_alpha by so that the expected sparsity is `target`.

    Expected sparsity rises monotonically as all log_alphas are lowered together, so the
    shift is found by bisection. Lowering all log_alphas together keeps their order and spacing:
    the distribution the training learnt, moved to the target. Targets outside what Q(0)'s clamp
    can express get the nearest end of the search interval.
    """
    heads = heads_log_alpha.detach().double()
    ffn = ffn_log_alpha.detach().double()

    def sparsity(shift: float) -> float:
        return float(expected_sparsity(heads - shift, ffn - shift, shape))

    if abs(sparsity(0.0) - target) <= 1e-12:
        return 0.0
    return _bisect(sparsity, target)


def _shift_for_drops(log_alpha: torch.Tensor, total: float) -> float:
    """The common amount to lower `log_alpha` by so that its expected drops sum to `total`."""
    return _bisect(lambda shift: float(expected_drops(log_alpha, shift).sum()), total)


def _bisect(increasing, target: float) -> float:
    """The shift in [-64, 64] at which `increasing(shift)` (non-decreasing) reaches `target`.

    Q(0) is at its clamp well inside [-64, 64], so every reachable target lies in it.
    """
    low, high = -64.0, 64.0
    for _ in range(200):
        middle = (low + high) / 2
        if increasing(middle) < target:
            low = middle
        else:
            high = middle
        if high - low < 1e-12:
            break
    return (low + high) / 2


def max_uniform_heads_sparsity(shape: EncoderShape) -> float:
    """The highest sparsity masks with one head per layer can reach (every FFN unit removed)."""
    return 1.0 - shape.num_layers * shape.params_per_head / shape.prunable_params


def drop_counts_for_target(
    heads_log_alpha: torch.Tensor,
    ffn_log_alpha: torch.Tensor,
    shape: EncoderShape,
    target: float,
    *,
    uniform_heads: bool = False,
    ffn_multiple_of: int = 1,
) -> DropCounts:
    """Per-layer drop counts that meet `target`, each the floor or the ceiling of the layer's
    expected count.

    1. Each layer's expected number of dropped heads and of dropped FFN units, sum Q(0), from
       the log_alphas; lowered together first (`shift_for_target`) when their expected sparsity
       is not the target (a run that has not settled).
    2. Each layer drops the floor or the ceiling of its expected count, per kind. Starting from
       the floors, the layers whose expected count is nearest its ceiling are rounded up first
       (ties: lower layer first); of every number of heads rounded up and of FFN rows rounded up,
       the combination whose removed parameters are closest to `target * prunable_params` wins
       (ties: fewer parameters removed, then the rounding nearest the expected counts).

    Since the expected sparsity is the target, the target lies between all floors and all
    ceilings, and the result is within half a head's share of it (half an FFN unit's where the
    heads alone cannot come closer).

    With `ffn_multiple_of` m > 1, "floor" and "ceiling" are the nearest kept widths that are
    multiples of m (or the full width), so the result is within half of m FFN units' share.

    With `uniform_heads`, every layer keeps the same number of heads k >= 1: the k nearest the
    layers' mean expected kept heads (the other rounding next, and so on, where that cannot meet
    the target). The FFN units then make up the difference: their log_alphas alone are lowered
    (or raised) together until their expected drops remove what the heads leave of the target
    (`ffn_shift`), and each layer is rounded as above.

    Raises:
        ValueError: no uniform head count meets the target (above `max_uniform_heads_sparsity`).
    """
    shift = shift_for_target(heads_log_alpha, ffn_log_alpha, shape, target)
    budget = target * shape.prunable_params
    expected_heads = expected_drops(heads_log_alpha, shift)
    if uniform_heads:
        return _uniform_counts(ffn_log_alpha, shape, budget, expected_heads, shift, ffn_multiple_of)
    expected_ffn = expected_drops(ffn_log_alpha, shift)
    head = roundings(expected_heads, list(range(shape.num_heads + 1)))
    ffn = roundings(expected_ffn, allowed_drops(shape.d_ff, ffn_multiple_of))
    head_base, head_removed, head_cost = prefix_sums(*head, shape.params_per_head)
    ffn_base, ffn_removed, ffn_cost = prefix_sums(*ffn, shape.params_per_unit)
    removed = head_base + ffn_base + head_removed[:, None] + ffn_removed[None, :]
    a, b = best((removed - budget).abs(), removed, head_cost[:, None] + ffn_cost[None, :])
    return DropCounts(
        heads=rounded(head[0], head[1], head[3], a),
        ffn_units=rounded(ffn[0], ffn[1], ffn[3], b),
        expected_heads=expected_heads.tolist(),
        expected_ffn_units=expected_ffn.tolist(),
        shift=shift,
    )


def _uniform_counts(ffn_log_alpha, shape: EncoderShape, budget: float, expected_heads, shift: float,
                    ffn_multiple_of: int) -> DropCounts:
    """`drop_counts_for_target` with the same head count in every layer (see there)."""
    layers, heads = shape.num_layers, shape.num_heads
    mean_kept = heads - float(expected_heads.mean())
    # nearest the mean first; a tie keeps more heads (removes less)
    for kept in sorted(range(1, heads + 1), key=lambda k: (abs(k - mean_kept), -k)):
        rest = budget - layers * (heads - kept) * shape.params_per_head
        if not 0.0 <= rest <= layers * shape.d_ff * shape.params_per_unit:
            continue
        ffn_shift = _shift_for_drops(ffn_log_alpha, rest / shape.params_per_unit)
        expected_ffn = expected_drops(ffn_log_alpha, ffn_shift)
        ffn = roundings(expected_ffn, allowed_drops(shape.d_ff, ffn_multiple_of))
        base, removed, cost = prefix_sums(*ffn, shape.params_per_unit)
        (b,) = best((base + removed - rest).abs(), removed, cost)
        return DropCounts(
            heads=[heads - kept] * layers,
            ffn_units=rounded(ffn[0], ffn[1], ffn[3], b),
            expected_heads=expected_heads.tolist(),
            expected_ffn_units=expected_ffn.tolist(),
            shift=shift,
            ffn_shift=ffn_shift,
        )
    raise ValueError(
        f"no head count per layer meets sparsity {budget / shape.prunable_params:.4f}: with one head in every layer "
        f"the encoder's sparsity is at most {max_uniform_heads_sparsity(shape):.4f}"
    )


def meets_structure(heads: torch.Tensor, ffn: torch.Tensor, *, uniform_heads: bool, ffn_multiple_of: int) -> bool:
    """Whether binary masks keep the same number of heads in every layer (when asked) and FFN
    widths that are multiples of `ffn_multiple_of` or the full width."""
    kept_heads = {int(n) for n in heads.sum(dim=-1)}
    if uniform_heads and (len(kept_heads) > 1 or 0 in kept_heads):
        return False
    full = ffn.shape[-1]
    return all(int(n) % ffn_multiple_of == 0 or int(n) == full for n in ffn.sum(dim=-1))


def masks_for_target(
    heads_log_alpha: torch.Tensor,
    ffn_log_alpha: torch.Tensor,
    shape: EncoderShape,
    target: float,
    *,
    tolerance: float = TARGET_TOLERANCE,
    uniform_heads: bool = False,
    ffn_multiple_of: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary `(heads, ffn)` masks that remove `target` of the encoder's prunable parameters.

    The rule, deterministic and without randomness:

    1. Start from the Lagrangian's own deterministic masks (`deterministic_mask` of each group:
       round(sum Q(0)) per layer and kind). If they remove within `tolerance` of `target`
       (|gap| <= 0.01 by default), return them unchanged: a run that settled is not perturbed.
    2. Otherwise keep the structure the distribution learnt: each layer drops the floor or the
       ceiling of its expected count of heads and of FFN units (`drop_counts_for_target`, which
       also lowers all log_alphas together first when their expected sparsity is not the
       target), rounded so that the target is met; within a layer, the units with the lowest
       log_alphas go (`drop_lowest`, as the Lagrangian's masks choose them). A head is one unit
       (kept or removed whole); so is an FFN unit (gated: its `wi_0`, `wi_1` and `wo` slices).
    3. If that is no closer to the target than the Lagrangian's masks (possible only where one
       unit is a large share of the encoder), the Lagrangian's masks are returned instead.

    One global log_alpha cut-off across both kinds is not used: heads and FFN units have the
    same HardConcrete scale but not the same role, and clustered log_alphas (a short run) would
    let the cut-off fall on one kind, removing most heads while restoring FFN units the
    distribution drops.

    No per-layer minimum is imposed: a layer may lose every head or every FFN unit, as the
    Lagrangian's own masks may. The compact model skips such a sublayer (nash's modeling files;
    T5 still computes the shared position bias in the layer that owns it), and the masked model
    computes the same thing.

    With a structure for the serving engine (`uniform_heads`: the same number of heads in every
    layer; `ffn_multiple_of` m: FFN widths that are multiples of m), step 1 keeps the Lagrangian's
    masks only when they already have that structure, step 2 rounds under it
    (`drop_counts_for_target`), and step 3 does not apply: the structure is a promise too.

    Args:
        heads_log_alpha: `(L, H)` log_alphas of the encoder heads.
        ffn_log_alpha: `(L, F)` log_alphas of the encoder FFN units.
        shape: The encoder's prunable shape (parameter counts per head and per unit).
        target: Fraction of `shape.prunable_params` to remove, in [0, 1].
        tolerance: How close the Lagrangian's masks must be to the target to be kept as they are.
        uniform_heads: Keep the same number of heads (at least 1) in every layer.
        ffn_multiple_of: Keep FFN widths that are multiples of this (or the full width).

    Raises:
        ValueError: `uniform_heads` with a target no head count per layer reaches.

    Returns:
        Float masks (1 kept, 0 removed) with the shapes and device of the inputs.
    """
    heads_la = heads_log_alpha.detach()
    ffn_la = ffn_log_alpha.detach()
    lagrangian = (deterministic_mask(heads_la), deterministic_mask(ffn_la))
    lagrangian_gap = abs(mask_sparsity(*lagrangian, shape) - target)
    structured = uniform_heads or ffn_multiple_of > 1
    fits = meets_structure(*lagrangian, uniform_heads=uniform_heads, ffn_multiple_of=ffn_multiple_of)
    if lagrangian_gap <= tolerance and fits:
        return lagrangian
    counts = drop_counts_for_target(
        heads_la, ffn_la, shape, target, uniform_heads=uniform_heads, ffn_multiple_of=ffn_multiple_of
    )
    heads = drop_lowest(heads_la, torch.tensor(counts.heads))
    ffn = drop_lowest(ffn_la, torch.tensor(counts.ffn_units))
    if not structured and abs(mask_sparsity(heads, ffn, shape) - target) >= lagrangian_gap:
        return lagrangian
    return heads, ffn


def lagrangian_term(
    sparsity: torch.Tensor, target: float, lambda1: torch.Tensor, lambda2: torch.Tensor
) -> torch.Tensor:
    """L_c = lambda1 * (s - t) + lambda2 * (s - t)^2."""
    gap = sparsity - target
    return lambda1 * gap + lambda2 * gap * gap


def target_at(step: int, target: float, warmup_steps: int) -> float:
    """The target sparsity at `step`: t * min(1, step / warmup_steps) (t from the start if no warm-up)."""
    if warmup_steps <= 0:
        return target
    return target * min(1.0, step / warmup_steps)


def resolve_warmup(warmup: float, total_steps: int) -> int:
    """`--sparsity-warmup` in steps: a value below 1 is a fraction of the run's optimiser steps."""
    if warmup < 0:
        raise ValueError("sparsity warm-up must be >= 0")
    if warmup < 1:
        return int(round(warmup * total_steps))
    return int(warmup)


class L0Masks(nn.Module):
    """The log_alphas of every encoder head and FFN unit.

    Attributes:
        heads_log_alpha: `(L, H)` parameter.
        ffn_log_alpha: `(L, F)` parameter.
    """

    def __init__(
        self, shape: EncoderShape, droprate_init: float = 0.5, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.shape = shape
        self.heads_log_alpha = nn.Parameter(
            init_log_alpha((shape.num_layers, shape.num_heads), droprate_init, generator=generator)
        )
        self.ffn_log_alpha = nn.Parameter(
            init_log_alpha((shape.num_layers, shape.d_ff), droprate_init, generator=generator)
        )

    def sample(self, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh HardConcrete samples `(z_heads, z_ffn)` for one training forward pass."""
        return (
            sample_hard_concrete(self.heads_log_alpha, generator=generator),
            sample_hard_concrete(self.ffn_log_alpha, generator=generator),
        )

    def deterministic(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary masks `(heads, ffn)` for evaluation and compaction."""
        return deterministic_mask(self.heads_log_alpha), deterministic_mask(self.ffn_log_alpha)

    def expected_sparsity(self) -> torch.Tensor:
        """s_hat, differentiable in the log_alphas."""
        return expected_sparsity(self.heads_log_alpha, self.ffn_log_alpha, self.shape)

    def deterministic_sparsity(self) -> float:
        """Encoder sparsity of the deterministic masks."""
        return mask_sparsity(*self.deterministic(), self.shape)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamps every log_alpha to [log 0.01, log 100]; call after each optimiser step."""
        self.heads_log_alpha.clamp_(LOG_ALPHA_MIN, LOG_ALPHA_MAX)
        self.ffn_log_alpha.clamp_(LOG_ALPHA_MIN, LOG_ALPHA_MAX)


class Lagrangian(nn.Module):
    """lambda1 and lambda2 (both 0 at start); trained by gradient ascent (negative learning rate)."""

    def __init__(self) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.zeros(()))

    def forward(self, sparsity: torch.Tensor, target: float) -> torch.Tensor:
        return lagrangian_term(sparsity, target, self.lambda1, self.lambda2)
