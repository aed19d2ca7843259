"""A smaller output vocabulary: which token ids to keep, and the model with only their rows.

Pure functions of ids, tensors and configs; `prune_vocabulary` builds the new model from their
output. The tokenizer's side is `nash_cli.surgery.tokenizer`. Kept ids are renumbered in the
order of the original ids: new id i is `kept[i]`.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nash_cli.arch import GENERATION_ID_LISTS, TOKEN_ID_FIELDS, family_of
from nash_cli.errors import NashError

if TYPE_CHECKING:
    import torch


def count_tokens(sequences: Iterable[Sequence[int]]) -> Counter:
    """How often each id occurs in `sequences`."""
    counts: Counter = Counter()
    for ids in sequences:
        counts.update(ids)
    return counts


def choose_kept_ids(required: Iterable[int], counts: Mapping[int, int], min_count: int = 1) -> list[int]:
    """The ids to keep, sorted: every required id, and every id seen at least `min_count` times.

    Raises:
        NashError: when `min_count` is below 1.
    """
    if min_count < 1:
        raise NashError(f"--min-count must be at least 1, got {min_count}")
    kept = set(required) | {token for token, count in counts.items() if count >= min_count}
    return sorted(kept)


def id_map(kept: Sequence[int]) -> dict[int, int]:
    """Original id -> new id."""
    return {old: new for new, old in enumerate(kept)}


def config_ids(config: Any) -> set[int]:
    """Every token id a model or generation config names (pad, eos, bos, decoder start, forced...)."""
    ids: set[int] = set()
    for field in TOKEN_ID_FIELDS + GENERATION_ID_LISTS:
        value = getattr(config, field, None)
        if isinstance(value, int) and not isinstance(value, bool):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int) and not isinstance(v, bool))
    return ids


def renumber_config(config: Any, kept: Sequence[int], *, vocab_size: bool = True) -> Any:
    """A copy of a model (or generation) config with its token ids renumbered.

    Args:
        config: A `PretrainedConfig` or `GenerationConfig`.
        kept: The kept original ids, sorted.
        vocab_size: Also set `vocab_size` to the number of kept ids (model configs).

    Raises:
        NashError: when a single id the config names (pad, eos, ...) is not kept.
    """
    mapping = id_map(kept)
    config = copy.deepcopy(config)
    for field in TOKEN_ID_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            if value not in mapping:
                raise NashError(f"the config's {field} ({value}) is not among the kept ids; keep it")
            setattr(config, field, mapping[value])
        elif isinstance(value, (list, tuple)):
            setattr(config, field, [mapping[v] for v in value])
    for field in GENERATION_ID_LISTS:
        value = getattr(config, field, None)
        if isinstance(value, (list, tuple)):
            # a token that no longer exists cannot be generated: dropping it from the list is exact
            setattr(config, field, [mapping[v] for v in value if v in mapping])
    if vocab_size:
        config.vocab_size = len(kept)
    return config


def slice_vocabulary(
    state_dict: Mapping[str, "torch.Tensor"], keys: Mapping[str, int], kept: Sequence[int]
) -> dict[str, "torch.Tensor"]:
    """The state dict with only the kept ids along each vocabulary dimension.

    Args:
        state_dict: Name -> tensor.
        keys: Name -> dimension indexed by token id (embeddings and lm_head: 0; BART's
            `final_logits_bias`, shape `(1, vocab)`: 1). Names missing from the state dict are
            skipped.
        kept: The kept original ids, sorted.

    Returns:
        A new dict: sliced tensors for `keys`, the same tensor objects for every other name. A
        tensor shared by several names (a tied lm_head) is sliced once and stays shared.
    """
    import torch

    index = torch.as_tensor(list(kept), dtype=torch.long)
    sliced: dict[int, "torch.Tensor"] = {}
    out = dict(state_dict)
    for name, dim in keys.items():
        tensor = state_dict.get(name)
        if tensor is None:
            continue
        if len(kept) and max(kept) >= tensor.shape[dim]:
            raise NashError(f"token id {max(kept)} is beyond the model's {tensor.shape[dim]} vocabulary rows")
        if id(tensor) not in sliced:
            sliced[id(tensor)] = tensor.index_select(dim, index.to(tensor.device)).contiguous()
        out[name] = sliced[id(tensor)]
    return out


def prune_vocabulary(model, kept: Sequence[int]):
    """Returns a new model that keeps only the `kept` token ids, renumbered 0..len(kept)-1.

    The shared embedding, both stacks' token embeddings, the lm_head (tied or untied) and BART's
    `final_logits_bias` lose the dropped rows; the config's ids and vocab_size, and the
    generation config's ids, are renumbered. Built through `from_pretrained(None, config=...,
    state_dict=...)`, so a tied or untied lm_head is resolved exactly as when loading from disk:
    an untied head keeps its own values. The logits of the new model equal the original's at
    the kept ids.
    """
    from nash_cli._hf import quiet_transformers

    family = family_of(model)
    config = renumber_config(model.config, kept)
    state = slice_vocabulary(model.state_dict(), family.vocabulary_keys, kept)
    with quiet_transformers():
        pruned = type(model).from_pretrained(None, config=config, state_dict=state)
    if getattr(model, "generation_config", None) is not None:
        pruned.generation_config = renumber_config(model.generation_config, kept, vocab_size=False)
    return pruned.eval()
