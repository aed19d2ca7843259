"""The languages of a translation model's tokenizer: the codes it knows, and setting a pair of them.

Two kinds of multilingual tokenizer exist among the encoder-decoder families:

* **Language-code tokenizers** (NLLB, M2M100, mBART, mBART-50) put a code token around every
  text: `src_lang` for inputs, `tgt_lang` for targets (what `tokenizer(text_target=...)` reads,
  so training labels carry the target code), and generation must force the target's code as the
  first generated token (`forced_bos_token_id`), or the model picks a language by itself. The
  original mBART (cc25, en-ro) puts the code after the text instead and decodes from it (its
  `decoder_start_token_id`): nothing is forced there.
* **Marian multilingual models** (`opus-mt-en-mul`, ...) read the target language as a
  `>>fra<<` token at the start of the input; their source language needs no token.

T5, BART, Pegasus and single-pair Marian models have no language codes: a language given for
them is refused, since it would change nothing the user can see.

`set_languages` is the one place that reads `--source-lang` / `--target-lang` against a
tokenizer. Which codes a tokenizer knows is tokenizer-class knowledge, found by
`nash_cli.arch.tokenizers.language_codes` (re-exported here and from `nash_cli.data`). Neither
imports torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nash_cli.arch.tokenizers import MARIAN_CODE, LanguageCodes, language_codes
from nash_cli.data.examples import Example
from nash_cli.errors import NashError

__all__ = ["LanguageCodes", "LanguagePair", "language_codes", "set_languages"]


@dataclass(frozen=True)
class LanguagePair:
    """A language pair as set on a tokenizer, and what generation and inputs need for it."""

    source: str | None = None
    """The tokenizer's source code (None: not set)."""
    target: str | None = None
    """The tokenizer's target code (None: not set)."""
    forced_bos_token_id: int | None = None
    """The first generated token (the target's code); None: the checkpoint's generation config decides."""
    input_prefix: str = ""
    """Text put before every input (Marian's `>>fra<< `)."""

    def inputs(self, examples: Sequence[Example]) -> list[Example]:
        """`examples` with `input_prefix` before every source."""
        if not self.input_prefix:
            return list(examples)
        return [dataclasses.replace(example, source=self.input_prefix + example.source) for example in examples]

    def generation(self, settings):
        """Generation settings (`nash_cli.generation.GenerationSettings`) with the target's code
        forced as the first token, where there is one."""
        if self.forced_bos_token_id is None:
            return settings
        return dataclasses.replace(settings, forced_bos_token_id=self.forced_bos_token_id)

    def to_dict(self) -> dict[str, Any]:
        """What a result records: the codes set, the forced first token and the input prefix."""
        return dataclasses.asdict(self)

    def record_in(self, model) -> None:
        """Makes `model`'s generation config force the target's code (in place), so that a
        checkpoint trained for this pair decodes into its target without `--target-lang`."""
        if self.forced_bos_token_id is not None and getattr(model, "generation_config", None) is not None:
            model.generation_config.forced_bos_token_id = self.forced_bos_token_id

    def tokenizer_settings(self) -> dict[str, str]:
        """The tokenizer config's `src_lang` / `tgt_lang` for this pair (empty when none is set:
        Marian's `>>lang<<` lives in the input text, not in the tokenizer)."""
        if self.source is None or self.target is None:
            return {}
        return {"src_lang": self.source, "tgt_lang": self.target}


def set_languages(tokenizer, source_lang: str | None, target_lang: str | None, *, where: str) -> LanguagePair:
    """Sets `source_lang` / `target_lang` on `tokenizer` (in place) and returns what generation needs.

    A code is found as given (`deu_Latn`, `de_DE`), else by its language part when that names
    exactly one code (`de` finds mBART-50's `de_DE`, `deu` NLLB's `deu_Latn`).

    Args:
        tokenizer: A loaded transformers tokenizer.
        source_lang: `--source-lang`, or None.
        target_lang: `--target-lang`, or None.
        where: The checkpoint the tokenizer came from, for messages.

    Returns:
        The codes set, the forced first token and the input prefix; all unset when no language is given.

    Raises:
        NashError: a language for a tokenizer without language codes; a code the tokenizer does
            not know; only one language of a pair for a language-code tokenizer.
    """
    if source_lang is None and target_lang is None:
        return LanguagePair()
    codes = language_codes(tokenizer)
    if codes is None:
        given = " / ".join(flag for flag, value in (("--source-lang", source_lang), ("--target-lang", target_lang)) if value)
        raise NashError(
            f"the tokenizer of {where} ({type(tokenizer).__name__}) has no language codes, so {given} would change "
            f"nothing; drop {'them' if source_lang and target_lang else 'it'} and name the data's columns with --source-column / --target-column (e.g. "
            "--source-column de --target-column en; a T5 takes its task as --source-prefix 'translate German to English: ')"
        )
    if codes.kind == "marian":
        # The source language needs no token (the model reads any of its languages); it only picks the data.
        if target_lang is None:
            return LanguagePair()
        target = _resolve(codes, target_lang, "--target-lang", where)
        return LanguagePair(target=target, input_prefix=f">>{target}<< ")
    if source_lang is None or target_lang is None:
        missing = "--target-lang" if target_lang is None else "--source-lang"
        raise NashError(
            f"the tokenizer of {where} ({type(tokenizer).__name__}) codes both languages of a pair; give {missing} too "
            f"(its codes are e.g. {_examples(codes)})"
        )
    source = _resolve(codes, source_lang, "--source-lang", where)
    target = _resolve(codes, target_lang, "--target-lang", where)
    tokenizer.src_lang = source  # the setter rebuilds the input template around the code
    tokenizer.tgt_lang = target  # read by text_target= (training labels)
    # NLLB, M2M100 and mBART-50 start a target with its code, which generation must then force;
    # the original mBART ends it with the code and starts decoding from it (its config's
    # decoder_start_token_id), so forcing the code again would be wrong there.
    leads = tokenizer(text_target="a")["input_ids"][:1] == [codes.ids[target]]
    return LanguagePair(source=source, target=target, forced_bos_token_id=codes.ids[target] if leads else None)


def _resolve(codes: LanguageCodes, language: str, flag: str, where: str) -> str:
    marian = MARIAN_CODE.match(language)
    if marian and codes.kind == "marian":
        language = marian.group(1)  # ">>fra<<" as Marian writes it
    if language in codes.ids:
        return language

    def part(name: str) -> str:
        return re.split(r"[_-]", name.lower(), maxsplit=1)[0]

    matches = [code for code in codes.ids if code.lower() == language.lower() or part(code) == language.lower()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise NashError(f"{flag} {language!r} could be any of {', '.join(map(repr, matches))} for the tokenizer of {where}; give one")
    close = difflib.get_close_matches(language, list(codes.ids), n=5, cutoff=0.5)
    hint = f"closest: {', '.join(map(repr, close))}" if close else f"e.g. {_examples(codes)}"
    raise NashError(
        f"{flag} {language!r} is not a language the tokenizer of {where} knows ({len(codes.ids)} codes, {hint}); "
        f"give one of its codes, and {flag.replace('lang', 'column')} where the data names the language otherwise "
        "(nash_cli.data.languages.language_codes lists the codes)"
    )


def _examples(codes: LanguageCodes, count: int = 6) -> str:
    return ", ".join(repr(code) for code in list(codes.ids)[:count])
