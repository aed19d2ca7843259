"""prune-vocab's files: the reduced tokenizer (fast, or Marian's) and the renumbered generation config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nash_cli.errors import NashError
from nash_cli.stages.prune_vocab.tokens import GENERATION_NAME

GENERATION_FILE = "generation_config.json"


def generation_document(source: str) -> dict[str, Any] | None:
    """The checkpoint's generation_config.json as written (None without one).

    Read as JSON, not through `GenerationConfig`, which drops fields it does not know (such as
    `forced_decoder_ids`) but whose token ids still have to be kept and renumbered. It must also
    load in transformers, which `check_generation_config` asks first.

    Raises:
        NashError: an unreadable file, one that is not a JSON object, or one transformers refuses.
    """
    from nash_cli.artifact.checkpoints import read_json_object
    from nash_cli.artifact.loading import check_generation_config

    path = Path(source) / GENERATION_FILE
    if not path.is_file():
        return None
    check_generation_config(source)  # a JSON list was a TypeError; an unparsable file was ignored
    # the file check_generation_config has just read (artifact reads a file once while it is unchanged)
    return read_json_object(path, fix="re-save the checkpoint")


def as_config(document: dict[str, Any] | None):
    """A generation config document as an object `nash_cli.surgery.vocab` reads fields of."""
    from types import SimpleNamespace

    return None if document is None else SimpleNamespace(**document)


def renumbered_generation_text(document: dict[str, Any], kept: list[int]) -> str:
    """`document` with every token id renumbered to the kept ids (`surgery.vocab.renumber_config`)."""
    from nash_cli.surgery import vocab

    renumbered = vocab.renumber_config(as_config(document), kept, vocab_size=False, name=GENERATION_NAME)
    fields = {key: value for key, value in vars(renumbered).items() if value is not None or document.get(key) is None}
    return json.dumps(fields, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


#: Vocabulary files other than tokenizer.json: they would describe the original vocabulary.
_STALE_FILES = ("spiece.model", "sentencepiece.bpe.model", "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json")


def write_tokenizer(tokenizer, document: dict[str, Any], kept: list[int], directory: Path):
    """Writes the tokenizer with only the `kept` ids into `directory`; returns it as AutoTokenizer
    loads it, and notes.

    `save_pretrained` writes the tokenizer's own files and config (class, special tokens, source
    and target languages). For a fast tokenizer, tokenizer.json is then replaced by the reduced
    document and any SentencePiece or BPE vocabulary file removed, so that only the reduced
    vocabulary can be loaded; for Marian's, vocab.json is reduced and its SentencePiece models
    restricted to the kept pieces (`nash_cli.surgery.spm_vocab`). The config's ids are
    renumbered and its special-token lists cut to the kept tokens (NLLB's language codes).

    Raises:
        NashError: when the written tokenizer does not load with exactly the kept tokens.
    """
    from transformers import AutoTokenizer

    from nash_cli._hf import quiet_transformers
    from nash_cli.arch.tokenizers import MARIAN_SENTENCEPIECE, MARIAN_VOCABULARY, marian_vocabulary
    from nash_cli.surgery import spm_vocab
    from nash_cli.surgery import tokenizer as tokenizer_surgery

    mapping = {old: new for new, old in enumerate(kept)}
    texts = tokenizer_surgery.token_strings(document)
    notes = []
    with quiet_transformers():
        tokenizer.save_pretrained(directory)
    marian = marian_vocabulary(tokenizer)
    if marian is None:
        for name in _STALE_FILES:
            (directory / name).unlink(missing_ok=True)
        reduced = tokenizer_surgery.reduce_tokenizer(document, kept)
        (directory / "tokenizer.json").write_text(json.dumps(reduced, ensure_ascii=False))
    else:
        (directory / MARIAN_VOCABULARY).write_text(
            json.dumps(spm_vocab.reduce_vocab(marian.vocab, kept), indent=2, ensure_ascii=False) + "\n"
        )
        kept_pieces = {texts[i] for i in kept}
        dropped = set(marian.vocab) - kept_pieces
        for name in MARIAN_SENTENCEPIECE:
            path = directory / name
            restricted, done = spm_vocab.restrict_sentencepiece(path.read_bytes(), dropped)
            path.write_bytes(restricted)
            if not done:
                notes.append(
                    f"{name} is not a Unigram SentencePiece model and was left as it is: a text holding a dropped "
                    "piece reads it as <unk> rather than as smaller pieces"
                )
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        config = tokenizer_surgery.renumber_tokenizer_config(
            json.loads(config_path.read_text()), mapping, kept_tokens={texts[i] for i in kept}
        )
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    with quiet_transformers():
        reloaded = AutoTokenizer.from_pretrained(str(directory))
    if len(reloaded) != len(mapping):
        raise NashError(
            f"the reduced tokenizer loads with {len(reloaded)} tokens instead of {len(mapping)}; "
            "its class rebuilds the vocabulary differently (please report this)"
        )
    return reloaded, notes
