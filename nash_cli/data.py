"""Data for every command that reads examples: loading, tokenisation and batching.

`load_examples` turns a local JSON / JSON Lines / CSV / TSV / Parquet file, a directory written
by `datasets.Dataset.save_to_disk`, or a dataset name on the Hugging Face Hub into a list of
`Example` (a source text and its reference texts). `distill`, `prune-encoder`, `eval` and `bench`
all read data through it, so they accept the same files and the same column options.

The training side (`tokenize_examples`, `Seq2SeqCollator`) turns examples into token ids and
pads batches dynamically, with label padding set to -100 so that padding never enters a loss.

Local files are parsed here directly (the standard library for JSON and CSV, `pyarrow` for
Parquet) rather than through `datasets.load_dataset`: that gives exact line numbers in errors
and leaves no Arrow cache behind. Hub names go through `datasets.load_dataset`.
"""

from __future__ import annotations

import csv
import json
import string
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nash_cli.errors import NashError

if TYPE_CHECKING:
    import torch

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
#: File extensions read as local data, and the reader each one uses.
EXTENSIONS = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}

#: How data and recipe text is decoded: UTF-8, skipping a leading byte-order mark (Excel writes
#: one in "CSV UTF-8"; read as plain UTF-8 it would rename the first column to "\ufeffsource").
TEXT_ENCODING = "utf-8-sig"

#: Label id that every loss ignores (PyTorch's cross-entropy default).
IGNORE_INDEX = -100


@dataclass(kw_only=True)
class DataOptions:
    """Where a training stage's examples come from and how to read them (the data flags).

    `eval` and `bench` take the source-side subset of these fields, with these defaults.
    """

    data: str
    """Training data: a local file or directory, or a hub dataset name."""
    split: str | None = None
    """Split of the training data (hub / saved DatasetDict / JSON keyed by split)."""
    eval_data: str | None = None
    """Held-out data, read with the same column options."""
    eval_split: str | None = None
    """Split of the eval data (default: "validation" where splits exist)."""
    source_column: str | None = None
    """Input column (default: a common name such as source / document / dialogue)."""
    target_column: str | None = None
    """Reference column (default: a common name such as target / summary / answer)."""
    source_template: str | None = None
    """Builds the input from several columns, e.g. "question: {Question} context: {Tweet}"."""
    source_prefix: str = ""
    """Text put before every input."""
    max_source_length: int = 512
    """Longest input in tokens (the paper: 512)."""
    max_target_length: int = 128
    """Longest target in tokens (the paper: 128)."""
    limit: int | None = None
    """Use only the first N training (and eval) examples."""

    def check(self) -> None:
        """NashError for an impossible length or limit."""
        for flag, value in (
            ("--max-source-length", self.max_source_length),
            ("--max-target-length", self.max_target_length),
            ("--limit", self.limit),
        ):
            if value is not None and value < 1:
                raise NashError(f"{flag} must be at least 1, got {value}")


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
    if limit is not None and limit < 1:
        raise NashError(f"--limit must be at least 1, got {limit}")
    if source_template is not None and source_column is not None:
        raise NashError("--source-template and --source-column both given; pass only one of them")
    records, where = _read_records(data, split=split, limit=limit)
    if not records:
        raise NashError(f"{where} holds no examples; point --data at a file with at least one record")
    columns = _columns(records)

    template_fields: list[str] = []
    if source_template is not None:
        template_fields = _template_fields(source_template)
        missing = [name for name in template_fields if name not in columns]
        if missing:
            raise NashError(
                f"--source-template uses {_names(missing)}, which {where} lacks; "
                f"its columns are {_names(columns)}"
            )
    else:
        source_column = _pick_column(columns, source_column, SOURCE_COLUMNS, "source", where)
    target = _pick_column(columns, target_column, TARGET_COLUMNS, "target", where, required=require_references)

    examples: list[Example] = []
    for row, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            kinds = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
            kind = kinds.get(type(record), "null" if record is None else f"a {type(record).__name__}")
            raise NashError(f"{where}: record {row} is {kind}, not an object with named fields")
        if source_template is not None:
            try:
                source = source_template.format_map({k: _text(v) for k, v in record.items()})
            except KeyError as missing:
                raise NashError(
                    f"{where}: record {row} has no field {missing}; its fields are {_names(record)}"
                ) from None
        else:
            value = record.get(source_column)
            if value is None:
                raise NashError(
                    f"{where}: record {row} has no {source_column!r} value; fill it in or drop the record"
                )
            source = _text(value)
        references = _references(record.get(target)) if target is not None else []
        if require_references and not references:
            raise NashError(
                f"{where}: record {row} has no {target!r} value; training and scoring need a "
                "target for every example"
            )
        examples.append(Example(source=source_prefix + source, references=references))
    return examples


def local_data_path(data: str) -> Path | None:
    """The local file or directory `data` names, or None when it names a hub dataset.

    A name that exists locally, has a data file's extension, or is written like a path
    (`./x`, `/x`, `~/x`, `a/b/c`) is local, whether or not it exists; `name`, `org/name` and
    `org/name:config` are hub datasets.
    """
    path = Path(data).expanduser()
    if path.exists() or path.suffix.lower() in EXTENSIONS:
        return path
    if data.startswith((".", "/", "~")) or "\\" in data or data.count("/") > 1:
        return path
    return None


def check_data_source(data: str, flag: str = "--data") -> None:
    """Checks, without parsing it, that local data exists and can be read as the reader would.

    Hub names are not checked (that needs the network). `nash run` calls this for every data
    file a recipe names before its first stage, so a missing or unreadable file fails at once.

    Raises:
        NashError: a missing file, a file with an unknown extension, an unreadable or non-UTF-8
            text file, or a directory that is not a saved dataset.
    """
    path = local_data_path(data)
    if path is None:
        return
    if not path.exists():
        raise NashError(f"{flag} {data} does not exist; check the path")
    if path.is_dir():
        if not any((path / name).is_file() for name in ("dataset_dict.json", "dataset_info.json", "state.json")):
            raise NashError(
                f"{flag} {path} is a directory but not a saved dataset; pass a data file "
                f"({', '.join(sorted(EXTENSIONS))}) or a directory written by save_to_disk"
            )
        return
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise NashError(f"{flag} {path} has an unknown extension {path.suffix or '(none)'!r}; use one of {', '.join(sorted(EXTENSIONS))}")
    import codecs

    decoder = codecs.getincrementaldecoder(TEXT_ENCODING)() if kind != "parquet" else None
    offset = 0
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                if decoder is not None:
                    decoder.decode(block)
                offset += len(block)
            if decoder is not None:
                decoder.decode(b"", final=True)
    except (UnicodeDecodeError, OSError) as error:
        raise _unreadable(path, error, prefix=f"{flag} ", offset=offset) from None


def _unreadable(path: Path, error: UnicodeDecodeError | OSError, *, prefix: str = "", offset: int = 0) -> NashError:
    """The one line for a data file that is not UTF-8 (the first bad byte and where) or cannot be read."""
    if isinstance(error, UnicodeDecodeError):
        return NashError(
            f"{prefix}{path} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
            f"{offset + error.start}); save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        )
    return NashError(f"cannot read data file {path} ({error.strerror or error}); check its permissions")


def _read_records(data: str, *, split: str | None, limit: int | None) -> tuple[list[Any], str]:
    path = Path(data).expanduser()
    if path.is_dir():
        return _read_saved_dataset(path, split=split, limit=limit), str(path)
    suffix = path.suffix.lower()
    if path.is_file():
        kind = EXTENSIONS.get(suffix)
        if kind is None:
            raise NashError(
                f"{path} has an unknown extension {suffix or '(none)'!r}; use one of "
                f"{', '.join(sorted(EXTENSIONS))} or a dataset name from the hub"
            )
        if path.stat().st_size == 0:
            raise NashError(f"{path} is empty; point --data at a file with at least one record")
        reader = {"json": _read_json, "jsonl": _read_jsonl, "csv": _read_csv, "tsv": _read_tsv}.get(kind)
        if reader is None:
            return _read_parquet(path, limit=limit), str(path)
        try:
            return reader(path, split=split, limit=limit), str(path)
        except (UnicodeDecodeError, OSError) as error:
            raise _unreadable(path, error) from None
    if local_data_path(data) is not None:
        raise NashError(f"data file {data} does not exist; check the path")
    return _read_hub(data, split=split, limit=limit), f"hub dataset {data!r}"


def _read_json(path: Path, *, split: str | None, limit: int | None) -> list[Any]:
    text = path.read_text(encoding=TEXT_ENCODING)
    if not text.strip():
        raise NashError(f"{path} is empty; point --data at a file with at least one record")
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":  # one object per line: JSON Lines under a .json name
            return _read_jsonl(path, split=split, limit=limit)
        raise NashError(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); fix the file"
        ) from None
    if isinstance(content, dict):
        if isinstance(content.get("data"), list):
            content = content["data"]
        elif split is not None and isinstance(content.get(split), list):
            content = content[split]
        elif split is None and isinstance(content.get("train"), list):
            content = content["train"]
        else:
            raise NashError(
                f"{path} holds an object with keys {_names(content)}; expected an array of records, "
                '{"data": [...]}, or records under the --split key'
            )
    if not isinstance(content, list):
        raise NashError(f"{path} holds a JSON {type(content).__name__}; expected an array of records")
    return content[:limit] if limit is not None else content


def _read_jsonl(path: Path, *, split: str | None = None, limit: int | None) -> list[Any]:
    records = []
    with path.open(encoding=TEXT_ENCODING) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise NashError(
                    f"{path} line {number} is not valid JSON ({error.msg}, column {error.colno}); "
                    "fix or remove that line"
                ) from None
            if not isinstance(record, dict):
                raise NashError(
                    f"{path} line {number} is a JSON {type(record).__name__}, not an object; "
                    "each line must be one record"
                )
            records.append(record)
            if limit is not None and len(records) >= limit:
                break
    if not records:
        raise NashError(f"{path} is empty; point --data at a file with at least one record")
    return records


def _read_csv(path: Path, *, split: str | None = None, limit: int | None, delimiter: str = ",") -> list[Any]:
    records = []
    with path.open(encoding=TEXT_ENCODING, newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if not reader.fieldnames:
            raise NashError(f"{path} is empty; point --data at a file with a header row and records")
        for row in reader:
            records.append(row)
            if limit is not None and len(records) >= limit:
                break
    return records


def _read_tsv(path: Path, *, split: str | None = None, limit: int | None) -> list[Any]:
    return _read_csv(path, limit=limit, delimiter="\t")


def _read_parquet(path: Path, *, limit: int | None) -> list[Any]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise NashError(f"{path} is not a readable Parquet file ({_first_line(error)}); fix or re-export it") from None
    if limit is not None:
        table = table.slice(0, limit)
    return table.to_pylist()


def _read_saved_dataset(path: Path, *, split: str | None, limit: int | None) -> list[Any]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception:
        raise NashError(
            f"{path} is a directory but not a saved dataset; pass a data file "
            f"({', '.join(sorted(EXTENSIONS))}) or a directory written by save_to_disk"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        wanted = split or "train"
        if wanted not in loaded:
            raise NashError(f"{path} has no split {wanted!r}; its splits are {_names(loaded)}; pass --split")
        loaded = loaded[wanted]
    return _dataset_records(loaded, limit)


def _read_hub(name: str, *, split: str | None, limit: int | None) -> list[Any]:
    import datasets

    dataset_name, _, config = name.partition(":")
    try:
        loaded = datasets.load_dataset(dataset_name, config or None, split=split or "train")
    except Exception as error:
        raise NashError(
            f"could not load dataset {name!r} from the Hugging Face Hub ({_first_line(error)}); "
            "check the name, --split and the network, or pass a local .json/.jsonl/.csv/.parquet file"
        ) from None
    return _dataset_records(loaded, limit)


def _dataset_records(dataset, limit: int | None) -> list[Any]:
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset.to_list()


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
) -> str | None:
    if given is not None:
        if given not in columns:
            raise NashError(f"{where} has no column {given!r}; its columns are {_names(columns)}")
        return given
    by_lower = {column.lower(): column for column in columns}
    for candidate in candidates:
        if candidate in by_lower:
            return by_lower[candidate]
    if not required:
        return None
    option = "--source-column or --source-template" if role == "source" else "--target-column"
    raise NashError(f"{where} has no obvious {role} column; its columns are {_names(columns)}; pass {option}")


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


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text(item) for item in value)
    return "" if value is None else str(value)


def _references(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict) and "text" in value:  # SQuAD-style {"text": [...], "answer_start": [...]}
        value = value["text"]
    if isinstance(value, (list, tuple)):
        return [_text(item) for item in value if item is not None and _text(item) != ""]
    text = _text(value)
    return [text] if text != "" else []


def _names(names: Iterable[Any]) -> str:
    return ", ".join(repr(str(name)) for name in names) or "(none)"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# --- training side ---------------------------------------------------------------------------


@dataclass
class Features:
    """One tokenised training example.

    `tokenize_examples` stores the ids as `array("i")` (4 bytes a token, where a list of Python
    ints takes about 36): a 300k-example summarisation set then fits comfortably in every process.
    Any sequence of ints works.
    """

    input_ids: Sequence[int]
    """Source token ids, truncated to `max_source_length` (the tokenizer's end token included)."""
    labels: Sequence[int]
    """Target token ids of the first reference, truncated to `max_target_length`."""


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer,
    *,
    max_source_length: int = 512,
    max_target_length: int = 128,
    chunk_size: int = 1000,
) -> list[Features]:
    """Tokenises sources and first references for training; the paper's lengths are the defaults.

    Args:
        examples: Examples with at least one reference each.
        tokenizer: The student's tokenizer.
        max_source_length: Longest source kept, in tokens; longer sources are truncated.
        max_target_length: Longest target kept, in tokens.
        chunk_size: Examples per tokenizer call (fast tokenizers batch internally).

    Raises:
        NashError: an example without references, or a length below 1.
    """
    if max_source_length < 1 or max_target_length < 1:
        raise NashError("--max-source-length and --max-target-length must be at least 1")
    for row, example in enumerate(examples, start=1):
        if not example.references:
            raise NashError(f"example {row} has no target text; training needs a target for every example")
    features: list[Features] = []
    for start in range(0, len(examples), chunk_size):
        chunk = examples[start : start + chunk_size]
        sources = tokenizer(
            [example.source for example in chunk], max_length=max_source_length, truncation=True
        )["input_ids"]
        targets = tokenizer(
            text_target=[example.references[0] for example in chunk], max_length=max_target_length, truncation=True
        )["input_ids"]
        features.extend(Features(input_ids=array("i", s), labels=array("i", t)) for s, t in zip(sources, targets))
    return features


@dataclass
class Seq2SeqCollator:
    """Pads a list of `Features` to the longest in the batch (dynamic padding), on the right."""

    pad_token_id: int
    """Id used to pad `input_ids` (the tokenizer's pad token)."""
    label_pad_id: int = IGNORE_INDEX
    """Id used to pad `labels`: -100, which every loss ignores."""

    def __call__(self, batch: Sequence[Features]) -> dict[str, torch.Tensor]:
        """Returns `input_ids`, `attention_mask` and `labels` as int64 tensors [batch, length]."""
        import torch

        if not batch:
            raise ValueError("cannot collate an empty batch")
        source_length = max(len(item.input_ids) for item in batch)
        target_length = max(len(item.labels) for item in batch)
        input_ids = torch.full((len(batch), source_length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), source_length), dtype=torch.long)
        labels = torch.full((len(batch), target_length), self.label_pad_id, dtype=torch.long)
        for row, item in enumerate(batch):
            input_ids[row, : len(item.input_ids)] = _ids(item.input_ids)
            attention_mask[row, : len(item.input_ids)] = 1
            labels[row, : len(item.labels)] = _ids(item.labels)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _ids(values: Sequence[int]) -> torch.Tensor:
    import torch

    if isinstance(values, array) and values.typecode == "i" and len(values):
        return torch.frombuffer(values, dtype=torch.int32)  # a view, no copy; assignment widens it
    return torch.tensor(list(values), dtype=torch.long)
