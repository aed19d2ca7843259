"""The data options of the stages, declared once as groups that the stages' `Options` inherit.

Each group is a kw_only dataclass of flat fields (the flags' names, types and defaults), so a
stage that inherits one takes the same flags, recipe keys and manifest arguments as if it had
declared them itself. The groups nest by what the stages share:

| group            | fields                                                   | taken by                          |
|------------------|----------------------------------------------------------|-----------------------------------|
| `InputReading`   | split, source_column, source_template, source_prefix,    | bench                             |
|                  | source_lang, target_lang                                 |                                   |
| `ExampleReading` | `InputReading`'s and target_column                       | eval, plan                        |
| `HeldOutReading` | `ExampleReading`'s and eval_data, eval_split             | export, prune-vocab               |
| `SourceLength`   | max_source_length                                        | bench, eval, export, plan         |
| `DataOptions`    | all of the above and data, max_target_length, limit      | training (distill, prune-encoder) |

Where the data lives (`data`, or export's `vocab_map`) stays on each stage: whether it is required, and what
it means, differ. `nash_cli.data.examples.read_examples` reads a stage's examples through these
groups, with the default splits in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from nash_cli.errors import NashError, require_at_least


@dataclass(kw_only=True)
class InputReading:
    """Which split of the data to read and how each record becomes a model input."""

    split: str | None = None
    """Split of the data (hub / saved DatasetDict / JSON keyed by split; default: train)."""
    source_column: str | None = None
    """Input column (default: a common name such as source / document / dialogue)."""
    source_template: str | None = None
    """Builds the input from several columns, e.g. "question: {Question} context: {Tweet}"."""
    source_prefix: str = ""
    """Text put before every input."""
    source_lang: str | None = None
    """Language of the inputs: picks the data's column (or the `translation` field's entry) of that
    name, and sets the tokenizer's source language (NLLB, M2M100, mBART)."""
    target_lang: str | None = None
    """Language of the outputs: picks the references' column or entry, sets the tokenizer's target
    language and forces its code as the first generated token (NLLB, M2M100, mBART; Marian
    multilingual models: `>>lang<<` before every input)."""

    def check(self) -> None:
        """NashError for both an input column and a template (each one is the whole input), or a
        language that is empty or holds spaces."""
        if self.source_template is not None and self.source_column is not None:
            raise NashError("--source-template and --source-column both given; pass only one of them")
        for flag, language in (("--source-lang", self.source_lang), ("--target-lang", self.target_lang)):
            if language is not None and (not language.strip() or language != language.strip() or " " in language):
                raise NashError(f"{flag} {language!r} is not a language code; give one such as de, en_XX or deu_Latn")


@dataclass(kw_only=True)
class ExampleReading(InputReading):
    """`InputReading`, and the column of the references."""

    target_column: str | None = None
    """Reference column, one text or a list of them (default: a common name such as target /
    summary / answer)."""


@dataclass(kw_only=True)
class HeldOutReading(ExampleReading):
    """`ExampleReading`, and held-out data read with the same columns."""

    eval_data: str | None = None
    """Held-out data: a local file or directory, or a hub dataset name."""
    eval_split: str | None = None
    """Split of the held-out data (default: validation, where splits exist)."""


@dataclass(kw_only=True)
class SourceLength:
    """How long an input may be in tokens."""

    max_source_length: int = 512
    """Longest input in tokens; longer inputs are truncated (the paper: 512)."""

    def check(self) -> None:
        """NashError for a length below 1."""
        require_at_least("--max-source-length", self.max_source_length)


@dataclass(kw_only=True)
class DataOptions(SourceLength, HeldOutReading):
    """Where a training stage's examples come from and how to read them (the data flags)."""

    data: str
    """Training data: a local file or directory, or a hub dataset name."""
    max_target_length: int = 128
    """Longest target in tokens (the paper: 128)."""
    limit: int | None = None
    """Use only the first N training (and eval) examples."""

    def check(self) -> None:
        """NashError for an impossible length or limit, or a template beside an input column."""
        SourceLength.check(self)
        require_at_least("--max-target-length", self.max_target_length)
        require_at_least("--limit", self.limit)
        HeldOutReading.check(self)
