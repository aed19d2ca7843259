"""Writing a checkpoint and the record of how it was made: `nash.json`, its lineage, and the files beside the weights.

`save_checkpoint` is the one way a stage writes a model: weights and config through
`save_pretrained`, the generation config, the tokenizer's files, any extra files of the stage, and
a manifest naming the parent (path and weights hash), the teacher, the layer map and the lineage,
all in a staged directory renamed into place (see `nash_cli.artifact.outputs`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nash_cli import __version__
from nash_cli._hf import quiet_transformers
from nash_cli.artifact.cache import read_once
from nash_cli.artifact.checkpoints import (
    FORMAT_VERSION,
    MANIFEST,
    STATES,
    TOKENIZER_FILES,
    is_local,
    read_manifest,
    weight_files,
)
from nash_cli.artifact.files import json_text, write_files_atomic
from nash_cli.artifact.loading import load_tokenizer
from nash_cli.artifact.outputs import staged_output
from nash_cli.errors import NashError


def weights_sha256(source: str | Path) -> str | None:
    """sha256 over a local checkpoint's weight files, in name order; None for a hub id."""
    if not is_local(source):
        return None
    files = weight_files(Path(source), allow_pickle=True)
    # Gigabytes for a real model: hashed once per process while the files stay the same.
    return read_once("sha256", files, lambda: _sha256(files))


def _sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a checkpoint's contents."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"nash": __version__}
    for name in ("torch", "transformers", "safetensors", "accelerate", "datasets"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def parent_entry(source: str | Path) -> dict[str, Any]:
    """Describes a parent checkpoint for a manifest: path, weights hash and its own stage."""
    manifest = read_manifest(source) or {}
    local = is_local(source)
    return {
        "path": str(Path(source).absolute()) if local else str(source),
        "sha256": weights_sha256(source),
        "stage": manifest.get("stage"),
    }


def build_manifest(
    *,
    source: str | Path,
    stage: str,
    arguments: Mapping[str, Any],
    state: str,
    layer_map: Mapping[str, list[int]] | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Assembles nash.json for a new checkpoint made from `source` by `stage`."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, not {state!r}")
    parent_manifest = read_manifest(source) or {}
    parent = parent_entry(source)
    lineage = list(parent_manifest.get("lineage", []))
    lineage.append({"stage": parent_manifest.get("stage", "input"), "path": parent["path"], "sha256": parent["sha256"]})
    manifest = {
        "format_version": FORMAT_VERSION,
        "nash_version": __version__,
        "stage": stage,
        "state": state,
        "arguments": dict(arguments),
        "command": " ".join(["nash", *map(shlex.quote, sys.argv[1:])]) if sys.argv and "nash" in sys.argv[0] else None,
        "parent": parent,
        "teacher": parent_manifest.get("teacher", parent["path"]),
        "layer_map": dict(layer_map) if layer_map is not None else parent_manifest.get("layer_map"),
        "lineage": lineage,
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    manifest.update(extra or {})
    return manifest


def copy_tokenizer(source: str | Path, destination: Path) -> list[str]:
    """Copies the tokenizer files of a local checkpoint into `destination`; returns their names.

    For a hub id, the tokenizer is loaded and saved instead (when it can be fetched).
    """
    if is_local(source):
        copied = []
        for name in TOKENIZER_FILES:
            path = Path(source) / name
            if path.is_file():
                shutil.copy2(path, destination / name)
                copied.append(name)
        return copied
    try:
        tokenizer = load_tokenizer(source)
    except NashError:
        return []
    return [Path(p).name for p in tokenizer.save_pretrained(destination)]


def save_generation_config(source: str | Path, model, destination: Path) -> None:
    """Writes the generation defaults of `source` into `destination` (its generation_config.json,
    else the ones transformers derives from the model's config)."""
    path = Path(source) / "generation_config.json"
    if is_local(source) and path.is_file():
        shutil.copy2(path, destination / "generation_config.json")
        return
    from transformers import GenerationConfig

    config = getattr(model, "generation_config", None) or GenerationConfig.from_model_config(model.config)
    config.save_pretrained(destination)


def save_checkpoint(
    model,
    output: str | Path,
    *,
    source: str | Path,
    stage: str,
    arguments: Mapping[str, Any],
    state: str = "dense",
    layer_map: Mapping[str, list[int]] | None = None,
    extra: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, Callable[[Path], None]] | None = None,
    force: bool = False,
    tokenizer_source: str | Path | None = None,
) -> Path:
    """Writes `model` as a nash checkpoint at `output`, atomically.

    Args:
        model: The model to save (`save_pretrained` writes config and safetensors weights).
        output: Target directory; refused if it exists unless `force`.
        source: The parent checkpoint (path or hub id), recorded with its weights hash.
        stage: The command that made this checkpoint, e.g. "select-layers".
        arguments: The command's exact arguments, as given.
        state: "dense", "masked" or "compact".
        layer_map: Teacher layer index for every kept layer, per stack
            (`{"decoder": [0, 5, 11]}`); inherited from the parent when None.
        extra: More manifest fields (a stage's results).
        extra_files: File name -> writer called with the staging directory, which writes that
            file beside the weights (e.g. "masks.safetensors").
        force: Replace an existing output.
        tokenizer_source: Where to copy the tokenizer from; defaults to `source`.

    Returns:
        The output path.
    """
    from transformers import GenerationConfig

    manifest = build_manifest(
        source=source, stage=stage, arguments=arguments, state=state, layer_map=layer_map, extra=extra
    )
    with staged_output(output, force=force) as staging, quiet_transformers():
        model.save_pretrained(staging)
        if not (staging / "generation_config.json").is_file():
            GenerationConfig.from_model_config(model.config).save_pretrained(staging)
        manifest["tokenizer_files"] = copy_tokenizer(tokenizer_source or source, staging)
        for writer in (extra_files or {}).values():
            writer(staging)
        write_files_atomic({staging / MANIFEST: json_text(manifest)})
    return Path(output)
