"""Rounding per-layer drop counts onto the counts a layer may take: the pure tensor helpers of
`nash_cli.l0.drop_counts_for_target`.

A layer's expected number of dropped units (a float, sum Q(0)) is rounded down or up to a count
it may take (any count; or, for an FFN whose kept width must be a multiple of m, the counts that
leave a multiple of m or the full width). Which layers round up is decided over all layers at
once, nearest their upper count first, so that the removed parameters meet a target.
"""

from __future__ import annotations

import torch


def allowed_drops(full: int, multiple_of: int) -> list[int]:
    """The drop counts a layer of `full` units may take when its kept width must be a multiple of
    `multiple_of`: 0 kept, `multiple_of`, ..., and `full` itself (the unpruned layer), ascending."""
    kept = set(range(0, full + 1, multiple_of)) | {full}
    return sorted(full - k for k in kept)


def roundings(expected: torch.Tensor, allowed: list[int]):
    """Per layer, the allowed drop counts just below and above its expected count.

    Returns `(low, step, fraction, order)`: `low` the drops rounded down, `step` how many more
    units rounding up drops, `fraction` where the expected count lies between the two (0 to 1),
    and `order` the layers that can round up, nearest their upper count first (a stable sort
    keeps layer order on ties).
    """
    grid = torch.tensor(allowed, dtype=torch.float64)
    above = torch.searchsorted(grid, expected.clamp(0, float(grid[-1])), right=False).clamp(max=len(allowed) - 1)
    high = grid[above]
    low = torch.where(high > expected, grid[(above - 1).clamp(min=0)], high)
    step = high - low
    fraction = torch.where(step > 0, (expected - low) / step.clamp(min=1e-12), torch.zeros_like(step))
    order = torch.sort(-fraction, stable=True).indices
    order = order[fraction[order] > 0]
    return low, step, fraction, order


def prefix_sums(low, step, fraction, order, size: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Removed parameters with the first k layers of `order` rounded up, for every k, and how far
    each choice moves the counts from the expected ones (in units): `(base, removed[k], cost[k])`."""
    zero = torch.zeros(1, dtype=torch.float64)
    removed = torch.cat([zero, torch.cumsum(step[order], 0)]) * size
    cost = torch.cat([zero, torch.cumsum((1 - 2 * fraction[order]) * step[order], 0)])
    return float(low.sum()) * size, removed, cost


def rounded(low, step, order, rounded_up: int) -> list[int]:
    """The drop counts with the first `rounded_up` layers of `order` rounded up."""
    count = low.clone()
    count[order[:rounded_up]] += step[order[:rounded_up]]
    return [int(n) for n in count]


def best(distance: torch.Tensor, removed: torch.Tensor, deviation: torch.Tensor) -> tuple[int, ...]:
    """The index of the lexicographic minimum of (distance, removed, deviation)."""
    chosen = distance == distance.min()
    chosen &= removed == removed[chosen].min()
    chosen &= deviation == deviation[chosen].min()
    return tuple(int(i) for i in chosen.nonzero()[0])
