"""The maths of `nash plan`: candidate shapes, their work per `generate()` call, a cost model
fitted to the timed ones, the order in which to time them and the recommendation.

Everything here is a pure function of numbers: no torch, no models. The `plan` stage
(`nash_cli.stages.plan`) builds the models, times them and feeds the timings in.

The cost model. The time of one `generate()` call is modelled as a non-negative combination of
five kinds of work, counted in multiply-adds from the candidate's shape (`Workload`):

- `prefill`: the work done once per call on whole sequences: the encoder's linear layers on
  every source token, its attention (source length squared), and the decoder's cross-attention
  keys and values over the encoder output (one big, efficient matrix product each);
- `decoder`: the decoder layers' per-step work for every beam: their linear layers (without the
  cross-attention keys and values, already in `prefill`) and attention over the cache and source;
- `head`: the lm_head per step and beam (d_model x vocabulary; beam search's softmax and top-k
  over the vocabulary scale with it too);
- `layer_steps`: decoder layers x steps, the fixed cost of running one layer once (kernel
  launches, Python), which dominates small models;
- `call`: a constant per call.

The coefficients are fitted by non-negative least squares on relative errors (every timed model
counts alike, whether it takes 0.1 s or 10 s), solved exactly by trying every support of at most
as many features as there are timings. With fewer than two timings the model is the teacher's
time scaled by total multiply-adds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: The features of the cost model, in this order everywhere.
FEATURES: tuple[str, ...] = ("prefill", "decoder", "head", "layer_steps", "call")


@dataclass(frozen=True, order=True)
class Candidate:
    """One configuration the pipeline could produce."""

    decoder_layers: int
    """Decoder layers kept (uniform selection, as select-layers does)."""
    encoder_sparsity: float
    """Target sparsity of prune-encoder (0: the encoder is not pruned)."""
    vocab_size: int | None = None
    """Output vocabulary after the restriction; None keeps the teacher's."""

    @property
    def label(self) -> str:
        """Short name for tables, e.g. `dec 3, enc 0.30, vocab 5,053`."""
        vocab = f", vocab {self.vocab_size:,}" if self.vocab_size is not None else ""
        return f"dec {self.decoder_layers}, enc {self.encoder_sparsity:.2f}{vocab}"

    def capacity_key(self) -> tuple:
        """Larger is more capacity: most decoder layers, then lowest encoder sparsity, then the
        full vocabulary (a restriction can only lose outputs)."""
        return (self.decoder_layers, -self.encoder_sparsity, self.vocab_size is None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def candidate_grid(
    decoder_layers: Sequence[int], sparsities: Sequence[float], vocab_sizes: Sequence[int | None] = (None,)
) -> list[Candidate]:
    """Every combination, most capacity first."""
    grid = [Candidate(k, float(s), v) for k in decoder_layers for s in sparsities for v in vocab_sizes]
    return sorted(set(grid), key=Candidate.capacity_key, reverse=True)


@dataclass(frozen=True)
class Workload:
    """What one timed `generate()` call does."""

    batch: int
    """Sequences per call."""
    beams: int
    """Beam width."""
    source_length: int
    """Tokens per input (padded length: padding is computed too)."""
    new_tokens: int
    """Tokens generated per sequence (forced: min = max)."""


@dataclass(frozen=True)
class ModelShape:
    """What the cost of a model depends on, read off the model (or its empty meta copy)."""

    encoder_params: int
    """Encoder parameters without embeddings."""
    encoder_attention_width: int
    """Sum over encoder layers of kept heads x head size."""
    decoder_layers: int
    """Decoder depth."""
    decoder_params: int
    """Decoder parameters without embeddings (cross-attention keys and values included)."""
    decoder_attention_width: int
    """Sum over decoder layers of heads x head size (self- and cross-attention alike)."""
    d_model: int
    """Hidden size."""
    vocab_size: int
    """Rows of the lm_head."""


def features(shape: ModelShape, workload: Workload) -> dict[str, float]:
    """The multiply-adds (and counts) of one `generate()` call, per cost-model feature."""
    rows = workload.batch * workload.beams  # transformers expands the encoder output to every beam
    source, steps = workload.source_length, workload.new_tokens
    cross_kv = 2 * shape.d_model * shape.decoder_attention_width  # K and V projections of every layer
    prefill = (
        workload.batch * source * shape.encoder_params
        + 2 * workload.batch * source * source * shape.encoder_attention_width
        + rows * source * cross_kv
    )
    mean_cache = (steps + 1) / 2
    decoder = rows * steps * (
        (shape.decoder_params - cross_kv) + 2 * shape.decoder_attention_width * (mean_cache + source)
    )
    return {
        "prefill": float(prefill),
        "decoder": float(decoder),
        "head": float(rows * steps * shape.d_model * shape.vocab_size),
        "layer_steps": float(shape.decoder_layers * steps),
        "call": 1.0,
    }


@dataclass
class CostModel:
    """Seconds per call = sum of coefficient x feature (non-negative coefficients)."""

    coefficients: dict[str, float]
    """Seconds per unit of each feature (0 for features left out)."""
    kind: str
    """"least-squares" (fitted to several timings) or "proportional" (one timing scaled by work)."""
    timings: int
    """How many timings it was fitted to."""
    relative_error: float
    """Root mean square of (predicted - measured) / measured over those timings."""

    def predict(self, values: Mapping[str, float]) -> float:
        """Predicted seconds for a call with these feature values."""
        return sum(self.coefficients[name] * values[name] for name in FEATURES)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float] | None:
    """Solves a small square system by Gaussian elimination with partial pivoting; None if singular."""
    n = len(vector)
    a = [row[:] + [vector[i]] for i, row in enumerate(matrix)]
    for column in range(n):
        pivot = max(range(column, n), key=lambda r: abs(a[r][column]))
        if abs(a[pivot][column]) < 1e-12:
            return None
        a[column], a[pivot] = a[pivot], a[column]
        for r in range(n):
            if r != column:
                factor = a[r][column] / a[column][column]
                for c in range(column, n + 1):
                    a[r][c] -= factor * a[column][c]
    return [a[i][n] / a[i][i] for i in range(n)]


def _least_squares(rows: list[list[float]], targets: list[float]) -> list[float] | None:
    """Ordinary least squares through the normal equations (a handful of columns at most)."""
    width = len(rows[0])
    gram = [[sum(r[i] * r[j] for r in rows) for j in range(width)] for i in range(width)]
    moment = [sum(r[i] * t for r, t in zip(rows, targets)) for i in range(width)]
    return _solve(gram, moment)


def fit_cost_model(samples: Sequence[tuple[Mapping[str, float], float]]) -> CostModel:
    """Fits the cost model to `(features, seconds)` timings.

    Non-negative least squares on relative errors, exact: every support (subset of features) no
    larger than the number of timings is solved by least squares, supports with a negative
    coefficient are dropped, and the smallest error wins; on a tie the smaller support, then the
    earlier one in `FEATURES` order. Non-negative coefficients make the prediction grow with
    every kind of work, so it is monotone in decoder layers, encoder width and vocabulary.

    Args:
        samples: At least one timing.

    Raises:
        ValueError: no timings, or a time that is not positive.
    """
    if not samples:
        raise ValueError("the cost model needs at least one timing")
    if any(seconds <= 0 for _, seconds in samples):
        raise ValueError("timings must be positive")
    # Columns scaled by their largest value so the normal equations stay well conditioned.
    scale = {name: max(values[name] for values, _ in samples) or 1.0 for name in FEATURES}
    if len(samples) < 2:
        values, seconds = samples[0]
        total = sum(values[name] for name in FEATURES if name in ("prefill", "decoder", "head"))
        coefficients = {name: 0.0 for name in FEATURES}
        for name in ("prefill", "decoder", "head"):
            coefficients[name] = seconds / total
        return CostModel(coefficients, "proportional", 1, 0.0)
    best: tuple[float, int, int, list[float], tuple[str, ...]] | None = None
    order = 0
    for size in range(1, min(len(samples), len(FEATURES)) + 1):
        for support in itertools.combinations(FEATURES, size):
            order += 1
            # Each row divided by its measured time: the residuals are relative errors.
            rows = [[values[name] / scale[name] / seconds for name in support] for values, seconds in samples]
            solution = _least_squares(rows, [1.0] * len(samples))
            if solution is None or any(c < 0 for c in solution):
                continue
            error = sum((sum(c * x for c, x in zip(solution, row)) - 1.0) ** 2 for row in rows)
            key = (round(error, 12), size, order)
            if best is None or key < best[:3]:
                best = (*key, solution, support)
    if best is None:  # cannot happen with positive times (a single feature always fits), kept safe
        return fit_cost_model(samples[:1])
    *_, solution, support = best
    coefficients = {name: 0.0 for name in FEATURES}
    for name, value in zip(support, solution):
        coefficients[name] = value / scale[name]
    model = CostModel(coefficients, "least-squares", len(samples), 0.0)
    model.relative_error = math.sqrt(
        sum((model.predict(values) / seconds - 1.0) ** 2 for values, seconds in samples) / len(samples)
    )
    return model


def recommend(speedups: Mapping[Candidate, float], target: float) -> tuple[Candidate, bool]:
    """The candidate to recommend and whether it meets `target`.

    Among candidates whose speedup reaches the target, the one with the most capacity
    (`Candidate.capacity_key`); if none does, the fastest.
    """
    if not speedups:
        raise ValueError("no candidates")
    meeting = [c for c, s in speedups.items() if s >= target]
    if meeting:
        return max(meeting, key=Candidate.capacity_key), True
    return max(speedups, key=lambda c: (speedups[c], c.capacity_key())), False


def next_to_time(speedups: Mapping[Candidate, float], timed: set[Candidate], target: float) -> Candidate | None:
    """Which candidate to time next, so a small budget is spent where the decision is made.

    1. The fastest candidate (it tells whether the target is reachable and anchors the fit).
    2. The candidate that would be recommended now (`recommend`), if not yet timed.
    3. The untimed candidate with the next-larger capacity (the one just predicted to miss the
       target): timing it confirms the boundary.
    4. Otherwise the untimed candidate whose predicted speedup is closest to the target
       (in ratio), most capacity first on a tie.

    Args:
        speedups: Current speedup of every candidate (measured or predicted).
        timed: Candidates already timed.
        target: The speedup asked for.

    Returns:
        A candidate, or None when every candidate is timed.
    """
    untimed = [c for c in speedups if c not in timed]
    if not untimed:
        return None
    fastest = max(speedups, key=lambda c: (speedups[c], c.capacity_key()))
    if fastest not in timed:
        return fastest
    choice, _ = recommend(speedups, target)
    if choice not in timed:
        return choice
    above = [c for c in untimed if c.capacity_key() > choice.capacity_key()]
    if above:
        return min(above, key=Candidate.capacity_key)
    return min(untimed, key=lambda c: (abs(math.log(speedups[c] / target)), tuple(-x for x in _numeric(c.capacity_key()))))


def _numeric(key: tuple) -> tuple[float, ...]:
    return tuple(float(x) for x in key)
