"""Result files (JSON reports, JSON Lines) written atomically, refused when they exist.

Each file is written to a temporary file beside its target and renamed into place, so a reader
never sees half a file and a failed run leaves the old file (or nothing) behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nash_cli.errors import NashError


def refuse_existing(paths: Iterable[Path], force: bool) -> None:
    """Raises NashError if any of `paths` exists and `force` is off (call before heavy work)."""
    for path in paths:
        if path.is_dir():
            raise NashError(f"{path} is a directory; give a file name for the output")
        if path.exists() and not force:
            raise NashError(f"{path} already exists; pass --force to overwrite it or choose another path")


def json_text(document: Any) -> str:
    """A JSON document as nash writes it: indented, UTF-8 text kept as is, newline-terminated."""
    return json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"


def jsonl_text(records: Iterable[Mapping[str, Any]]) -> str:
    """One JSON object per line."""
    return "".join(json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in records)


def write_files(contents: Mapping[Path, str]) -> None:
    """Writes every file to a temporary beside it, then renames them all into place.

    Nothing is renamed until every file has been written in full.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in contents.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((temporary, path))
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
        for temporary, path in staged:
            os.replace(temporary, path)
    finally:
        for temporary, _ in staged:
            if os.path.exists(temporary):
                os.unlink(temporary)
