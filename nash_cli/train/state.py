"""Resumable training state, written atomically beside the output.

While a run trains towards `<output>`, everything it needs to continue lives in the staging
directory `<output>.partial/`:

    <output>.partial/
        run.json            what must match for --resume (data fingerprint, global batch, ...)
        train_log.jsonl     every logged step and evaluation so far
        latest              the name of the newest complete state, e.g. "step-00000120"
        step-00000120/      model.safetensors, optimizer.pt, scheduler.pt, progress.json,
                            rng-<rank>.pt per process, extension.pt (if any), scaler.pt (fp16)
        best-00000100/      model.safetensors (+ extension.pt): the best weights by eval loss

A state directory is written under a temporary name, flushed, renamed, and only then does
`latest` (itself replaced with an atomic rename) point at it; a run killed at any moment leaves
`latest` naming a complete state. Tensors are written with safetensors (weights) or
`torch.save` of plain tensors and numbers, read back with `weights_only=True`: resuming never
unpickles arbitrary objects.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

LATEST = "latest"
RUN = "run.json"
LOG = "train_log.jsonl"
PROGRESS = "progress.json"
_STATE_DIR = re.compile(r"^(step|best)-(\d{8})$")


def partial_dir(output: str | Path) -> Path:
    """The staging directory of a run writing `output`: `<output>.partial` beside it."""
    output = Path(output).absolute()
    return output.with_name(output.name + ".partial")


def state_name(step: int) -> str:
    """Directory name of the resumable state after `step` optimiser steps."""
    return f"step-{step:08d}"


def best_name(step: int) -> str:
    """Directory name of the best weights, found at `step`."""
    return f"best-{step:08d}"


def fsync_dir(path: Path) -> None:
    """Flushes a directory entry (renames inside it) to disk, where the platform allows it."""
    with contextlib.suppress(OSError):
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def fsync_tree(path: Path) -> None:
    """Flushes every file under `path`, then the directory itself."""
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(path)


def write_text_atomic(path: Path, text: str) -> None:
    """Replaces `path` with `text` through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_dir(path.parent)


def commit_dir(temporary: Path, final: Path) -> None:
    """Flushes `temporary` and renames it to `final` (replacing a stale `final`)."""
    fsync_tree(temporary)
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    fsync_dir(final.parent)


def latest_state(partial: Path) -> Path | None:
    """The newest complete state directory, or None when there is none."""
    pointer = partial / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    state = partial / name
    if not _STATE_DIR.match(name) or not (state / PROGRESS).is_file():
        return None
    return state


def read_progress(state: Path) -> dict[str, Any]:
    """The progress record of a state directory (step, epoch, best eval, last losses, ...)."""
    return json.loads((state / PROGRESS).read_text())


def prune_states(partial: Path, keep: set[str]) -> None:
    """Removes state, best and temporary directories other than those named in `keep`."""
    for entry in partial.iterdir():
        if entry.name in keep or not entry.is_dir():
            continue
        if _STATE_DIR.match(entry.name) or entry.name.startswith(".tmp-"):
            shutil.rmtree(entry, ignore_errors=True)


def truncate_log(log: Path, step: int) -> None:
    """Drops log lines written after `step` (by a run that was then interrupted)."""
    if not log.is_file():
        return
    kept = []
    for line in log.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except ValueError:  # a line cut short by the kill
            continue
    write_text_atomic(log, "".join(line + "\n" for line in kept))


def save_tensors(obj: Any, path: Path) -> None:
    """`torch.save` for plain containers of tensors and numbers (read with `load_tensors`)."""
    import torch

    torch.save(obj, path)


def load_tensors(path: Path, map_location: Any = "cpu") -> Any:
    """Reads what `save_tensors` wrote, refusing anything but tensors and plain values."""
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)
