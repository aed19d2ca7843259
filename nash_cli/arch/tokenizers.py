"""What nash knows about Hugging Face tokenizer classes: language codes and Marian's vocabulary files.

Translation tokenizers carry language codes: NLLB (`eng_Latn`, its `extra_special_tokens`),
mBART-50 and M2M100 (`en_XX`, `__en__`: the class's own list, `lang_code_to_id` /
`lang_token_to_id`) and multilingual Marian models (`>>fra<<`, ordinary vocabulary entries). NLLB,
mBART-50 and M2M100 put the source language's code into the encoder input and have the decoder
emit the target language's code first (`forced_bos_token_id`). Marian's tokenizer is a python one:
its ids come from `vocab.json`, its segmentation from two SentencePiece models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nash_cli.errors import NashError

#: Model types that always translate, whatever their tokenizer holds.
TRANSLATION_MODEL_TYPES = frozenset({"marian", "m2m_100"})
#: Tokenizer attributes mapping every language code of the class's fixed list to its id (mBART-50,
#: mBART, M2M100). These classes add the whole list whenever they load, so none can be dropped.
_FIXED_CODE_MAPS = ("lang_token_to_id", "lang_code_to_id")
#: NLLB's FLORES-200 codes (`eng_Latn`): its `extra_special_tokens`, read back from its config.
_FLORES_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
#: Marian's target-language tokens (`>>fra<<`), written at the start of the source text.
_MARIAN_CODE = re.compile(r"^>>.+<<$")

#: Marian's vocabulary files inside a saved tokenizer directory.
MARIAN_VOCABULARY = "vocab.json"
MARIAN_SENTENCEPIECE = ("source.spm", "target.spm")


@dataclass(frozen=True)
class Languages:
    """The language codes of a tokenizer and the ones it is set to translate between."""

    codes: dict[str, int]
    """Every language code the tokenizer knows -> its id (empty for a tokenizer without any)."""
    fixed: frozenset[str]
    """Codes the tokenizer's class adds whenever it loads (mBART-50's, M2M100's): a reduced
    tokenizer without them would grow them back as new ids, so they are always kept."""
    source: str | None
    """The source language's code when the tokenizer puts it into the encoder input (NLLB,
    mBART-50, M2M100: its `src_lang`); None otherwise."""
    target: str | None
    """The target language's code the tokenizer is set to (`tgt_lang`); None when unset."""


def tokenizer_languages(tokenizer) -> Languages:
    """The language codes of `tokenizer`, and its source and target settings.

    The source code counts only when it really is in the encoder input: a short text is encoded
    with the tokenizer's special tokens and the code's id looked for.
    """
    codes: dict[str, int] = {}
    fixed: set[str] = set()
    for attribute in _FIXED_CODE_MAPS:
        mapping = getattr(tokenizer, attribute, None)
        if isinstance(mapping, dict) and mapping:
            if attribute == "lang_code_to_id" and codes:
                break  # M2M100 has both; its tokens (`__en__`) are what the vocabulary holds
            codes.update({str(token): int(index) for token, index in mapping.items()})
            fixed |= set(codes)
            break
    for token in getattr(tokenizer, "extra_special_tokens", None) or []:
        token = str(token)
        if _FLORES_CODE.match(token) and token not in codes:
            index = tokenizer.convert_tokens_to_ids(token)
            if isinstance(index, int) and index != tokenizer.unk_token_id:
                codes[token] = index
    for token in getattr(tokenizer, "supported_language_codes", None) or []:
        if _MARIAN_CODE.match(str(token)):
            codes.setdefault(str(token), int(tokenizer.convert_tokens_to_ids(token)))

    as_token = getattr(tokenizer, "get_lang_token", None)  # M2M100 is set with "en" and holds "__en__"

    def code(value) -> str | None:
        if value is None:
            return None
        for candidate in (str(value), as_token(str(value)) if as_token else None):
            if candidate in codes:
                return candidate
        return None

    source = code(getattr(tokenizer, "src_lang", None))
    if source is not None:
        try:
            encoded = tokenizer("a")["input_ids"]
        except Exception:  # noqa: BLE001 - a tokenizer that cannot encode carries no code either
            encoded = []
        if codes[source] not in encoded:
            source = None
    return Languages(codes=codes, fixed=frozenset(fixed), source=source, target=code(getattr(tokenizer, "tgt_lang", None)))


def translates(config, languages: Languages) -> bool:
    """Whether a checkpoint is a translation model: its tokenizer knows language codes, or its
    model type always translates (Marian: one direction, a vocabulary shared by both languages)."""
    return bool(languages.codes) or getattr(config, "model_type", None) in TRANSLATION_MODEL_TYPES


@dataclass(frozen=True)
class MarianVocabulary:
    """A Marian tokenizer's vocabulary: SentencePiece segments, `vocab.json` numbers the pieces."""

    vocab: dict[str, int]
    """`vocab.json`: piece -> id (one vocabulary for both languages)."""
    added: dict[int, str]
    """The added tokens (`</s>`, `<unk>`, `<pad>`): id -> text."""
    unk_token: str
    """The token an unknown piece becomes."""


def marian_vocabulary(tokenizer) -> MarianVocabulary | None:
    """The vocabulary of a Marian tokenizer; None for any other tokenizer.

    Raises:
        NashError: a Marian tokenizer with separate source and target vocabularies (the decoder's
            vocabulary is then not the encoder's, and prune-vocab keeps one vocabulary for both).
    """
    if type(tokenizer).__name__ != "MarianTokenizer":
        return None
    if getattr(tokenizer, "separate_vocabs", False):
        raise NashError(
            "the Marian tokenizer has separate source and target vocabularies (separate_vocabs); prune-vocab "
            "reduces Marian models with one shared vocabulary (OPUS-MT's)"
        )
    added = {int(index): str(token) for index, token in tokenizer.added_tokens_decoder.items()}
    return MarianVocabulary(vocab=dict(tokenizer.encoder), added=added, unk_token=str(tokenizer.unk_token))


def python_tokenizer_refusal(tokenizer, source) -> str:
    """The one-line refusal for a python tokenizer prune-vocab cannot rewrite."""
    name = type(tokenizer).__name__
    if name == "M2M100Tokenizer":
        return (
            f"the tokenizer of {source} is M2M100's python tokenizer, whose language-code ids follow from its "
            "vocabulary's length; prune-vocab reduces fast tokenizers (tokenizer.json) and Marian's"
        )
    return (
        f"the tokenizer of {source} ({name}) is not a fast (tokenizers) tokenizer; prune-vocab rewrites "
        "tokenizer.json, or Marian's vocab.json and SentencePiece models"
    )
