"""Examples: records turned into an input text and its references, by the column options.

`load_examples` picks the input (`--source-column`, or `--source-template` over several columns,
after `--source-prefix`) and the references (`--target-column`, one or a list) of every record
that `nash_cli.data.sources` reads. Records in the Hugging Face translation format
(`{"translation": {"de": ..., "en": ...}}`) are read as if their languages were columns, and
`--source-lang` / `--target-lang` pick the column of that language where no column is named. `read_examples` calls it with a stage's options
(`nash_cli.data.options`), so every stage reads the same split of the same data.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

from nash_cli.data.options import ExampleReading, HeldOutReading, InputReading
from nash_cli.data.sources import quoted_names, read_records
from nash_cli.errors import NashError, require_at_least

#: Column names tried, in order and ignoring case, when `--source-column` is not given.
SOURCE_COLUMNS = ("source", "input", "inputs", "text", "document", "dialogue", "article", "src", "prompt")
#: Column names tried, in order and ignoring case, when `--target-column` is not given.
TARGET_COLUMNS = (
    "target",
    "targets",
    "summary",
    "output",
    "highlights",
    "answer",
    "answers",
    "tgt",
    "label",
    "response",
)
#: Half of a UTF-16 surrogate pair: JSON's "\ud800" escape parses to it, and it is not text.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: The field of the Hugging Face translation format: an object of texts keyed by language.
TRANSLATION_FIELD = "translation"
#: The split read where the options name none: the stage's data at its train split, held-out
#: data at its validation split (hub datasets, saved DatasetDicts, JSON keyed by split).
DEFAULT_SPLITS = {"train": "train", "eval": "validation"}


@dataclass
class Example:
    """One input text and the texts it should produce."""

    source: str
    """The model input, with any `--source-template` applied and `--source-prefix` prepended."""
    references: list[str]
    """Reference outputs: one per target for most data, several when the target column holds a
    list (abstractive QA), none for unlabeled data. Training uses the first."""


def load_examples(
    data: str,
    *,
    split: str | None = None,
    source_column: str | None = None,
    target_column: str | None = None,
    source_template: str | None = None,
    source_prefix: str = "",
    source_lang: str | None = None,
    target_lang: str | None = None,
    limit: int | None = None,
    require_references: bool = False,
) -> list[Example]:
    """Reads examples from a local file or directory, or a dataset on the Hugging Face Hub.

    Args:
        data: A `.json` (an array of records, `{"data": [...]}`, `{"<split>": [...]}`, or JSON
            Lines), `.jsonl`, `.csv`, `.tsv` or `.parquet` file; a directory saved with
            `datasets.save_to_disk`; or a hub dataset name, optionally `name:config`.
        split: Which split of a hub dataset, a saved `DatasetDict`, or a JSON file keyed by split
            (default: "train").
        source_column: Column holding the input text; by default the first of `SOURCE_COLUMNS`
            that exists (ignoring case).
        target_column: Column holding the reference text, or a list of references; by default
            the first of `TARGET_COLUMNS` that exists.
        source_template: Builds the input from several columns instead, e.g.
            `"question: {Question} context: {Tweet}"`; excludes `source_column`.
        source_prefix: Text put before every input, e.g. `"summarize: "`.
        source_lang: Without `source_column` or `source_template`, the input is the column of
            this language (see `language_column`), where the data has one.
        target_lang: Without `target_column`, the references are the column of this language.
        limit: Keep only the first `limit` examples.
        require_references: Raise NashError unless every example has at least one reference
            (training and scoring need them; benchmarking does not). When False and no target
            column is found, every example gets an empty reference list.

    Returns:
        The examples, in file order.

    Raises:
        NashError: missing or empty file, malformed JSON / JSON Lines (with the line number),
            unknown extension, missing column (listing the columns that exist), or a hub
            dataset that cannot be loaded.
    """
    require_at_least("--limit", limit)  # public: callers may pass a raw value
    if source_template is not None and source_column is not None:
        raise NashError("--source-template and --source-column both given; pass only one of them")
    records, where = read_records(data, split=split, limit=limit)
    if not records:
        raise NashError(f"{where} holds no examples; point --data at a file with at least one record")
    records, languages = _translation_columns(records)
    columns = _columns(records)

    template_fields: list[str] = []
    if source_template is not None:
        template_fields = _template_fields(source_template)
        missing = [name for name in template_fields if name not in columns]
        if missing:
            raise NashError(
                f"--source-template uses {quoted_names(missing)}, which {where} lacks; "
                f"its columns are {quoted_names(columns)}"
            )
    else:
        source_column = _pick_column(columns, source_column, SOURCE_COLUMNS, "source", where,
                                     language=source_lang, languages=languages)
    target = _pick_column(columns, target_column, TARGET_COLUMNS, "target", where, required=require_references,
                          language=target_lang, languages=languages)

    examples: list[Example] = []
    for row, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            kinds = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
            kind = kinds.get(type(record), "null" if record is None else f"a {type(record).__name__}")
            raise NashError(f"{where}: record {row} is {kind}, not an object with named fields")
        try:
            examples.append(
                _example(record, source_column, source_template, target, source_prefix, require_references)
            )
        except _NotText as problem:
            raise NashError(f"{where}: record {row}{problem}") from None
        except RecursionError:
            raise NashError(f"{where}: record {row} nests lists too deeply to read as text; flatten it") from None
    return examples


@overload
def read_examples(
    options: InputReading,
    which: Literal["train"] = "train",
    *,
    data: str | None = None,
    limit: int | None = None,
    require_references: bool = False,
) -> list[Example]: ...


@overload
def read_examples(
    options: HeldOutReading,
    which: Literal["eval"],
    *,
    limit: int | None = None,
    require_references: bool = False,
) -> list[Example] | None: ...


def read_examples(options, which="train", *, data=None, limit=None, require_references=False):
    """Reads a stage's examples, or its held-out examples, as its data options say.

    The one place where a stage's options become `load_examples` arguments, and where the
    default splits are chosen (`DEFAULT_SPLITS`): "train" reads the stage's data at `split`
    (default: train), "eval" reads `eval_data` at `eval_split` (default: validation).

    Args:
        options: The stage's options: an `InputReading` group (an `ExampleReading` one gives
            the target column too) whose stage names its data `data`, unless `data` is given.
        which: "train" for the stage's data, "eval" for its held-out data (`HeldOutReading`).
        data: The stage's data where its options call it otherwise (export's `vocab_map`);
            "train" only.
        limit: Keep only the first `limit` examples.
        require_references: Every example must have a reference (see `load_examples`).

    Returns:
        The examples; None for "eval" when the options name no held-out data.

    Raises:
        NashError: as `load_examples`.
    """
    if which == "eval":
        path, split = options.eval_data, options.eval_split or DEFAULT_SPLITS["eval"]
        if path is None:
            return None
    else:
        path = data if data is not None else options.data  # the groups leave `data` to each stage
        split = options.split or DEFAULT_SPLITS["train"]
    return load_examples(
        path,
        split=split,
        source_column=options.source_column,
        target_column=options.target_column if isinstance(options, ExampleReading) else None,
        source_template=options.source_template,
        source_prefix=options.source_prefix,
        source_lang=options.source_lang,
        target_lang=options.target_lang,
        limit=limit,
        require_references=require_references,
    )


def _translation_columns(records: list[Any]) -> tuple[list[Any], list[str]]:
    """Records of the Hugging Face translation format with their languages as columns, and the
    languages (none: the data is not in that format, and its records are returned as they are).

    `{"translation": {"de": "Hallo", "en": "Hello"}, "id": 1}` reads as `{"id": 1, "de": "Hallo",
    "en": "Hello"}`, so `--source-lang de` (or `--source-column de`) names the German text.
    """
    head = [record for record in records[:100] if isinstance(record, dict)]
    if not head or not all(isinstance(record.get(TRANSLATION_FIELD), dict) for record in head):
        return records, []
    languages = list(dict.fromkeys(language for record in head for language in record[TRANSLATION_FIELD]))
    flat = []
    for record in records:
        if isinstance(record, dict) and isinstance(record.get(TRANSLATION_FIELD), dict):
            record = {**{k: v for k, v in record.items() if k != TRANSLATION_FIELD}, **record[TRANSLATION_FIELD]}
        flat.append(record)
    return flat, languages


def language_column(columns: Sequence[str], language: str) -> str | None:
    """The column of `language`: the one named so (ignoring case), else the only one whose name and
    the language agree on the language part before an `_` or `-` (`de_DE` finds `de`, `de` finds
    `de_DE`); None when there is none (or several)."""
    by_lower = {column.lower(): column for column in columns}
    if language.lower() in by_lower:
        return by_lower[language.lower()]

    def part(name: str) -> str:
        return re.split(r"[_-]", name.lower(), maxsplit=1)[0]

    matches = [column for column in columns if part(column) == language.lower() or column.lower() == part(language)]
    return matches[0] if len(matches) == 1 else None


def _columns(records: Sequence[Any]) -> list[str]:
    # Columns are those of the first record, plus any others the first few add (ragged JSON).
    columns: dict[str, None] = {}
    for record in records[:100]:
        if isinstance(record, dict):
            columns.update(dict.fromkeys(record))
    return list(columns)


def _pick_column(
    columns: list[str],
    given: str | None,
    candidates: Iterable[str],
    role: str,
    where: str,
    *,
    required: bool = True,
    language: str | None = None,
    languages: Sequence[str] = (),
) -> str | None:
    if given is not None:
        if given not in columns:
            raise NashError(f"{where} has no column {given!r}; its columns are {quoted_names(columns)}")
        return given
    flag = "--source-lang" if role == "source" else "--target-lang"
    if language is not None:
        column = language_column(languages or columns, language)
        if column is not None:
            return column
        if languages and required:
            # The translation format holds nothing but its languages: no column to fall back to.
            raise NashError(
                f"{where} holds translations in {quoted_names(languages)}, not {language!r} ({flag}); give {flag} "
                f"one of them, or name the data's language with --{role}-column beside it "
                f"(e.g. --{role}-column {languages[0]} {flag} {language})"
            )
    by_lower = {column.lower(): column for column in columns}
    for candidate in candidates:
        if candidate in by_lower:
            return by_lower[candidate]
    if not required:
        return None
    option = "--source-column or --source-template" if role == "source" else "--target-column"
    if languages:
        raise NashError(
            f"{where} holds translations in {quoted_names(languages)}; pass --source-lang and --target-lang "
            "(or --source-column and --target-column) to choose the direction"
        )
    if language is not None:
        raise NashError(
            f"{where} has no column {language!r} ({flag}) and no obvious {role} column; its columns are "
            f"{quoted_names(columns)}; pass {option}"
        )
    raise NashError(f"{where} has no obvious {role} column; its columns are {quoted_names(columns)}; pass {option}")


def _template_fields(template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise NashError(f"--source-template {template!r} is malformed ({error}); use {{Column}} fields") from None
    fields = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        if not field or field.isdigit():
            raise NashError(f"--source-template {template!r} has an unnamed field; name a column, e.g. {{text}}")
        # "{a.b}" / "{a[0]}" look up inside column a
        fields.append(field.split(".", 1)[0].split("[", 1)[0])
    if not fields:
        raise NashError(f"--source-template {template!r} uses no column; add fields like {{Question}}")
    return fields


class _NotText(Exception):
    """A record's value that cannot become an example's text; the message continues "record N"."""


def _example(
    record: dict[str, Any],
    source_column: str | None,
    source_template: str | None,
    target: str | None,
    source_prefix: str,
    require_references: bool,
) -> Example:
    if source_template is not None:
        try:
            source = source_template.format_map(_FieldTexts(record))
        except KeyError as missing:
            raise _NotText(f" has no field {missing}; its fields are {quoted_names(record)}") from None
        except ValueError as error:  # a format spec the value does not take, e.g. {text:d}
            raise _NotText(f": --source-template cannot format it ({error})") from None
    else:
        value = record.get(source_column)
        if value is None:
            raise _NotText(f" has no {source_column!r} value; fill it in or drop the record")
        source = _column_text(value, source_column)
    references = _references(record.get(target), target) if target is not None else []
    if require_references and not references:
        raise _NotText(f" has no {target!r} value; training and scoring need a target for every example")
    return Example(source=source_prefix + source, references=references)


class _FieldTexts(dict):
    """A record's fields as `--source-template` reads them: each one a `_Field`, whose text is made
    only when the template uses it (a column the template ignores may hold anything)."""

    def __getitem__(self, column: str) -> _Field:
        return _Field(super().__getitem__(column), column)


class _Field:
    """One value a `--source-template` field names: formatted as its text (a list joined with
    spaces, as a column is); `{a[0]}` and `{a.b}` / `{a[b]}` look inside a list or an object.

    Formatting the text itself would index its characters: `{answers[0]}` gave the first letter
    of the joined answers, and `{meta.title}` was a traceback.
    """

    def __init__(self, value: Any, name: str):
        self.value = value
        self.name = name

    def __format__(self, spec: str) -> str:
        value = self.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return format(value, spec)  # "{score:.2f}" formats the number
        return format(_column_text(value, self.name), spec)

    def __str__(self) -> str:
        return _column_text(self.value, self.name)

    def __repr__(self) -> str:
        return repr(str(self))

    def __getitem__(self, key: int | str) -> _Field:
        value = self.value
        if isinstance(value, dict):
            if key not in value:
                raise _NotText(f": {self.name!r} has no key {key!r} (--source-template); its keys are {quoted_names(value)}")
            return _Field(value[key], f"{self.name}[{key}]")
        if isinstance(value, (list, tuple)) and isinstance(key, int):
            if not -len(value) <= key < len(value):
                raise _NotText(f": {self.name!r} has {len(value)} items, no [{key}] (--source-template)")
            return _Field(value[key], f"{self.name}[{key}]")
        kind = "a list" if isinstance(value, (list, tuple)) else "null" if value is None else f"a {type(value).__name__}"
        raise _NotText(f": {self.name!r} is {kind}, which has no [{key!r}] (--source-template)")

    def __getattr__(self, name: str) -> _Field:
        if name.startswith("__"):  # copy / pickle probes, not template lookups
            raise AttributeError(name)
        return self[name]


def _column_text(value: Any, column: str | None) -> str:
    """`_text`, with values that are not Unicode text named by their column."""
    try:
        text = _text(value)
    except UnicodeDecodeError:
        raise _NotText(
            f": column {column!r} holds bytes that are not UTF-8 text; store text in it, or pick another column"
        ) from None
    if _SURROGATE.search(text):
        # JSON can escape half of a UTF-16 pair ("\ud800"); no tokenizer or UTF-8 file takes it.
        raise _NotText(
            f": column {column!r} holds a lone surrogate (a \\ud800-\\udfff escape without its pair), "
            "which is not text; fix or remove that escape"
        )
    return text


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):  # Parquet / Arrow binary columns: text stored as bytes
        return bytes(value).decode("utf-8")
    if isinstance(value, list):
        return " ".join(_text(item) for item in value)
    return "" if value is None else str(value)


def _references(value: Any, column: str | None = None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict) and "text" in value:  # SQuAD-style {"text": [...], "answer_start": [...]}
        value = value["text"]
    if isinstance(value, (list, tuple)):
        texts = [_column_text(item, column) for item in value if item is not None]
        return [text for text in texts if text != ""]
    text = _column_text(value, column)
    return [text] if text != "" else []
