"""Reading a file once per process: what was made of it is kept while the file stays the same.

A stage asks for its parent's `nash.json` and `config.json` several times (the checks before the
work, loading, the manifest of its output) and hashes the parent's weights for the lineage; a
process running several stages over one checkpoint (`nash run`, tests, library use) asks again.
`read_once` keeps each result keyed on the files' resolved paths and their stat (device, inode,
size, mtime and ctime in nanoseconds), so a file rewritten, replaced or touched is read again.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: A file changed less than this long (ns) before it was read is read again next time, not kept:
#: timestamps are coarse (a kernel tick on Linux, up to 2 s on FAT), so a same-size rewrite within
#: one tick would keep the stat that was recorded. Once a file is older than this, any later
#: change gets a later timestamp.
SETTLE_NS = 2_000_000_000

#: At most this many results are kept (the oldest goes first), so a long process stays small.
MAX_ENTRIES = 256

#: (kind, resolved paths) -> (their stat signature, the result).
_KEPT: dict[tuple[str, tuple[Path, ...]], tuple[tuple[tuple[int, ...], ...], Any]] = {}


def read_once(kind: str, paths: Sequence[Path], read: Callable[[], T]) -> T:
    """`read()`, or what it returned the last time for the same, unchanged `paths`.

    Args:
        kind: What `read` makes of the files (e.g. "manifest"); results of different kinds are
            kept apart, so one file may be read as two kinds.
        paths: Every file `read` reads.
        read: Reads them. Its exceptions propagate and nothing is kept, so an error is raised
            again, in the same words, by the next call.

    Returns:
        A deep copy of the result: a caller that changes it changes nothing a later call gets.
    """
    now = time.time_ns()  # before the stat: a file is settled only if it was so when its stat was taken
    try:
        resolved = tuple(Path(path).resolve() for path in paths)
        stats = [os.stat(path) for path in resolved]
    except OSError:
        return read()  # a missing or unreadable file: `read` reports it in its own words
    # Taken before `read`: a change while reading leaves a stat that no longer matches, so it is read again.
    signature = tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in stats)
    key = (kind, resolved)
    kept = _KEPT.get(key)
    if kept is not None and kept[0] == signature:
        return copy.deepcopy(kept[1])
    value = read()
    _KEPT.pop(key, None)
    if all(now - max(s.st_mtime_ns, s.st_ctime_ns) >= SETTLE_NS for s in stats):
        if len(_KEPT) >= MAX_ENTRIES:
            del _KEPT[next(iter(_KEPT))]
        _KEPT[key] = (signature, value)
    return copy.deepcopy(value)


def forget() -> None:
    """Drops every kept result (the next read of each file goes to the disk)."""
    _KEPT.clear()
