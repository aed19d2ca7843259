"""Input batches shared by every model a command times or checks: random token ids or tokenised text.

`bench`, `plan` and `export --verify` give every model the same `Batch`es, built here; the
timing core (`nash_cli.timing`) only runs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nash_cli.errors import NashError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Batch:
    """One input batch, shared by every model."""

    input_ids: "torch.Tensor"
    """Token ids, shape (batch, source length), right-padded."""
    attention_mask: "torch.Tensor"
    """1 on real tokens, 0 on padding."""

    @property
    def size(self) -> int:
        """Number of sequences."""
        return int(self.input_ids.shape[0])

    def to(self, device) -> "Batch":
        """The batch on `device`."""
        return Batch(self.input_ids.to(device), self.attention_mask.to(device))


def random_batches(
    *,
    vocab_size: int,
    batch_size: int,
    source_length: int,
    num_batches: int = 1,
    low: int = 4,
    eos_token_id: int | None = None,
    seed: int = 0,
    special_ids: Sequence[int | None] = (),
) -> list[Batch]:
    """Batches of uniformly random token ids, the same for every model.

    Args:
        vocab_size: Ids are drawn below this.
        batch_size: Sequences per batch.
        source_length: Tokens per sequence (the last one is `eos_token_id` when given).
        num_batches: How many batches.
        low: Smallest id drawn (keeps pad / eos / unk / bos out of the body).
        special_ids: Control ids (pad, eos, bos, decoder start; None entries skipped) that the
            body must not contain: those in the lower half of the vocabulary raise `low`, those in
            the upper half (Marian's pad token is its last id) bound the ids from above.
        eos_token_id: Appended as the last token, as a tokenizer would.
        seed: Seed of a private generator (the global RNG is untouched).
    """
    import torch

    if batch_size < 1:
        raise NashError(f"--batch must be at least 1, got {batch_size}")
    if source_length < 1:
        raise NashError(f"--source-length must be at least 1, got {source_length}")
    special = [int(s) for s in special_ids if isinstance(s, int)]
    low = max([low] + [s + 1 for s in special if s < vocab_size // 2])
    high = min([vocab_size] + [s for s in special if s >= vocab_size // 2])
    if high <= low:
        raise NashError(f"vocabulary of {vocab_size} ids is too small for random inputs")
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        ids = torch.randint(low, high, (batch_size, source_length), generator=generator)
        if eos_token_id is not None:
            ids[:, -1] = eos_token_id
        batches.append(Batch(ids, torch.ones_like(ids)))
    return batches


def text_batches(
    tokenizer,
    sources: Sequence[str],
    *,
    batch_size: int,
    max_source_length: int | None = None,
    pad_to_max: bool = False,
) -> list[Batch]:
    """Tokenised batches of real text, in the given order, each padded to its longest source
    (or, with `pad_to_max`, to `max_source_length`: one shape for compiled models)."""
    if batch_size < 1:
        raise NashError(f"--batch must be at least 1, got {batch_size}")
    if not sources:
        raise NashError("no examples to benchmark: the data is empty")
    batches = []
    for start in range(0, len(sources), batch_size):
        encoded = tokenizer(
            list(sources[start : start + batch_size]),
            truncation=True,
            max_length=max_source_length,
            padding="max_length" if pad_to_max and max_source_length else True,
            return_tensors="pt",
        )
        batches.append(Batch(encoded["input_ids"], encoded["attention_mask"]))
    return batches
