"""Output directories: the checks every stage makes before its work, and publishing by rename.

An output is checked against every input (never is, contains or lies inside one), for
writability, and for what `--force` may replace (only a nash output of the same kind), then
locked (`nash_cli.artifact.locks`); `staged_output` yields a temporary directory beside it that is
renamed into place only when complete, so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nash_cli.artifact.checkpoints import MANIFEST
from nash_cli.artifact.locks import claim_output, release_output, resolve_path
from nash_cli.errors import NashError


# The promises of every output (docs/artifacts.md): an output never is, contains or lies inside an
# input; `--force` replaces only a previous nash output of the same kind; one nash process at a
# time writes an output (a lock beside it, held from the check to the rename); an unwritable path
# fails before any work; and every file and directory gets the usual permissions.

#: What `--force` may replace: the kind of a nash output directory, from its manifest.
DIRECTORY_KINDS = ("checkpoint", "export", "plan")


def directory_kind(manifest: Mapping[str, Any]) -> str:
    """The kind of a nash output directory: "export" or "plan" for those commands', else "checkpoint"."""
    stage = manifest.get("stage")
    return stage if stage in ("export", "plan") else "checkpoint"


def input_overlap(output: Path, inputs: Mapping[str, Path]) -> tuple[str, str] | None:
    """Which input a (resolved) output path would touch, and how; None when it touches none.

    A pure function of resolved paths: an output that is an input, contains one or lies inside
    one would replace or modify it.

    Args:
        output: The resolved output path.
        inputs: Label (e.g. "checkpoint") -> resolved input path.

    Returns:
        (label, relation) with relation "is", "contains" or "is inside"; or None.
    """
    for label, source in inputs.items():
        if output == source:
            return label, "is"
        if source.is_relative_to(output):
            return label, "contains"
        if output.is_relative_to(source):
            return label, "is inside"
    return None


def refuse_output_over_inputs(outputs: Iterable[str | Path], inputs: Mapping[str, str | Path | None] | None) -> None:
    """Refuses any output that is, contains or lies inside an existing input (symlinks and `..` resolved).

    Inputs that are not local paths (hub ids, None) cannot be overwritten and are ignored.

    Raises:
        NashError: naming the output, the input and the fix.
    """
    local = {
        label: resolve_path(source)
        for label, source in (inputs or {}).items()
        if source is not None and os.path.lexists(Path(str(source)).expanduser())
    }
    for output in outputs:
        overlap = input_overlap(resolve_path(output), local)
        if overlap is not None:
            label, relation = overlap
            raise NashError(
                f"output {output} {relation} the {label} {inputs[label]}, and nash never writes over its inputs; "
                "choose an -o outside every input"
            )


def check_writable(output: Path) -> None:
    """A cheap probe before any work: the nearest existing parent of `output` is a writable directory.

    Raises:
        NashError: that parent is a file, or not writable.
    """
    ancestor = output.absolute().parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NashError(f"cannot write output {output}: {ancestor} is a file, not a directory; choose another -o")
    if not os.access(ancestor, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise NashError(f"cannot write output {output}: {ancestor} is not writable; choose a writable -o")


def _check_replaceable_directory(path: Path, force: bool, kind: str | None) -> None:
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise NashError(f"output {path} is a file; choose a directory path for -o")
    if not force:
        raise NashError(f"output {path} already exists; pass --force to replace it, or choose another -o")
    if kind is None or not any(path.iterdir()):  # an empty directory holds nothing to lose
        return
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict):
        raise NashError(
            f"output {path} has no nash.json, so nash did not write it and --force will not replace it; "
            "choose another -o, or remove it yourself"
        )
    found = directory_kind(manifest)
    if found != kind:
        raise NashError(
            f"output {path} is a nash {found}, not a {kind}, so --force will not replace it; choose another -o"
        )


def check_output(
    output: str | Path,
    force: bool,
    *,
    kind: str | None = "checkpoint",
    inputs: Mapping[str, str | Path | None] | None = None,
) -> None:
    """Checks an output directory and takes its lock; call it before any heavy work.

    Refuses, naming the fix: an output that is, contains or lies inside one of `inputs`; an
    existing output without `force`; with `force`, an existing directory that is not a nash
    output of the same `kind`; a path that cannot be written. Then takes the output's lock (see
    `claim_output`), which the rename in `staged_output` (or `release_outputs`) gives back.

    Args:
        output: The output directory.
        force: Replace an existing nash output of the same kind.
        kind: "checkpoint", "export" or "plan" (what `--force` may replace); None for nash's own caches,
            which any existing directory may be replaced by.
        inputs: Label -> every path the command reads (checkpoint, teacher, data, ...).

    Raises:
        NashError: for each refusal above, and when another nash process is writing `output`.
    """
    if kind is not None and kind not in DIRECTORY_KINDS:
        raise ValueError(f"kind must be one of {DIRECTORY_KINDS} or None, not {kind!r}")
    path = Path(output)
    refuse_output_over_inputs([path], inputs)
    _check_replaceable_directory(path, force, kind)
    check_writable(path)
    claim_output(path)
    try:
        _check_replaceable_directory(path, force, kind)  # again under the lock: another run may have just finished
    except NashError:
        release_output(path)
        raise


@contextlib.contextmanager
def staged_output(
    output: str | Path,
    *,
    force: bool = False,
    kind: str | None = "checkpoint",
    inputs: Mapping[str, str | Path | None] | None = None,
) -> Iterator[Path]:
    """Yields a temporary directory beside `output`; on success it is renamed to `output`.

    On any exception (Ctrl-C included) the temporary directory is removed and nothing is left
    behind; an existing `output` is replaced only with `force`, only when it is a nash output of
    the same `kind`, and only once the new one is complete. The output's lock (see
    `check_output`) is held until the rename; every file and directory in it gets the usual
    permissions (`0o666 & ~umask`, directories `0o777 & ~umask`).
    """
    target = Path(output).absolute()
    check_output(target, force, kind=kind, inputs=inputs)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            yield staging
            normalize_modes(staging)
            if os.path.lexists(target):
                _check_replaceable_directory(target, force, kind)
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, old / target.name)
                os.replace(staging, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        release_output(target)


def normalize_modes(root: Path) -> None:
    """Gives every file under `root` mode `0o666 & ~umask` and every directory (root too) `0o777 & ~umask`.

    Writers differ (mkstemp and some safetensors writers make owner-only files); an output should
    not depend on which one wrote a file.
    """
    umask = _umask()
    for directory, subdirectories, files in os.walk(root):
        os.chmod(directory, 0o777 & ~umask)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~umask)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
