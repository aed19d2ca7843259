"""A smaller vocabulary for tokenizers that number SentencePiece pieces with a `vocab.json` (Marian).

Pure functions of plain dicts and SentencePiece model bytes, for `nash prune-vocab`. Marian's
tokenizer segments a text with a SentencePiece model (`source.spm` for inputs, `target.spm` for
targets) and looks each piece up in `vocab.json`; a piece missing there becomes `<unk>`. It is
reduced by:

* `vocab.json`: only the kept pieces, renumbered in the order of their original ids. A text whose
  pieces were all kept gives the same pieces, hence the same (renumbered) ids.
* the SentencePiece models (Unigram): every dropped piece marked UNUSED, as SentencePiece's own
  vocabulary restriction (`SetVocabulary`) does, so that a word outside the kept vocabulary is
  spelled with smaller kept pieces instead of becoming `<unk>`. Unused pieces still count for the
  unknown-character penalty (the lowest score), and Viterbi over the remaining pieces, which
  still hold a covered text's original segmentation, finds that segmentation: the reduction stays
  exact. A BPE SentencePiece model is left as it is (its merges would have to be closed, as for a
  BPE tokenizer.json): a dropped piece then reads as `<unk>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nash_cli.errors import NashError


def vocabulary_document(vocab: Mapping[str, int], added: Mapping[int, str], unk_token: str) -> dict[str, Any]:
    """The vocabulary as a WordLevel `tokenizer.json` document, so that prune-vocab's selection
    (`surgery.tokenizer`: required ids, rounding) treats it as any lookup vocabulary.

    Raises:
        NashError: when two pieces share an id (the file is not a vocabulary prune-vocab can renumber).
    """
    if len(set(vocab.values())) != len(vocab):
        raise NashError("the tokenizer's vocab.json gives two pieces the same id; prune-vocab cannot renumber it")
    return {
        "model": {"type": "WordLevel", "vocab": dict(vocab), "unk_token": unk_token},
        "added_tokens": [{"id": int(index), "content": token, "special": True} for index, token in sorted(added.items())],
    }


def reduce_vocab(vocab: Mapping[str, int], kept: Sequence[int]) -> dict[str, int]:
    """`vocab.json` with only the `kept` ids (sorted), renumbered: piece -> new id.

    Raises:
        NashError: when a kept id has no piece in the vocabulary.
    """
    new_id = {old: new for new, old in enumerate(kept)}
    reduced = {piece: new_id[int(index)] for piece, index in vocab.items() if int(index) in new_id}
    if len(reduced) != len(kept):
        missing = sorted(set(kept) - {int(index) for index in vocab.values()})
        raise NashError(f"token id {missing[0]} is not in the tokenizer's vocab.json; the model and its tokenizer do not match")
    return dict(sorted(reduced.items(), key=lambda item: item[1]))


def restrict_sentencepiece(model: bytes, dropped: Iterable[str]) -> tuple[bytes, bool]:
    """A SentencePiece model that no longer produces the `dropped` pieces (Unigram models only).

    Args:
        model: The serialised model (a `.spm` / `.model` file's bytes).
        dropped: Pieces to mark UNUSED (only normal pieces are marked: control and user-defined
            pieces stay).

    Returns:
        The new model's bytes, and whether it was restricted (False: a BPE or other model, returned
        unchanged).
    """
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(model)
    if proto.trainer_spec.model_type != model_pb2.TrainerSpec.UNIGRAM:
        return model, False
    dropped = set(dropped)
    normal, unused = model_pb2.ModelProto.SentencePiece.NORMAL, model_pb2.ModelProto.SentencePiece.UNUSED
    for piece in proto.pieces:
        if piece.type == normal and piece.piece in dropped:
            piece.type = unused
    return proto.SerializeToString(), True
