"""The optimiser's schedule and the embeddings a run may freeze: small pure helpers of the loop."""

from __future__ import annotations

from collections.abc import Callable


def linear_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up to 1, then linear decay to 0 at `total_steps` (transformers' formula)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def freeze_embeddings(model) -> list[str]:
    """Stops gradients to the token embeddings; returns notes (a tied lm_head is frozen too)."""
    embeddings = model.get_input_embeddings()
    embeddings.weight.requires_grad_(False)
    head = model.get_output_embeddings()
    if head is not None and head.weight is embeddings.weight:
        return ["--freeze-embeddings also freezes the lm_head, which shares the embedding matrix"]
    return []
