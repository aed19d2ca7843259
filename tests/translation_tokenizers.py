"""Tokenizers of the translation families, built offline for tests.

A SentencePiece model is trained here on a few hundred generated English and German sentences
(no download), then loaded with the family's own transformers tokenizer class, the way a hub
checkpoint's tokenizer is:

* `marian`: `MarianTokenizer` (python, two SentencePiece models and a `vocab.json`; the pad token
  is the last id, as in OPUS-MT);
* `nllb`: `NllbTokenizer` with a few FLORES-200 language codes as special tokens;
* `mbart50`: `MBart50Tokenizer` (it adds mBART-50's language codes itself);
* `m2m100`: `M2M100Tokenizer` (python; it adds M2M100's 100 codes, `de` written `__de__`);
* `pegasus`: `PegasusTokenizer` (Unigram, with Pegasus's offset of reserved tokens).

`save_tokenizer(kind, directory)` writes one into a checkpoint directory. The trained
SentencePiece models are made once per test session (they take about a second).
"""

from __future__ import annotations

import functools
import json
import random
import shutil
import tempfile
from pathlib import Path

#: Words of the generated corpus: English and German, so that both sides of a pair tokenise.
WORDS = (
    "the cat dog house tree runs sees a big small red blue green walks eats bird fish under over near far "
    "happy sad der die das Haus Baum Hund Katze sieht läuft groß klein rot blau grün Vogel Fisch unter über"
).split()
#: The language codes the NLLB tokenizer knows (FLORES-200 codes).
NLLB_LANGUAGES = ("eng_Latn", "deu_Latn", "fra_Latn")
#: The kinds `save_tokenizer` builds.
KINDS = ("marian", "nllb", "mbart50", "m2m100", "pegasus")


def sentences(count: int = 400, seed: int = 0) -> list[str]:
    """Generated sentences of 3 to 10 words from `WORDS`."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(count)]


@functools.cache
def _sentencepiece_model(model_type: str) -> Path:
    """A trained SentencePiece model ("bpe" or "unigram") in a session-wide temporary directory."""
    import sentencepiece

    directory = Path(tempfile.mkdtemp(prefix=f"nash-spm-{model_type}-"))
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(sentences()), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / model_type),
        vocab_size=150,
        model_type=model_type,
        character_coverage=1.0,
        hard_vocab_limit=False,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    return directory / f"{model_type}.model"


def build_tokenizer(kind: str):
    """The tokenizer of one kind (see `KINDS`), freshly loaded."""
    from transformers import M2M100Tokenizer, MarianTokenizer, MBart50Tokenizer, NllbTokenizer, PegasusTokenizer

    source = Path(tempfile.mkdtemp(prefix=f"nash-tok-{kind}-"))
    if kind == "marian":
        import sentencepiece

        model = _sentencepiece_model("unigram")
        processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
        vocab = {"</s>": 0, "<unk>": 1}
        for index in range(processor.get_piece_size()):
            if processor.id_to_piece(index) != "<pad>":
                vocab.setdefault(processor.id_to_piece(index), len(vocab))
        vocab["<pad>"] = len(vocab)  # OPUS-MT's pad token is the last id
        (source / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        return MarianTokenizer(source_spm=str(model), target_spm=str(model), vocab=str(source / "vocab.json"))
    if kind == "nllb":
        shutil.copy(_sentencepiece_model("bpe"), source / "sentencepiece.bpe.model")
        return NllbTokenizer.from_pretrained(
            source, src_lang="eng_Latn", tgt_lang="deu_Latn", additional_special_tokens=list(NLLB_LANGUAGES)
        )
    if kind == "mbart50":
        shutil.copy(_sentencepiece_model("bpe"), source / "sentencepiece.bpe.model")
        return MBart50Tokenizer.from_pretrained(source, src_lang="en_XX", tgt_lang="de_DE")
    if kind == "m2m100":
        import sentencepiece

        model = _sentencepiece_model("bpe")
        processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
        vocab = {processor.id_to_piece(index): index for index in range(processor.get_piece_size())}
        (source / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        return M2M100Tokenizer(vocab_file=str(source / "vocab.json"), spm_file=str(model), src_lang="en", tgt_lang="de")
    if kind == "pegasus":
        shutil.copy(_sentencepiece_model("unigram"), source / "spiece.model")
        return PegasusTokenizer.from_pretrained(source)
    raise ValueError(f"unknown tokenizer kind {kind!r}; one of {KINDS}")


def save_tokenizer(kind: str, directory: str | Path):
    """Builds the tokenizer of `kind`, saves it into `directory` and returns it."""
    tokenizer = build_tokenizer(kind)
    tokenizer.save_pretrained(directory)
    return tokenizer
