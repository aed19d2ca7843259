"""The output lock: one nash process at a time writes an output.

A `flock` on `.NAME.nash-lock` beside the output, taken by `check_output` or `refuse_existing`
before any work and given back by the rename that publishes the output (or by `releases_outputs`
when a stage fails first). Only rank 0 of a distributed run takes it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nash_cli.errors import NashError

LOCK_SUFFIX = ".nash-lock"


def resolve_path(path: str | Path) -> Path:
    """`path` made absolute with `~`, `..` and symlinks resolved (also for parts that do not exist yet)."""
    return Path(path).expanduser().resolve()


@dataclass
class _Claim:
    lock: Path
    """The lock file beside the output."""
    handle: int | None
    """Its open descriptor holding the flock (None where there is no flock or on a non-main rank)."""
    created: list[Path]
    """Parent directories made for the output, innermost first (removed again if left empty)."""


#: Outputs this process holds, by resolved path.
_CLAIMS: dict[Path, _Claim] = {}


def _is_main_rank() -> bool:
    # Under torchrun / accelerate every rank runs the stage; only rank 0 publishes the output.
    return os.environ.get("RANK", "0") in ("", "0")


def lock_path(output: str | Path) -> Path:
    """The lock file of an output: `.NAME.nash-lock` beside it."""
    path = Path(output).absolute()
    return path.parent / f".{path.name}{LOCK_SUFFIX}"


def claim_output(output: str | Path) -> None:
    """Takes the exclusive lock of `output` for this process (re-entrant), making missing parents.

    The lock is a `flock` on `.NAME.nash-lock` beside the output, which records the holder's pid;
    the operating system drops it when the process ends, however it ends.

    Raises:
        NashError: another nash process holds the lock, or the parent cannot be written.
    """
    key = resolve_path(output)
    if key in _CLAIMS:
        return
    target = Path(output).absolute()
    created: list[Path] = []
    parent = target.parent
    while not os.path.lexists(parent):
        created.append(parent)
        parent = parent.parent
    lock = lock_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = _lock(lock, output) if _is_main_rank() else None
    except OSError as error:
        _remove_empty(created)
        from nash_cli.artifact.outputs import disk_full_error, is_disk_full

        if is_disk_full(error):
            raise disk_full_error(output) from None
        raise NashError(f"cannot write output {output} ({error.strerror or error}); choose a writable -o") from None
    except NashError:
        _remove_empty(created)
        raise
    _CLAIMS[key] = _Claim(lock=lock, handle=handle, created=created)


def _lock(lock: Path, output: str | Path) -> int | None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    while True:
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip()
            os.close(handle)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise NashError(
                f"output {output} is being written by another nash process{who}; wait for it to end, or choose another -o"
            ) from None
        # The holder removes the lock file when it is done: if that happened between open and
        # flock, this lock is on a removed file, so lock the file now at the path instead.
        try:
            current = os.stat(lock).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
            return handle
        os.close(handle)


def holds_output(output: str | Path) -> bool:
    """True when this process holds the lock of `output` (see `claim_output`)."""
    return resolve_path(output) in _CLAIMS


def release_output(output: str | Path) -> None:
    """Gives back the lock of `output` (if this process holds it) and removes parents made for it that stayed empty."""
    claim = _CLAIMS.pop(resolve_path(output), None)
    if claim is None:
        return
    if claim.handle is not None:
        with contextlib.suppress(OSError):
            if os.stat(claim.lock).st_ino == os.fstat(claim.handle).st_ino:
                os.unlink(claim.lock)
        os.close(claim.handle)
    _remove_empty(claim.created)


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:  # innermost first
        with contextlib.suppress(OSError):
            directory.rmdir()


def releases_outputs(function: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates a stage's `run`: outputs it claimed and did not publish are released when it
    returns or raises (a refused or failed run leaves no lock file and no empty parents)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        held = set(_CLAIMS)
        try:
            return function(*args, **kwargs)
        finally:
            for key in [key for key in _CLAIMS if key not in held]:
                release_output(key)

    return wrapper
