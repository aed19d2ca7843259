"""prune-vocab's choice of tokens: what the tokenizer is, what must stay, what the data brings.

`nash plan` sizes its vocabulary candidates with the same `choose_tokens`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nash_cli.errors import NashError

#: How refusals name the generation config.
GENERATION_NAME = "the generation config (generation_config.json)"


def tokenizer_document(tokenizer, source: str | Path) -> dict[str, Any]:
    """The vocabulary of a tokenizer prune-vocab can rewrite, as a `tokenizer.json` document.

    A fast tokenizer's own document; for Marian's python tokenizer, its `vocab.json` as a
    WordLevel document (`nash_cli.surgery.spm_vocab`).

    Raises:
        NashError: any other python tokenizer, a model other than Unigram, BPE or WordLevel, or a
            Marian tokenizer with separate source and target vocabularies.
    """
    from nash_cli.arch.tokenizers import marian_vocabulary, python_tokenizer_refusal
    from nash_cli.surgery import spm_vocab
    from nash_cli.surgery import tokenizer as tokenizer_surgery

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        marian = marian_vocabulary(tokenizer)
        if marian is None:
            raise NashError(python_tokenizer_refusal(tokenizer, source))
        return spm_vocab.vocabulary_document(marian.vocab, marian.added, marian.unk_token)
    document = json.loads(backend.to_str())
    tokenizer_surgery.model_type(document)
    return document


@dataclass
class TokenChoice:
    """Which token ids prune-vocab keeps, and why."""

    required: set[int]
    """Ids kept whatever the data: special, config and generation-config ids, single characters,
    the kept language codes."""
    chosen: list[int]
    """`required` and the data's tokens (seen `min_count` times), sorted."""
    closed: list[int]
    """`chosen` and the BPE merges' closure of it, sorted."""
    kept: list[int]
    """`closed` and the tokens that round its count up to `multiple_of`, sorted: the new
    vocabulary in old ids."""
    languages: Any = None
    """The language codes kept and dropped (`nash_cli.surgery.vocab.LanguageChoice`); None for a
    tokenizer without language codes."""


def choose_tokens(
    document: dict[str, Any],
    tokenizer,
    config,
    counts,
    *,
    generation_config=None,
    min_count: int = 1,
    multiple_of: int = 1,
    keep_language: Sequence[str] = (),
) -> TokenChoice:
    """prune-vocab's selection: what must stay, the data's tokens, the BPE closure of both, and
    enough further tokens to make the count a multiple of `multiple_of`.

    Args:
        document: The tokenizer's vocabulary (`tokenizer_document`).
        tokenizer: The tokenizer (its special ids, its language codes).
        config: The model config (pad, eos, decoder start, forced first token ids).
        generation_config: The generation config, when the checkpoint has one (its ids).
        counts: Data token id -> occurrences (`surgery.vocab.count_tokens`).
        min_count: A data token is kept from this many occurrences.
        multiple_of: Round the kept count up to a multiple of this (the data's rarer tokens
            first, by count); never beyond the config's `vocab_size` rows.
        keep_language: Language codes kept besides the target's and the source's (`all`: every
            one); see `surgery.vocab.choose_languages`.

    Returns:
        The required, chosen, closed and kept ids, and the language codes' choice.

    Raises:
        NashError: a generation-config id beyond the model's rows; an unknown `keep_language`.
    """
    from nash_cli.arch.tokenizers import tokenizer_languages
    from nash_cli.surgery import tokenizer as tokenizer_surgery
    from nash_cli.surgery import vocab

    generation_ids = set()
    if generation_config is not None:
        generation_ids = vocab.config_ids(generation_config, name=GENERATION_NAME)
        rows = getattr(config, "vocab_size", None)
        beyond = sorted(i for i in generation_ids if i < 0 or (rows is not None and i >= rows))
        if beyond:
            field = vocab.field_naming(generation_config, beyond[0])
            raise NashError(
                f"{GENERATION_NAME}'s {field} names token {beyond[0]}, beyond the model's {rows} vocabulary rows "
                "(0..{}); fix or remove it in that file".format(rows - 1 if rows else 0)
            )
    settings_ids = vocab.config_ids(config) | generation_ids
    languages = tokenizer_languages(tokenizer)
    language_choice = None
    dropped: set[int] = set()
    if languages.codes or keep_language:
        language_choice = vocab.choose_languages(
            languages.codes,
            source=languages.source,
            target=languages.target,
            config_ids=settings_ids,
            fixed=languages.fixed,
            named=keep_language,
        )
        # a code the data itself holds (Marian's `>>fra<<` at the start of a source) is data
        in_data = {token for token, count in counts.items() if count >= min_count}
        dropped = set(language_choice.dropped.values()) - in_data
    required = (
        (tokenizer_surgery.required_ids(document) | set(tokenizer.all_special_ids)) - dropped
    ) | settings_ids
    chosen = vocab.choose_kept_ids(required, counts, min_count)
    closed = tokenizer_surgery.close_ids(document, chosen)
    rarer = sorted((token for token, count in counts.items() if count < min_count), key=lambda t: (-counts[t], t))
    kept = tokenizer_surgery.fill_to_multiple(
        document, closed, multiple_of, preferred=rarer, below=getattr(config, "vocab_size", None), excluded=dropped
    )
    return TokenChoice(required=required, chosen=chosen, closed=sorted(closed), kept=sorted(kept),
                       languages=language_choice)
