"""Output files outside a checkpoint (metrics, generations, bench, report, figures): checks and the atomic writer.

`refuse_existing` checks a set of files before the work (`--force` replaces only files nash wrote,
recognised by `is_nash_file`) and locks it; `write_files_atomic` then writes every file through a
temporary beside it and renames the set into place under a journal, so a killed run never leaves a
half-written file or a mixed set.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nash_cli.artifact.locks import claim_output, release_output
from nash_cli.artifact.outputs import _umask, check_writable, disk_full_error, is_disk_full, refuse_output_over_inputs
from nash_cli.errors import NashError

#: The files nash writes outside a checkpoint, by kind (see `is_nash_file`).
FILE_KINDS = ("metrics", "generations", "bench", "report", "figure")

#: Text nash writes into its PNG figures, by which `--force` recognises them.
FIGURE_SOFTWARE = "nash"

#: The journal of a file set being renamed into place (see `write_files_atomic`).
SET_JOURNAL_SUFFIX = ".nash-set"


def is_nash_file(path: Path, kind: str) -> bool:
    """True when `path` holds what nash writes as a `kind` file (see FILE_KINDS): `--force` replaces only those."""
    try:
        if kind == "figure":
            with open(path, "rb") as handle:
                head = handle.read(1 << 16)
            return head.startswith(b"\x89PNG") and b"Software\x00" + FIGURE_SOFTWARE.encode() in head
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if kind == "report":
        return text.startswith("# nash report")
    if kind == "generations":
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            return all("prediction" in json.loads(line) for line in lines[:1])
        except (ValueError, TypeError):
            return False
    try:
        document = json.loads(text)
    except ValueError:
        return False
    if not isinstance(document, dict):
        return False
    if kind == "metrics":
        return {"scores", "num_examples"} <= document.keys()
    if kind == "bench":
        return {"models", "settings", "environment"} <= document.keys()
    raise ValueError(f"kind must be one of {FILE_KINDS}, not {kind!r}")


def refuse_existing(
    paths: Iterable[Path],
    force: bool,
    *,
    kinds: Iterable[str | None] | None = None,
    inputs: Mapping[str, str | Path | None] | None = None,
) -> None:
    """Checks a set of output files and takes the set's lock; call it before heavy work.

    Refuses, naming the fix: a file that is, contains or lies inside one of `inputs`; a path that
    is a directory or cannot be written; an existing file without `force`; with `force`, an
    existing file that is not the nash file of its kind. A set left partial by a killed run is
    finished first (see `finish_partial_set`). The lock (on the first path) is held until
    `write_files_atomic` has renamed the set into place.

    Args:
        paths: The files the command writes; the first one names the set.
        force: Replace existing files nash wrote.
        kinds: For each path, its kind (see FILE_KINDS); None: any existing file may be replaced.
        inputs: Label -> every path the command reads.
    """
    paths = [Path(path) for path in paths]
    kinds = list(kinds) if kinds is not None else [None] * len(paths)
    refuse_output_over_inputs(paths, inputs)
    for path in paths:
        if path.is_dir():
            raise NashError(f"{path} is a directory; give a file name for the output")
        check_writable(path)
    if not paths:
        return
    claim_output(paths[0])
    try:
        finish_partial_set(paths[0])
        for path, kind in zip(paths, kinds):
            if not os.path.lexists(path):
                continue
            if not force:
                raise NashError(f"{path} already exists; pass --force to overwrite it or choose another path")
            if kind is not None and not is_nash_file(path, kind):
                raise NashError(
                    f"{path} is not a {kind} file nash wrote, so --force will not replace it; "
                    "choose another path, or remove it yourself"
                )
    except NashError:
        release_output(paths[0])
        raise


def json_text(document: Any) -> str:
    """A JSON document as nash writes it: indented, UTF-8 text kept as is, newline-terminated."""
    return json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"


def jsonl_text(records: Iterable[Mapping[str, Any]]) -> str:
    """One JSON object per line."""
    return "".join(json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in records)


def set_journal(first: Path) -> Path:
    """The journal of a file set named by its first file: `.NAME.nash-set` beside it."""
    first = Path(first).absolute()
    return first.parent / f".{first.name}{SET_JOURNAL_SUFFIX}"


def finish_partial_set(first: Path) -> list[Path]:
    """Finishes renaming a file set that a killed run left half-published; returns the files renamed.

    Every file of a set is written in full before its journal is, so a journal means the set is
    complete on disk and only some renames are missing: doing them leaves the whole new set.

    Raises:
        NashError: the journal is unreadable.
    """
    journal = set_journal(first)
    if not journal.is_file():
        return []
    try:
        entries = [(Path(entry["temporary"]), Path(entry["path"])) for entry in json.loads(journal.read_text())["files"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise NashError(f"{journal} (an interrupted write) is unreadable ({error}); delete it and rerun with --force") from None
    renamed = []
    for temporary, path in entries:
        if temporary.exists():
            os.replace(temporary, path)
            renamed.append(path)
    journal.unlink()
    return renamed


def write_files_atomic(contents: Mapping[Path, str | bytes], *, durable: bool = False) -> None:
    """Writes files through temporaries beside them, then renames them all into place.

    The one atomic file writer of nash: a reader never sees half a file, and nothing is renamed
    until every file has been written in full (a failure leaves the old files, or none). A set
    of several files is published under a journal beside the first (`.NAME.nash-set`, listing
    each temporary and its target), written after every file and removed after the last rename:
    a run killed between two renames leaves it, and the next `refuse_existing` or write of the
    set finishes the renames, so the set is never left mixed. Files get mode `0o666 & ~umask`.
    The lock of the first path (see `refuse_existing`) is released at the end.

    Args:
        contents: Path -> text (UTF-8) or bytes.
        durable: Flush each file and its directory to disk (resumable training state).
    """
    paths = [Path(path) for path in contents]
    if not paths:
        return
    staged: list[tuple[str, Path]] = []
    journal = set_journal(paths[0]) if len(paths) > 1 else None
    journaled = False
    writing = paths[0]
    try:
        if journal is not None:
            finish_partial_set(paths[0])
        for path, data in zip(paths, contents.values()):
            writing = path
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((temporary, path))
            with os.fdopen(handle, "wb") as stream:
                stream.write(data.encode("utf-8") if isinstance(data, str) else data)
                if durable:
                    stream.flush()
                    os.fsync(stream.fileno())
            # mkstemp makes the file owner-only; results should get the usual permissions.
            os.chmod(temporary, 0o666 & ~_umask())
        if journal is not None:
            entries = [{"temporary": str(Path(t).absolute()), "path": str(p.absolute())} for t, p in staged]
            handle, temporary = tempfile.mkstemp(prefix=f".{journal.name}.", suffix=".tmp", dir=journal.parent)
            with os.fdopen(handle, "w") as stream:
                stream.write(json_text({"files": entries}))
            os.replace(temporary, journal)
            journaled = True
        for temporary, path in staged:
            os.replace(temporary, path)
            if durable:
                fsync_dir(path.parent)
        if journal is not None:
            journal.unlink()
    except OSError as error:
        if is_disk_full(error):  # the temporaries are removed below, as for any failure
            raise disk_full_error(writing) from None
        raise
    finally:
        # Once journaled, the temporaries are the set's only complete copy: the next write finishes it.
        if not (journaled and journal.exists()):
            for temporary, _ in staged:
                if os.path.exists(temporary):
                    os.unlink(temporary)
        release_output(paths[0])


def fsync_dir(path: Path) -> None:
    """Flushes a directory entry (renames inside it) to disk, where the platform allows it."""
    with contextlib.suppress(OSError):
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
