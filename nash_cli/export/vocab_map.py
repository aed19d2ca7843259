"""CTranslate2's vocabulary map: the output vocabulary restricted per batch (`nash export --vocab-map`).

CTranslate2 (4.x, `src/vocabulary_map.cc`) reads `vmap.txt` from a model directory. Each line is
`KEY<TAB>TOKEN TOKEN ...`; a key of one token (no space) is a unigram rule. When
`translate_batch(..., use_vmap=True)` is called, the decoder's output layer is cut to the union of:
the tokens of the line with an empty key (always allowed), the values of every rule whose key
occurs in the batch's source tokens, the target prefix and the engine's unk / bos / eos tokens.
The softmax and the beam's top-k then run over those rows only.

nash writes the map so that the allowed set of a batch is: the model's control tokens, every
token of the training targets (the empty key), and the tokens of that batch's own inputs (one
rule per vocabulary token mapping it to itself). Everything here is pure: ids and token strings
in, ids and text out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: The file CTranslate2 reads the map from, inside the model directory.
VMAP_FILE = "vmap.txt"

# CTranslate2 splits a line on tabs (key / values) and spaces (n-gram parts, value list); a
# token holding one of these, or an empty one, cannot be written as itself.
_SEPARATORS = (" ", "\t", "\n", "\r")


def writable(token: str) -> bool:
    """Whether `token` can stand in a vmap.txt line (non-empty, no space, tab or line break)."""
    return bool(token) and not any(separator in token for separator in _SEPARATORS)


@dataclass
class VocabularyMap:
    """Which output ids a vocabulary map allows."""

    always: list[int]
    """Ids allowed in every batch: the control tokens and the training targets' tokens."""
    special: list[int]
    """The control ids among `always` (pad, eos, bos, unk, decoder start, forced tokens)."""
    from_targets: int
    """Distinct ids seen in the training targets (special ones included)."""
    source_entries: list[int]
    """Ids with a unigram rule `token -> token`: allowed in a batch whose inputs hold them."""
    unwritable: list[int]
    """Ids whose token string cannot be written in the file (left out of the map: never allowed
    by it unless CTranslate2 adds them itself)."""

    def summary(self) -> dict[str, Any]:
        """Counts for reports (no id lists)."""
        return {
            "always_allowed": len(self.always),
            "special": len(self.special),
            "from_targets": self.from_targets,
            "source_entries": len(self.source_entries),
            "unwritable": len(self.unwritable),
        }


def build_vocabulary_map(
    tokens: Sequence[str], *, target_ids: Iterable[Sequence[int]], special_ids: Iterable[int | None]
) -> VocabularyMap:
    """The map allowing control tokens, every training-target token, and each batch's input tokens.

    Args:
        tokens: The export's vocabulary, one distinct token string per id.
        target_ids: Token ids of each training target (any ids outside the vocabulary are ignored).
        special_ids: Control ids (None entries are skipped).

    Returns:
        A `VocabularyMap`: `always` holds the special and target ids; every other writable id
        gets a unigram rule mapping it to itself.
    """
    size = len(tokens)
    unwritable = [index for index, token in enumerate(tokens) if not writable(token)]
    blocked = set(unwritable)
    special = sorted({int(i) for i in special_ids if i is not None and 0 <= int(i) < size} - blocked)
    seen = {int(i) for ids in target_ids for i in ids if 0 <= int(i) < size}
    always = sorted((seen | set(special)) - blocked)
    allowed = set(always)
    entries = [index for index in range(size) if index not in allowed and index not in blocked]
    return VocabularyMap(always=always, special=special, from_targets=len(seen), source_entries=entries,
                         unwritable=unwritable)


def vmap_text(tokens: Sequence[str], vocab_map: VocabularyMap) -> str:
    """The contents of vmap.txt: the empty-key line first, then one `token<TAB>token` line per entry."""
    lines = ["\t" + " ".join(tokens[i] for i in vocab_map.always)]
    lines += [f"{tokens[i]}\t{tokens[i]}" for i in vocab_map.source_entries]
    return "\n".join(lines) + "\n"


def coverage(
    references: Sequence[Sequence[Sequence[int]]],
    inputs: Sequence[Sequence[int]],
    always: Iterable[int],
) -> dict[str, Any]:
    """How many references the map could produce: all their tokens allowed for their own input.

    A reference is covered when each of its ids is in `always` or in its example's input ids.
    (In CTranslate2 a batch allows the union of its inputs' tokens, so the share covered in a
    real batch is at least this.)

    Args:
        references: Per example, the token ids of each of its references.
        inputs: Per example, the input ids the engine sees.
        always: Ids allowed in every batch.

    Returns:
        `references` (count), `covered` (count), `share` (covered / references; None without
        references), `examples` and `examples_covered` (an example counts when any of its
        references is covered), and `missing_tokens` (distinct ids that left a reference uncovered).
    """
    allowed = set(always)
    total = covered = examples_covered = 0
    missing: set[int] = set()
    for example_references, input_ids in zip(references, inputs, strict=True):
        own = allowed | set(input_ids)
        any_covered = False
        for reference in example_references:
            total += 1
            outside = set(reference) - own
            if outside:
                missing |= outside
            else:
                covered += 1
                any_covered = True
        examples_covered += any_covered
    return {
        "references": total,
        "covered": covered,
        "share": covered / total if total else None,
        "examples": len(inputs),
        "examples_covered": examples_covered,
        "missing_tokens": len(missing),
    }
