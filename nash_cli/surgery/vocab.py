"""A smaller output vocabulary: which token ids to keep, and the model with only their rows.

Pure functions of ids, tensors and configs; `prune_vocabulary` builds the new model from their
output. The tokenizer's side is `nash_cli.surgery.tokenizer`. Kept ids are renumbered in the
order of the original ids: new id i is `kept[i]`.
"""

from __future__ import annotations

import ast
import copy
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nash_cli.arch import (
    GENERATION_FORCED_IDS,
    GENERATION_ID_LISTS,
    GENERATION_ID_SEQUENCES,
    TOKEN_ID_FIELDS,
    VOCABULARY_SIZE_FIELDS,
    family_of,
)
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


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _id_list(value: Any) -> list[int] | None:
    """`value` as a list of token ids, or None when it is not one."""
    if isinstance(value, (list, tuple)) and all(_is_id(v) for v in value):
        return list(value)
    return None


def _config_name(config: Any, name: str | None) -> str:
    if name is not None:
        return name
    if type(config).__name__ == "GenerationConfig":
        return "the generation config (generation_config.json)"
    return "the config (config.json)"


#: What each nested token-id field must look like, for the one-line refusal.
_SHAPES = {
    "forced_decoder_ids": "a list of [position, token id] pairs",
    "force_words_ids": "a list of token-id lists (or of lists of alternative token-id lists)",
    "bad_words_ids": "a list of token-id lists",
    "sequence_bias": "a mapping of token-id sequences to biases (or a list of [token ids, bias] pairs)",
}


def _entries(config: Any, field: str, name: str | None) -> list[tuple[list[int], Any]]:
    """The entries of a nested token-id field, each as (its token ids, how to rebuild it).

    The rebuild part is what the entry holds besides its ids: the position of a forced token,
    the bias of a sequence, the shape of a forced word.

    Raises:
        NashError: when the field does not have the shape transformers reads.
    """
    value = getattr(config, field, None)
    if value is None:
        return []
    problem = NashError(
        f"{_config_name(config, name)}'s {field} is not {_SHAPES[field]}; fix or remove it in that file"
    )
    entries: list[tuple[list[int], Any]] = []
    if field == "sequence_bias":
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, (list, tuple)):
            items = value
        else:
            raise problem
        for item in items:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise problem
            key, bias = item
            form = "list" if not isinstance(value, dict) else ("string" if isinstance(key, str) else "tuple")
            if isinstance(key, str):
                try:
                    key = ast.literal_eval(key)
                except (ValueError, SyntaxError):
                    raise problem from None
                key = (key,) if _is_id(key) else key
            ids = _id_list(key)
            if not ids:
                raise problem
            entries.append((ids, (form, bias)))
        return entries
    if not isinstance(value, (list, tuple)):
        raise problem
    for entry in value:
        if field == "forced_decoder_ids":
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and _is_id(entry[0]) and _is_id(entry[1])):
                raise problem
            entries.append(([entry[1]], entry[0]))
        elif field == "force_words_ids" and isinstance(entry, (list, tuple)) and entry and all(
            isinstance(alternative, (list, tuple)) for alternative in entry
        ):
            alternatives = [_id_list(alternative) for alternative in entry]
            if any(not alternative for alternative in alternatives):
                raise problem
            entries.append(([i for alternative in alternatives for i in alternative], [len(a) for a in alternatives]))
        else:
            ids = _id_list(entry)
            if not ids:
                raise problem
            entries.append((ids, None))
    return entries


def _rebuild(field: str, entries: list[tuple[list[int], Any]]) -> Any:
    """A nested token-id field from (renumbered ids, rebuild part) entries: `_entries` reversed."""
    if field == "forced_decoder_ids":
        return [[position, ids[0]] for ids, position in entries]
    if field == "sequence_bias":
        forms = {form for _, (form, _) in entries}
        if forms == {"list"}:
            return [[ids, bias] for ids, (_, bias) in entries]
        # the dict forms: tuple keys, or the strings transformers writes them to JSON as
        return {(str(tuple(ids)) if form == "string" else tuple(ids)): bias for ids, (form, bias) in entries}
    rebuilt = []
    for ids, lengths in entries:
        if lengths is None:
            rebuilt.append(ids)
        else:  # alternatives of one forced word
            parts, start = [], 0
            for length in lengths:
                parts.append(ids[start : start + length])
                start += length
            rebuilt.append(parts)
    return rebuilt


def config_ids(config: Any, *, name: str | None = None) -> set[int]:
    """Every token id a model or generation config needs kept: pad, eos, bos, decoder start,
    forced first and last tokens, suppressed tokens, and the tokens of `forced_decoder_ids` and
    `force_words_ids` (generation must still be able to produce them).

    The tokens of `bad_words_ids` and `sequence_bias` are not among them: a ban or a bias on a
    dropped token has nothing left to act on, and `renumber_config` removes it.

    Raises:
        NashError: when a nested token-id field does not have the shape transformers reads.
    """
    ids: set[int] = set()
    for field in TOKEN_ID_FIELDS + GENERATION_ID_LISTS:
        value = getattr(config, field, None)
        if _is_id(value):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if _is_id(v))
    for field in GENERATION_FORCED_IDS:
        for entry_ids, _ in _entries(config, field, name):
            ids.update(entry_ids)
    for field in GENERATION_ID_SEQUENCES:
        _entries(config, field, name)  # a malformed field is refused before anything is written
    return ids


def field_naming(config: Any, token: int) -> str:
    """The first token-id field of `config` that names `token` (for a refusal), else "a field"."""
    for field in TOKEN_ID_FIELDS + GENERATION_ID_LISTS:
        value = getattr(config, field, None)
        if value == token or (isinstance(value, (list, tuple)) and token in value):
            return field
    for field in GENERATION_FORCED_IDS + GENERATION_ID_SEQUENCES:
        if any(token in ids for ids, _ in _entries(config, field, None)):
            return field
    return "a field"


def renumber_config(config: Any, kept: Sequence[int], *, vocab_size: bool = True, name: str | None = None) -> Any:
    """A copy of a model (or generation) config with its token ids renumbered.

    Single ids (pad, eos, ...) and forced tokens and words must be kept (`config_ids` lists
    them). Suppressed tokens, banned sequences (`bad_words_ids`) and biased sequences
    (`sequence_bias`) that name a dropped token are removed: that token can no longer be
    generated, so the entry had nothing left to act on and removing it is exact.

    Args:
        config: A `PretrainedConfig` or `GenerationConfig`.
        kept: The kept original ids, sorted.
        vocab_size: Also set `vocab_size` (and Marian's `decoder_vocab_size`) to the number of kept ids
            (model configs).
        name: How the refusals name the config (default: from its type).

    Raises:
        NashError: when an id the config needs (pad, eos, a forced token, ...) is not kept, or a
            nested token-id field does not have the shape transformers reads.
    """
    mapping = id_map(kept)
    config = copy.deepcopy(config)
    where = _config_name(config, name)

    def renumbered(field: str, value: int) -> int:
        if value not in mapping:
            raise NashError(f"{where}'s {field} names token {value}, which is not among the kept ids; keep it")
        return mapping[value]

    for field in TOKEN_ID_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, bool) or value is None:
            continue
        if _is_id(value):
            setattr(config, field, renumbered(field, value))
        elif isinstance(value, (list, tuple)):
            setattr(config, field, [renumbered(field, v) if _is_id(v) else v for v in value])
    for field in GENERATION_ID_LISTS:
        value = getattr(config, field, None)
        if isinstance(value, (list, tuple)):
            # a token that no longer exists cannot be generated: dropping it from the list is exact
            setattr(config, field, [mapping[v] for v in value if v in mapping])
    for field in GENERATION_FORCED_IDS:
        entries = _entries(config, field, name)
        if entries:
            setattr(config, field, _rebuild(field, [([renumbered(field, i) for i in ids], part) for ids, part in entries]))
    for field in GENERATION_ID_SEQUENCES:
        entries = _entries(config, field, name)
        if entries or getattr(config, field, None) is not None:
            kept_entries = [([mapping[i] for i in ids], part) for ids, part in entries if all(i in mapping for i in ids)]
            setattr(config, field, _rebuild(field, kept_entries) if kept_entries else None)
    if vocab_size:
        for field in VOCABULARY_SIZE_FIELDS:
            if field == "vocab_size" or getattr(config, field, None) is not None:
                setattr(config, field, len(kept))
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


#: `--keep-language` value that keeps every language code.
ALL_LANGUAGES = "all"


@dataclass
class LanguageChoice:
    """Which language codes a reduced vocabulary keeps."""

    kept: dict[str, int]
    """Code -> original id, for every kept code."""
    dropped: dict[str, int]
    """Code -> original id, for every other code."""
    why: dict[str, str]
    """Code -> why it is kept: "target", "source", "named", "fixed" (the tokenizer class adds it
    whenever it loads) or "no target set" (every code is kept when no target language is known)."""


def choose_languages(
    codes: Mapping[str, int],
    *,
    source: str | None,
    target: str | None,
    config_ids: Iterable[int] = (),
    fixed: Iterable[str] = (),
    named: Sequence[str] = (),
) -> LanguageChoice:
    """The language codes to keep: the target's (the decoder emits it first), the source's when
    the encoder input carries it, the ones the tokenizer class always adds, and the named ones.

    The target is the tokenizer's `tgt_lang` and every code a config names (`forced_bos_token_id`).
    When none is known and no code is named, every code is kept: which language the model is to
    write cannot be told.

    Args:
        codes: Every language code of the tokenizer -> its id.
        source: The source code in the encoder input (None when the input carries none).
        target: The tokenizer's target code (None when unset).
        config_ids: The ids the model and generation configs name.
        fixed: Codes the tokenizer class adds whenever it loads.
        named: Codes the user asks for (`--keep-language`); `all` keeps every code.

    Raises:
        NashError: a named code the tokenizer does not know, or codes named for a tokenizer
            without any.
    """
    named = list(named)
    if named and not codes:
        raise NashError(
            f"--keep-language {named[0]}: the tokenizer has no language codes; the option is for translation "
            "tokenizers (NLLB, mBART-50, multilingual Marian)"
        )
    unknown = [code for code in named if code != ALL_LANGUAGES and code not in codes]
    if unknown:
        known = sorted(codes)
        listed = ", ".join(known[:8]) + (f", ... ({len(known)} codes)" if len(known) > 8 else "")
        raise NashError(f"--keep-language {unknown[0]}: the tokenizer has no such language code; it knows {listed}, or use all")
    why: dict[str, str] = {}
    config_ids = set(config_ids)
    targets = [code for code, index in codes.items() if index in config_ids] + ([target] if target in codes else [])
    for code in targets:
        why.setdefault(code, "target")
    if source in codes:
        why.setdefault(source, "source")
    for code in fixed:
        if code in codes:
            why.setdefault(code, "fixed")
    everything = ALL_LANGUAGES in named or (not targets and not named)
    for code in codes if everything else named:
        why.setdefault(code, "named" if named else "no target set")
    return LanguageChoice(
        kept={code: codes[code] for code in codes if code in why},
        dropped={code: index for code, index in codes.items() if code not in why},
        why=why,
    )
