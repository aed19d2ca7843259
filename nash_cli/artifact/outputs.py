"""Output directories: the checks every stage makes before its work, and publishing by rename.

An output is checked against every input (never is, contains or lies inside one), for
writability, and for what `--force` may replace (only a nash output of the same kind), then
locked (`nash_cli.artifact.locks`); `staged_output` yields a temporary directory beside it that is
renamed into place only when complete, so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nash_cli.artifact.checkpoints import FORMAT_VERSION, MANIFEST, STATES
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


#: The manifest key listing every entry of a nash output directory (written by `staged_output`),
#: by which `--force` tells nash's entries from ones a user added.
FILES_KEY = "files"

#: Entries nash may have written into an output made before nash recorded `FILES_KEY`: the
#: weights, configs, tokenizer, masks, code and logs of a checkpoint, an export's model and
#: vocabularies, a plan's recipe. A user's `README.md` or `eval-results/` matches none.
LEGACY_ENTRY_PATTERNS = ("*.json", "*.jsonl", "*.safetensors", "*.bin", "*.model", "*.txt", "*.py", "*.yaml", "*.jinja")


def is_nash_manifest(manifest: Any) -> bool:
    """True when `manifest` (a parsed `nash.json`) has the fields nash writes into every output's
    manifest: its format version, the stage that wrote it and the checkpoint state."""
    if not isinstance(manifest, dict):
        return False
    version = manifest.get("format_version")
    return (
        isinstance(version, int)
        and not isinstance(version, bool)
        and 1 <= version <= FORMAT_VERSION
        and isinstance(manifest.get("stage"), str)
        and bool(manifest["stage"])
        and manifest.get("state") in STATES
    )


def foreign_entries(path: Path, manifest: Mapping[str, Any]) -> list[str]:
    """The entries of nash output directory `path` that nash did not write, sorted.

    Nash's entries are the ones its manifest lists (`FILES_KEY`); for an output written before
    nash listed them, the files matching `LEGACY_ENTRY_PATTERNS`.
    """
    listed = manifest.get(FILES_KEY)
    names = sorted(os.listdir(path))
    if isinstance(listed, list) and all(isinstance(name, str) for name in listed):
        return [name for name in names if name not in set(listed)]
    return [
        name
        for name in names
        if (path / name).is_dir() or os.path.islink(path / name)
        or not any(fnmatch.fnmatchcase(name, pattern) for pattern in LEGACY_ENTRY_PATTERNS)
    ]


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
    except (OSError, ValueError, UnicodeDecodeError):
        manifest = None
    if not is_nash_manifest(manifest):
        raise NashError(
            f"output {path} has no nash.json that nash wrote, so nash did not write it and --force will not replace it; "
            "choose another -o, or remove it yourself"
        )
    found = directory_kind(manifest)
    if found != kind:
        raise NashError(
            f"output {path} is a nash {found}, not a {kind}, so --force will not replace it; choose another -o"
        )
    foreign = foreign_entries(path, manifest)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise NashError(
            f"output {path} holds {foreign[0]}{more}, which nash did not write, so --force will not replace it; "
            "move it out of the directory, or choose another -o"
        )


#: What a training stage keeps in `<output>.partial/` (nash_cli.train.state): its run record and
#: log, the `latest` pointer, state directories, and the temporaries of its atomic writes.
PARTIAL_SUFFIX = ".partial"
_PARTIAL_ENTRY = re.compile(r"^(run\.json|train_log\.jsonl|latest|(step|best)-\d{8}|\..+)$")


def partial_path(output: str | Path) -> Path:
    """The staging directory of a training run writing `output`: `<output>.partial` beside it."""
    output = Path(output).absolute()
    return output.with_name(output.name + PARTIAL_SUFFIX)


def check_partial(output: str | Path) -> None:
    """Refuses a `<output>.partial` that is not a training run's state nash wrote.

    A training stage resumes from, or (with `--force`) removes, `<output>.partial/`; a file there,
    or a directory without nash's run record or with entries nash does not write, is the user's,
    and nash neither removes it nor reads it as a state.

    Raises:
        NashError: naming the path and the fix.
    """
    partial = partial_path(output)
    if not os.path.lexists(partial):
        return
    fix = "so nash will neither resume from nor remove it; move it away, or choose another -o"
    if os.path.islink(partial) or not partial.is_dir():
        raise NashError(f"{partial} is a file, not the state of an interrupted nash run, {fix}")
    names = sorted(os.listdir(partial))
    if all(name.startswith(".") for name in names):  # empty, or killed before its run record was written
        return
    foreign = [name for name in names if not _PARTIAL_ENTRY.match(name)]
    if foreign:
        raise NashError(f"{partial} holds {foreign[0]}, which nash did not write, {fix}")
    try:
        record = json.loads((partial / "run.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        record = None
    if not (isinstance(record, dict) and isinstance(record.get("fingerprint"), dict)):
        raise NashError(f"{partial} has no run.json that nash wrote, {fix}")


# --------------------------------------------------------------------------- a full disk

_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
#: How libraries that wrap the system error report it: safetensors' Rust IoError, torch's writer.
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")


def is_disk_full(error: BaseException) -> bool:
    """True when `error` (or an error it was raised from) says the disk or the user's quota is full."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(current) for text in _DISK_FULL_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


class DiskFullError(NashError):
    """A write ran out of disk space (a NashError: one line, exit 2); the outer writer may name its own output."""


#: The fix of a full disk, as most writers say it.
DISK_FULL_FIX = "free disk space, then rerun"
#: A training stage's: its saved states stay in `<output>.partial/` (none, if it failed before the first).
TRAINING_DISK_FULL_FIX = "free disk space, then rerun with --resume (without it if no state was saved yet)"


def disk_full_error(output: str | Path, fix: str = DISK_FULL_FIX) -> DiskFullError:
    """The one line for a write that ran out of disk space: the output, and the fix."""
    return DiskFullError(f"the disk is full: writing {output} failed (no space left on the device); {fix}")


@contextlib.contextmanager
def disk_full_refused(output: str | Path, *, fix: str = DISK_FULL_FIX) -> Iterator[None]:
    """Turns a write that runs out of disk space inside the block into one NashError naming `output`.

    Whatever cleans up on the way out (staging directories removed, states kept) has run by the
    time the error reaches here; only the traceback becomes a line.
    """
    try:
        yield
    except DiskFullError:
        raise disk_full_error(output, fix) from None
    except NashError:
        raise
    except Exception as error:
        if is_disk_full(error):
            raise disk_full_error(output, fix) from None
        raise


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
        with disk_full_refused(output):
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            yield staging
            record_entries(staging)
            normalize_modes(staging)
            if os.path.lexists(target):
                _check_replaceable_directory(target, force, kind)
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, old / target.name)
                os.replace(staging, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, target)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            # the staging directory's names mean nothing to the user: name the output
            if isinstance(error, DiskFullError) or (
                isinstance(error, Exception) and not isinstance(error, NashError) and is_disk_full(error)
            ):
                raise disk_full_error(output) from None
            raise
    finally:
        release_output(target)


def record_entries(staging: Path) -> None:
    """Lists every entry of a finished output in its `nash.json` (`FILES_KEY`), so that `--force`
    later knows which entries nash wrote; an output without a nash manifest is left as it is."""
    path = staging / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return
    if not isinstance(manifest, dict):
        return
    manifest[FILES_KEY] = sorted(os.listdir(staging))
    from nash_cli.artifact.files import json_text, write_files_atomic

    write_files_atomic({path: json_text(manifest)})


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
