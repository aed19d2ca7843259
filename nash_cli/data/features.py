"""The training side: examples to token ids (`tokenize_examples`) and padded batches (`Seq2SeqCollator`).

Batches are padded dynamically, with label padding set to -100 so that padding never enters a
loss. torch is imported inside the functions that need it: importing `nash_cli.data` stays light.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nash_cli.errors import NashError

if TYPE_CHECKING:
    import torch

    from nash_cli.data.examples import Example

#: Label id that every loss ignores (PyTorch's cross-entropy default).
IGNORE_INDEX = -100


@dataclass
class Features:
    """One tokenised training example.

    `tokenize_examples` stores the ids as `array("i")` (4 bytes a token, where a list of Python
    ints takes about 36): a 300k-example summarisation set then fits comfortably in every process.
    Any sequence of ints works.
    """

    input_ids: Sequence[int]
    """Source token ids, truncated to `max_source_length` (the tokenizer's end token included)."""
    labels: Sequence[int]
    """Target token ids of the first reference, truncated to `max_target_length`."""


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer,
    *,
    max_source_length: int = 512,
    max_target_length: int = 128,
    chunk_size: int = 1000,
) -> list[Features]:
    """Tokenises sources and first references for training; the paper's lengths are the defaults.

    Args:
        examples: Examples with at least one reference each.
        tokenizer: The student's tokenizer.
        max_source_length: Longest source kept, in tokens; longer sources are truncated.
        max_target_length: Longest target kept, in tokens.
        chunk_size: Examples per tokenizer call (fast tokenizers batch internally).

    Raises:
        NashError: an example without references, or a length below 1.
    """
    if max_source_length < 1 or max_target_length < 1:
        raise NashError("--max-source-length and --max-target-length must be at least 1")
    for row, example in enumerate(examples, start=1):
        if not example.references:
            raise NashError(f"example {row} has no target text; training needs a target for every example")
    features: list[Features] = []
    for start in range(0, len(examples), chunk_size):
        chunk = examples[start : start + chunk_size]
        sources = tokenizer(
            [example.source for example in chunk], max_length=max_source_length, truncation=True
        )["input_ids"]
        targets = tokenizer(
            text_target=[example.references[0] for example in chunk], max_length=max_target_length, truncation=True
        )["input_ids"]
        features.extend(Features(input_ids=array("i", s), labels=array("i", t)) for s, t in zip(sources, targets))
    return features


@dataclass
class Seq2SeqCollator:
    """Pads a list of `Features` to the longest in the batch (dynamic padding), on the right."""

    pad_token_id: int
    """Id used to pad `input_ids` (the tokenizer's pad token)."""
    label_pad_id: int = IGNORE_INDEX
    """Id used to pad `labels`: -100, which every loss ignores."""

    def __call__(self, batch: Sequence[Features]) -> dict[str, torch.Tensor]:
        """Returns `input_ids`, `attention_mask` and `labels` as int64 tensors [batch, length]."""
        import torch

        if not batch:
            raise ValueError("cannot collate an empty batch")
        source_length = max(len(item.input_ids) for item in batch)
        target_length = max(len(item.labels) for item in batch)
        input_ids = torch.full((len(batch), source_length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), source_length), dtype=torch.long)
        labels = torch.full((len(batch), target_length), self.label_pad_id, dtype=torch.long)
        for row, item in enumerate(batch):
            input_ids[row, : len(item.input_ids)] = _ids(item.input_ids)
            attention_mask[row, : len(item.input_ids)] = 1
            labels[row, : len(item.labels)] = _ids(item.labels)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _ids(values: Sequence[int]) -> torch.Tensor:
    import torch

    if isinstance(values, array) and values.typecode == "i" and len(values):
        return torch.frombuffer(values, dtype=torch.int32)  # a view, no copy; assignment widens it
    return torch.tensor(list(values), dtype=torch.long)
