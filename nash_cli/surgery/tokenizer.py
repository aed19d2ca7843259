"""A tokenizer with fewer tokens: the `tokenizer.json` document of a fast tokenizer, reduced.

Pure functions of plain JSON documents (what `tokenizers.Tokenizer.to_str()` returns), for
`nash prune-vocab`. Three models are supported, each reduced so that a text whose original tokens
are all kept tokenises to the same tokens:

* Unigram (T5's SentencePiece): the kept pieces keep their scores. The Viterbi optimum over a
  subset of pieces that still contains the original optimum is that optimum. The piece with the
  lowest score is always kept, because Unigram derives the penalty of an unknown character from
  the lowest score, and a changed penalty could let a path through `<unk>` win.
* BPE (BART's byte-level BPE): the kept tokens are closed under the merges (every token a kept
  token can be built from is kept), and exactly the merges whose two parts and result are kept
  remain, in their original order. Every merge the original applies to such a text is then
  still there and still the lowest-ranked one available, so the same merges fire.
* WordLevel (nash's toy tokenizer): a lookup; any subset is exact.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nash_cli.errors import NashError

SUPPORTED_MODELS = ("Unigram", "BPE", "WordLevel")

_BYTE_FALLBACK = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def model_type(document: Mapping[str, Any]) -> str:
    """The tokenizer model's type ("Unigram", "BPE" or "WordLevel").

    Raises:
        NashError: for any other model (WordPiece's greedy longest match is not exact on a subset).
    """
    kind = (document.get("model") or {}).get("type")
    if kind not in SUPPORTED_MODELS:
        raise NashError(
            f"the tokenizer is a {kind or 'untyped'} model; prune-vocab reduces Unigram (T5), byte-level "
            "BPE (BART) and WordLevel tokenizers"
        )
    return kind


def token_strings(document: Mapping[str, Any]) -> dict[int, str]:
    """Id -> token text, over the model's vocabulary and the added tokens."""
    model = document["model"]
    if model["type"] == "Unigram":
        tokens = {index: piece for index, (piece, _score) in enumerate(model["vocab"])}
    else:
        tokens = {int(index): token for token, index in model["vocab"].items()}
    for added in document.get("added_tokens") or []:
        tokens[int(added["id"])] = added["content"]
    return tokens


def required_ids(document: Mapping[str, Any]) -> set[int]:
    """The ids kept whatever the data: so that no text becomes unknown and specials survive.

    The added tokens (pad, eos, unk, T5's `<extra_id_*>`, BART's `<s> </s> <pad> <unk> <mask>`),
    every single-character token (T5's character pieces; the 256 byte symbols of a byte-level
    BPE), byte-fallback tokens, the unknown token, and for Unigram the lowest-scored piece.
    """
    model = document["model"]
    tokens = token_strings(document)
    kept = {int(added["id"]) for added in document.get("added_tokens") or []}
    kept |= {index for index, token in tokens.items() if len(token) == 1}
    if model.get("byte_fallback"):
        kept |= {index for index, token in tokens.items() if _BYTE_FALLBACK.match(token)}
    if model["type"] == "Unigram":
        if model.get("unk_id") is not None:
            kept.add(int(model["unk_id"]))
        scores = [score for _piece, score in model["vocab"]]
        if scores:
            kept.add(min(range(len(scores)), key=scores.__getitem__))
    else:
        unknown = model.get("unk_token")
        if unknown is not None and unknown in model["vocab"]:
            kept.add(int(model["vocab"][unknown]))
    return kept


def merge_pairs(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A BPE model's merges as pairs, in rank order (either serialisation: "a b" or ["a", "b"])."""
    pairs = []
    for merge in document["model"].get("merges") or []:
        if isinstance(merge, str):
            left, right = merge.split(" ", 1)
        else:
            left, right = merge
        pairs.append((left, right))
    return pairs


def merge_closure(tokens: Iterable[str], merges: Sequence[tuple[str, str]]) -> set[str]:
    """The smallest superset of `tokens` holding both parts of every merge whose result it holds.

    A token may be the result of several merges ("ab"+"c" and "a"+"bc"); the parts of all of them
    are kept, so whichever path a text takes to a kept token stays open.
    """
    closed: set[str] = set()
    _close(tokens, _made_by(merges), closed)
    return closed


def _made_by(merges: Sequence[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Merge result -> every pair of parts that yields it."""
    made_by: dict[str, list[tuple[str, str]]] = {}
    for left, right in merges:
        made_by.setdefault(left + right, []).append((left, right))
    return made_by


def _close(tokens: Iterable[str], made_by: Mapping[str, Sequence[tuple[str, str]]], closed: set[str]) -> set[str]:
    """Adds `tokens` and their parts to `closed`, in place; returns what was not there before."""
    added = {token for token in tokens if token not in closed}
    closed |= added
    pending = list(added)
    while pending:
        token = pending.pop()
        for pair in made_by.get(token, ()):
            for part in pair:
                if part not in closed:
                    closed.add(part)
                    added.add(part)
                    pending.append(part)
    return added


def close_ids(document: Mapping[str, Any], ids: Iterable[int]) -> set[int]:
    """`ids` plus every token needed to build them through the merges (BPE); the same ids otherwise."""
    ids = set(ids)
    if document["model"]["type"] != "BPE":
        return ids
    vocab = document["model"]["vocab"]
    tokens = token_strings(document)
    closed = merge_closure((tokens[i] for i in ids if i in tokens), merge_pairs(document))
    return ids | {int(vocab[token]) for token in closed if token in vocab}


def fill_to_multiple(
    document: Mapping[str, Any],
    kept: Iterable[int],
    multiple_of: int,
    *,
    preferred: Iterable[int] = (),
    below: int | None = None,
    excluded: Iterable[int] = (),
) -> set[int]:
    """`kept` grown with whole tokens until it holds a multiple of `multiple_of` ids.

    Matrix kernels run faster on aligned sizes (on the CPU this was built on, an lm_head of
    14,889 rows took 1.3 to 1.4 times as long as one of 14,912), so a vocabulary is rounded up the way
    T5's 32,100 tokens were given 32,128 rows, but with real tokens rather than empty rows: every
    id stays a token the tokenizer can produce and decode, and a kept superset keeps the
    reduction exact. Candidates are taken from `preferred` first (e.g. the data's rarer tokens),
    then in the order of their original ids (SentencePiece orders pieces by score, BPE by merge
    rank); a BPE token comes with its merge closure, and is skipped when that would overshoot.

    Args:
        document: A `tokenizer.json` document (Unigram, BPE or WordLevel model).
        kept: The ids chosen so far (closed under the merges, for BPE).
        multiple_of: The count to round up to a multiple of (1 = no rounding).
        preferred: Ids to add first, in this order.
        below: Only ids below this are candidates (the model's vocabulary rows).
        excluded: Ids never added (language codes chosen to be dropped).

    Returns:
        A superset of `kept`: a multiple of `multiple_of` ids when the tokenizer has enough
        tokens below `below`, else every such token.
    """
    kept = set(kept)
    tokens = token_strings(document)
    excluded = set(excluded)
    tokens = {
        index: token for index, token in tokens.items() if (below is None or index < below) and index not in excluded
    }
    target = min(-(-len(kept) // multiple_of) * multiple_of, len(kept | set(tokens)))
    if len(kept) >= target:
        return kept
    bpe = document["model"]["type"] == "BPE"
    if bpe:
        made_by = _made_by(merge_pairs(document))
        vocab = document["model"]["vocab"]
        closed = {tokens[i] for i in kept if i in tokens}
    for candidate in [*preferred, *sorted(tokens)]:
        if candidate in kept or candidate not in tokens:
            continue
        if bpe:
            new_tokens = _close([tokens[candidate]], made_by, closed)
            added = {int(vocab[token]) for token in new_tokens if token in vocab} | {candidate}
            if len(kept | added) > target or any(index not in tokens for index in added):
                closed -= new_tokens  # not taken: undo what the trial closure added
                continue
        else:
            added = {candidate}
        kept |= added
        if len(kept) >= target:
            break
    return kept


def reduce_tokenizer(document: Mapping[str, Any], kept: Sequence[int]) -> dict[str, Any]:
    """The tokenizer document with only the `kept` ids, renumbered in the order of the original ids.

    Args:
        document: A `tokenizer.json` document (Unigram, BPE or WordLevel model).
        kept: Original ids to keep, sorted; new id i is `kept[i]`.

    Returns:
        A new document: vocabulary (Unigram scores kept), merges (BPE: those whose parts and
        result are kept, in order), added tokens, unknown id, padding id and the post-processor's
        special-token ids all renumbered.

    Raises:
        NashError: when an id is unknown to the tokenizer, or the kept model vocabulary would not
            get contiguous ids (added tokens interleaved with it).
    """
    model_type(document)
    new_id = {old: new for new, old in enumerate(kept)}
    tokens = token_strings(document)
    missing = [i for i in kept if i not in tokens]
    if missing:
        raise NashError(f"token id {missing[0]} is not in the tokenizer; the model and its tokenizer do not match")
    reduced = copy.deepcopy(dict(document))
    model = reduced["model"]
    if model["type"] == "Unigram":
        pieces = [(index, entry) for index, entry in enumerate(model["vocab"]) if index in new_id]
        if [new_id[index] for index, _ in pieces] != list(range(len(pieces))):
            raise NashError("the tokenizer's added tokens sit between its vocabulary ids; prune-vocab cannot renumber it")
        model["vocab"] = [entry for _, entry in pieces]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[int(model["unk_id"])]
    else:
        model["vocab"] = {token: new_id[int(index)] for token, index in model["vocab"].items() if int(index) in new_id}
        if model["type"] == "BPE":
            kept_tokens = set(model["vocab"])
            pairs = [
                pair for pair in merge_pairs(document)
                if pair[0] in kept_tokens and pair[1] in kept_tokens and pair[0] + pair[1] in kept_tokens
            ]
            as_strings = any(isinstance(merge, str) for merge in document["model"].get("merges") or [])
            model["merges"] = [" ".join(pair) if as_strings else list(pair) for pair in pairs]
    reduced["added_tokens"] = [
        {**added, "id": new_id[int(added["id"])]} for added in document.get("added_tokens") or [] if int(added["id"]) in new_id
    ]
    if reduced.get("padding") and reduced["padding"].get("pad_id") is not None:
        reduced["padding"]["pad_id"] = new_id.get(int(reduced["padding"]["pad_id"]), reduced["padding"]["pad_id"])
    if reduced.get("post_processor"):
        reduced["post_processor"] = _renumber_processor(reduced["post_processor"], new_id)
    return reduced


def _renumber_processor(processor: dict[str, Any], new_id: Mapping[int, int]) -> dict[str, Any]:
    kind = processor.get("type")
    if kind == "Sequence":
        processor["processors"] = [_renumber_processor(p, new_id) for p in processor.get("processors", [])]
    elif kind == "TemplateProcessing":
        for special in (processor.get("special_tokens") or {}).values():
            special["ids"] = [new_id[int(i)] for i in special.get("ids", [])]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            token, index = processor[key]
            processor[key] = [token, new_id[int(index)]]
    return processor


#: tokenizer_config.json fields listing special tokens by their text (NLLB's language codes are
#: its `extra_special_tokens`; a dropped one left there would be added back as a new token).
SPECIAL_TOKEN_LISTS = ("extra_special_tokens", "additional_special_tokens")


def renumber_tokenizer_config(
    config: Mapping[str, Any], new_id: Mapping[int, int], kept_tokens: Iterable[str] | None = None
) -> dict[str, Any]:
    """`tokenizer_config.json` with its ids renumbered (`added_tokens_decoder` keys, `unk_id`) and,
    given the kept tokens' texts, its special-token lists cut to the kept ones."""
    config = copy.deepcopy(dict(config))
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        config["added_tokens_decoder"] = {str(new_id[int(i)]): entry for i, entry in decoder.items() if int(i) in new_id}
    if isinstance(config.get("unk_id"), int):
        config["unk_id"] = new_id[config["unk_id"]]
    if kept_tokens is not None:
        kept_tokens = set(kept_tokens)
        for key in SPECIAL_TOKEN_LISTS:
            if isinstance(config.get(key), list):
                config[key] = [token for token in config[key] if _token_text(token) in kept_tokens]
    return config


def _token_text(token: Any) -> str:
    """A special-token entry's text: a string, or an AddedToken written as a dict."""
    return str(token.get("content")) if isinstance(token, dict) else str(token)
