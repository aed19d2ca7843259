"""What nash knows about Hugging Face tokenizer classes: language codes and Marian's vocabulary files.

Translation tokenizers carry language codes: NLLB (`eng_Latn`, its `extra_special_tokens`),
mBART, mBART-50 and M2M100 (`en_XX`; M2M100's `de`, whose vocabulary token is `__de__`: the
class's own list, `lang_code_to_id`) and multilingual Marian models (`>>fra<<`, ordinary
vocabulary entries). NLLB, mBART-50 and M2M100 put the source language's code into the encoder
input and have the decoder emit the target language's code first (`forced_bos_token_id`). Marian's
tokenizer is a python one: its ids come from `vocab.json`, its segmentation from two SentencePiece
models.

`language_codes` is the one place that finds a tokenizer's codes; `nash_cli.data.languages` sets
`--source-lang` / `--target-lang` with them and prune-vocab (`tokenizer_languages`) keeps or drops
their tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from nash_cli.errors import NashError

#: Model types that always translate, whatever their tokenizer holds.
TRANSLATION_MODEL_TYPES = frozenset({"marian", "m2m_100"})
#: NLLB's FLORES-200 codes (`eng_Latn`): its `extra_special_tokens`, read back from its config.
#: Other extra special tokens are not languages (prune-vocab would drop them as unused codes).
_FLORES_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
#: Marian's target-language tokens (`>>fra<<`), written at the start of the source text; the
#: group is the code a user names (`fra`).
MARIAN_CODE = re.compile(r"^>>(.+)<<$")

#: Marian's vocabulary files inside a saved tokenizer directory.
MARIAN_VOCABULARY = "vocab.json"
MARIAN_SENTENCEPIECE = ("source.spm", "target.spm")


@dataclass(frozen=True)
class LanguageCodes:
    """The language codes a tokenizer knows, how it uses them, and their vocabulary tokens."""

    kind: Literal["codes", "marian"]
    """"codes": `src_lang` / `tgt_lang` and a forced first token; "marian": a `>>lang<<` input token."""
    ids: dict[str, int]
    """Each code (as `--target-lang` and `src_lang` name it: `deu_Latn`, `de_DE`, M2M100's `de`,
    Marian's `fra`) and its token id."""
    tokens: dict[str, str]
    """Each code and its token in the vocabulary (`deu_Latn`, `de_DE`, `__de__`, `>>fra<<`)."""
    fixed: frozenset[str] = frozenset()
    """Codes the tokenizer's class adds whenever it loads (mBART's, mBART-50's, M2M100's lists)."""

    def token_ids(self) -> dict[str, int]:
        """Each code's vocabulary token -> its id."""
        return {self.tokens[code]: index for code, index in self.ids.items()}


def language_codes(tokenizer) -> LanguageCodes | None:
    """The language codes `tokenizer` knows; None for a tokenizer without any.

    mBART, mBART-50 and M2M100 tokenizers map their class's fixed list of codes to ids
    (`lang_code_to_id`; M2M100's codes are `de`, its tokens `__de__`: `lang_code_to_token`); NLLB's
    codes are its FLORES-200 extra special tokens; a Marian tokenizer's are the `>>lang<<` tokens
    of its vocabulary (`supported_language_codes`).
    """
    mapping = getattr(tokenizer, "lang_code_to_id", None)
    if isinstance(mapping, dict) and mapping:
        to_token = getattr(tokenizer, "lang_code_to_token", None) or {}
        ids = {str(code): int(index) for code, index in mapping.items()}
        tokens = {code: str(to_token.get(code, code)) for code in ids}
        # these classes add the whole list whenever they load, so none can be dropped
        return LanguageCodes("codes", ids, tokens, frozenset(ids))
    if hasattr(tokenizer, "src_lang"):
        # NLLB: its codes are extra special tokens, set with src_lang / tgt_lang like the others.
        ids = {}
        for token in getattr(tokenizer, "extra_special_tokens", None) or []:
            token = str(token)
            if _FLORES_CODE.match(token) and token not in ids:
                index = tokenizer.convert_tokens_to_ids(token)
                if isinstance(index, int) and index != tokenizer.unk_token_id:
                    ids[token] = index
        if ids:
            return LanguageCodes("codes", ids, {code: code for code in ids})
    ids, tokens = {}, {}
    for token in getattr(tokenizer, "supported_language_codes", None) or []:
        match = MARIAN_CODE.match(str(token))
        if match and match.group(1) not in ids:
            ids[match.group(1)] = int(tokenizer.convert_tokens_to_ids(token))
            tokens[match.group(1)] = str(token)
    return LanguageCodes("marian", ids, tokens) if ids else None


@dataclass(frozen=True)
class TokenizerLanguages:
    """The language-code tokens of a tokenizer's vocabulary and the ones it is set to translate
    between: what a reduced vocabulary must keep."""

    codes: dict[str, int]
    """Every language code's vocabulary token (`deu_Latn`, `__de__`, `>>fra<<`) -> its id (empty
    for a tokenizer without any)."""
    fixed: frozenset[str]
    """Tokens the tokenizer's class adds whenever it loads (mBART-50's, M2M100's): a reduced
    tokenizer without them would grow them back as new ids, so they are always kept."""
    source: str | None
    """The source language's token when the tokenizer puts it into the encoder input (NLLB,
    mBART-50, M2M100: its `src_lang`); None otherwise."""
    target: str | None
    """The target language's token the tokenizer is set to (`tgt_lang`); None when unset."""


def tokenizer_languages(tokenizer) -> TokenizerLanguages:
    """The language-code tokens of `tokenizer` (from `language_codes`), and its source and target
    settings.

    The source code counts only when it really is in the encoder input: a short text is encoded
    with the tokenizer's special tokens and the code's id looked for.
    """
    found = language_codes(tokenizer)
    if found is None:
        return TokenizerLanguages(codes={}, fixed=frozenset(), source=None, target=None)
    codes = found.token_ids()

    def token(value) -> str | None:
        # src_lang / tgt_lang hold the code (M2M100's "en"), the vocabulary the token ("__en__")
        if value is None:
            return None
        value = str(value)
        return found.tokens.get(value, value if value in codes else None)

    source = token(getattr(tokenizer, "src_lang", None))
    if source is not None:
        try:
            encoded = tokenizer("a")["input_ids"]
        except Exception:  # noqa: BLE001 - a tokenizer that cannot encode carries no code either
            encoded = []
        if codes[source] not in encoded:
            source = None
    return TokenizerLanguages(codes=codes, fixed=frozenset(found.tokens[code] for code in found.fixed),
                              source=source, target=token(getattr(tokenizer, "tgt_lang", None)))


def translates(config, languages: TokenizerLanguages) -> bool:
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
