"""Shallow decoder: keep a subset of a stack's layers, weights and config changed together.

The index rules are pure functions of integers; `keep_layers` is a pure function of a config and
a state dict; `select_layers` builds the new model from their output.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from nash_cli.arch import ArchFamily, Stack, family_of
from nash_cli.errors import NashError

if TYPE_CHECKING:
    import torch

STRATEGIES: tuple[str, ...] = ("uniform", "low", "high")

#: Config fields of nash's compact models that hold one entry per layer of a stack (the kept
#: original heads and the FFN width of each encoder layer): keeping layers keeps their entries.
PER_LAYER_FIELDS: dict[str, tuple[str, ...]] = {"encoder": ("encoder_heads", "encoder_ffn_dims"), "decoder": ()}


def uniform_indices(num_layers: int, k: int) -> list[int]:
    """The official NASH rule: `floor(d * (L - 1) / (k - 1))` for d = 0..k-1, and [0] when k = 1.

    k = 1 divides by zero in that formula; keeping the first layer follows `make_student` of the
    seq2seq-distillation example, the best-known prior.
    """
    _check_count(num_layers, k)
    if k == 1:
        return [0]
    return [(d * (num_layers - 1)) // (k - 1) for d in range(k)]


def strategy_indices(strategy: str, num_layers: int, k: int) -> list[int]:
    """Teacher indices kept by `strategy`: "uniform", "low" (first k) or "high" (last k)."""
    _check_count(num_layers, k)
    if strategy == "uniform":
        return uniform_indices(num_layers, k)
    if strategy == "low":
        return list(range(k))
    if strategy == "high":
        return list(range(num_layers - k, num_layers))
    raise NashError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


def parse_indices(text: str, option: str = "--layers") -> list[int]:
    """Parses a layer list as the command line writes it, "0,5,11", into [0, 5, 11].

    The one parser of layer lists (`--layers`, `--decoder-layer-map`, `--encoder-layer-map`).

    Raises:
        NashError: naming `option`, when the text is empty or not comma-separated integers.
    """
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise NashError(f"{option} {text!r} is not a list of layer numbers (comma-separated integers); write e.g. {option} 0,5,11") from None
    if not values:
        raise NashError(f"{option} is empty; write e.g. {option} 0,5,11")
    return values


def check_indices(indices: Sequence[int], num_layers: int, stack: str = "decoder") -> list[int]:
    """Validates explicit teacher indices and returns them sorted.

    Raises:
        NashError: when the list is empty, has duplicates, or an index is out of range.
    """
    if not indices:
        raise NashError(f"no {stack} layers given; name at least one teacher layer, e.g. --layers 0")
    duplicates = sorted({i for i in indices if list(indices).count(i) > 1})
    if duplicates:
        raise NashError(f"{stack} layer {duplicates[0]} is listed twice; name each teacher layer once")
    outside = [i for i in indices if not 0 <= i < num_layers]
    if outside:
        raise NashError(
            f"{stack} layer {outside[0]} does not exist: the teacher has {num_layers} {stack} layers (0..{num_layers - 1})"
        )
    return sorted(indices)


def _check_count(num_layers: int, k: int) -> None:
    if k < 1:
        raise NashError(f"cannot keep {k} layers; keep at least 1")
    if k > num_layers:
        raise NashError(f"cannot keep {k} layers: the teacher has only {num_layers}; choose 1..{num_layers}")


def keep_layers(
    family: ArchFamily,
    config,
    state_dict: Mapping[str, "torch.Tensor"],
    stack: Stack,
    indices: Sequence[int],
):
    """Keeps the layers `indices` of one stack, renumbered 0..k-1, in a config and a state dict.

    Weights are not copied: the returned state dict holds the same tensors. Keys that only the
    stack's first layer holds (T5's relative position bias table) move to the new first layer,
    whichever teacher layer that is, because the first layer computes the bias for all others.

    Returns:
        (new_config, new_state_dict)
    """
    prefix = family.layer_prefix(stack) + "."
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.(.+)")
    position = {teacher: student for student, teacher in enumerate(indices)}
    first_only = family.layer_only_keys(stack)
    kept: dict[str, "torch.Tensor"] = {}
    for key, tensor in state_dict.items():
        match = pattern.fullmatch(key)
        if match is None:
            kept[key] = tensor
            continue
        layer, rest = int(match.group(1)), match.group(2)
        if rest in first_only:
            if layer == 0:
                kept[f"{prefix}0.{rest}"] = tensor
        elif layer in position:
            kept[f"{prefix}{position[layer]}.{rest}"] = tensor
    new_config = copy.deepcopy(config)
    depth = family.num_layers(config, stack)
    for name in PER_LAYER_FIELDS[stack]:
        values = getattr(config, name, None)
        if values is None:
            continue
        if len(values) != depth:
            raise NashError(
                f"the config's {name} has {len(values)} entries for {depth} {stack} layers; "
                "the checkpoint is inconsistent: rebuild it with nash compact"
            )
        setattr(new_config, name, [copy.deepcopy(values[i]) for i in indices])
    family.set_num_layers(new_config, stack, len(indices))
    return new_config, kept


def select_layers(model, *, decoder: Sequence[int] | None = None, encoder: Sequence[int] | None = None):
    """Returns a new model that keeps the given teacher layers of each stack.

    Built through `from_pretrained(None, config=..., state_dict=...)`, so every attention gets a
    fresh `layer_idx` (the KV cache in `generate()` depends on it) and tied or untied embeddings
    are resolved exactly as when loading from disk.
    """
    family = family_of(model)
    config, state = model.config, model.state_dict()
    for stack, indices in (("decoder", decoder), ("encoder", encoder)):
        if indices is not None:
            config, state = keep_layers(family, config, state, stack, list(indices))
    from nash_cli._hf import quiet_transformers

    with quiet_transformers():
        student = type(model).from_pretrained(None, config=config, state_dict=state)
    keep_generation_config(model, student)
    return student.eval()


def keep_generation_config(source, built) -> None:
    """Gives a model built from a config the generation settings of the model it came from.

    `from_pretrained(None, config=...)` derives them from the model config, which loses what only
    the generation config holds: NLLB's and mBART-50's forced target language
    (`forced_bos_token_id`), Marian's banned pad token (`bad_words_ids`), beams, lengths.
    """
    import copy

    if getattr(source, "generation_config", None) is not None:
        built.generation_config = copy.deepcopy(source.generation_config)
