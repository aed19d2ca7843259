"""Reading raw records: local files (JSON, JSON Lines, CSV, TSV, Parquet), directories written by
`datasets.Dataset.save_to_disk`, and datasets on the Hugging Face Hub.

Local files are parsed here directly (the standard library for JSON and CSV, `pyarrow` for
Parquet) rather than through `datasets.load_dataset`: that gives exact line numbers in errors
and leaves no Arrow cache behind. Hub names go through `datasets.load_dataset`.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nash_cli.errors import NashError

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


def _not_a_regular_file(data: str, path: Path) -> NashError | None:
    """A path that exists but is a pipe or a device (`--data <(cat f)` gives /dev/fd/63): nash reads
    its data more than once (a check, then the stage), which a pipe cannot give."""
    if path.exists() and not path.is_file() and not path.is_dir():
        return NashError(
            f"{data} is a pipe or a device, not a regular file (a shell's <(...) gives one); "
            "write the data to a file and pass its path"
        )
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
    problem = _not_a_regular_file(data, path)
    if problem:
        raise problem
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


def read_records(data: str, *, split: str | None, limit: int | None) -> tuple[list[Any], str]:
    """The records of `data` (a local file or directory, else a hub name) and how errors name it."""
    path = Path(data).expanduser()
    if path.is_dir():
        return _read_saved_dataset(path, split=split, limit=limit), str(path)
    problem = _not_a_regular_file(data, path)
    if problem:
        raise problem
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
        content = parse_json(text, where=str(path))
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
                f"{path} holds an object with keys {quoted_names(content)}; expected an array of records, "
                '{"data": [...]}, or records under the --split key'
            )
    if not isinstance(content, list):
        raise NashError(f"{path} holds a JSON {type(content).__name__}; expected an array of records")
    return content[:limit] if limit is not None else content


def parse_json(text: str, *, where: str) -> Any:
    """`json.loads`, with valid JSON that Python cannot hold as one line naming `where`.

    Raises:
        json.JSONDecodeError: the text is not JSON (each reader words that itself).
        NashError: an object naming one key twice (Python would keep the last value silently),
            nesting deeper than Python's recursion limit, or an integer of more digits than
            Python converts (`sys.get_int_max_str_digits`, 4,300 by default).
    """
    try:
        return json.loads(text, object_pairs_hook=_object_without_duplicates)
    except _DuplicateKey as duplicate:
        raise NashError(f"{where} has an object naming the key {duplicate.key!r} twice; keep one of them") from None
    except RecursionError:
        raise NashError(
            f"{where} nests arrays or objects too deeply for Python to read; flatten the records"
        ) from None
    except json.JSONDecodeError:
        raise
    except ValueError as error:
        if "integer string conversion" not in str(error):
            raise
        raise NashError(
            f"{where} holds an integer longer than Python reads ({sys.get_int_max_str_digits()} digits); "
            "quote it as a string"
        ) from None


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return record


def _read_jsonl(path: Path, *, split: str | None = None, limit: int | None) -> list[Any]:
    records = []
    with path.open(encoding=TEXT_ENCODING) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = parse_json(line, where=f"{path} line {number}")
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
    with path.open(encoding=TEXT_ENCODING, newline="") as handle, _long_csv_fields():
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader, None)
            if not header:
                raise NashError(f"{path} is empty; point --data at a file with a header row and records")
            _check_header(path, header)
            for row in reader:
                if not row:  # a blank line, as csv.DictReader skips it
                    continue
                if len(row) > len(header) and any(value.strip() for value in row[len(header) :]):
                    # csv.DictReader would file the extra values under the key None: a row
                    # with an unquoted delimiter in a field, whose values are now shifted.
                    # Empty extra fields (a spreadsheet's trailing delimiters) hold nothing to lose.
                    raise NashError(
                        f"{path} line {reader.line_num} has {len(row)} fields but the header has "
                        f"{len(header)}; quote fields that hold {_delimiter_name(delimiter)}, or fix that row"
                    )
                # A short row leaves its last columns None, as csv.DictReader does: a record
                # without an input or target value is then refused with its number.
                records.append(dict(zip(header, row[: len(header)] + [None] * (len(header) - len(row)))))
                if limit is not None and len(records) >= limit:
                    break
        except csv.Error as error:
            raise NashError(f"{path} line {reader.line_num} is not valid CSV ({error}); fix that row") from None
    return records


def _check_header(path: Path, header: list[str]) -> None:
    """Refuses a header naming one column twice: a record would keep only the last such value.

    Unnamed columns (a spreadsheet's trailing empty columns) may repeat: no option can name them.
    """
    seen: set[str] = set()
    for name in header:
        if name in seen and name.strip():
            raise NashError(f"{path} has two columns named {name!r} in its header; rename one of them")
        seen.add(name)


def _delimiter_name(delimiter: str) -> str:
    return "a tab" if delimiter == "\t" else repr(delimiter)


@contextmanager
def _long_csv_fields():
    """Lifts the csv module's 128 KiB limit on one field for the read: a long document in one
    cell is data, not an error. The limit is process-wide, so the old one is put back after."""
    previous = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _read_tsv(path: Path, *, split: str | None = None, limit: int | None) -> list[Any]:
    return _read_csv(path, limit=limit, delimiter="\t")


def _read_parquet(path: Path, *, limit: int | None) -> list[Any]:
    import pyarrow.parquet as pq

    try:
        _check_header(path, pq.read_schema(path).names)
        table = pq.read_table(path)
    except NashError:
        raise
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
            raise NashError(f"{path} has no split {wanted!r}; its splits are {quoted_names(loaded)}; pass --split")
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


def quoted_names(names: Iterable[Any]) -> str:
    """Names as an error message lists them: quoted, comma-separated, "(none)" when there are none."""
    return ", ".join(repr(str(name)) for name in names) or "(none)"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
