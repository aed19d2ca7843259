"""Checkpoint directories and outputs: the only code in nash that knows the on-disk format.

A nash checkpoint is a plain Hugging Face directory (`config.json`, `generation_config.json`,
safetensors weights, the tokenizer's files) plus `nash.json`, a manifest recording how it was made:
the stage, its exact arguments, the parent's path and weights hash, the layer map back to the
original teacher, the state (`dense`, `masked` or `compact`), library versions and a timestamp.
See docs/artifacts.md.

Every output is written into a temporary directory beside its target and renamed into place, so
an interrupted run never leaves a half-written checkpoint, and an existing output is replaced
only when the caller passes `force=True`, and then only when nash wrote it (same kind). Before
any work an output is checked against every input (never is, contains or lies inside one), for
writability, and locked against a second nash process (see "What nash promises about its
outputs" in docs/artifacts.md).

One module per job; every public name is re-exported here, so callers write `artifact.load_model`:

- `checkpoints`: the format's file names; reading a checkpoint without running it (weights,
  safetensors headers, `config.json`, `nash.json`, the checkpoint's own code it would import).
- `loading`: `LoadOptions`, and loading config, model and tokenizer through transformers.
- `lineage`: the manifest (parent, weights hash, lineage, versions) and `save_checkpoint`.
- `outputs`: the checks before any work, and publishing a directory by rename (`staged_output`).
- `locks`: the lock that lets one nash process at a time write an output.
- `files`: output files (metrics, reports, ...): `refuse_existing`, the atomic file writer.
- `cache`: `read_once`, by which `nash.json`, `config.json` and the weights hash are read once per
  process while the file stays the same.

Inside the package, modules import each other's functions directly: a test that replaces one
must patch the module that looks it up (stages call `artifact.X`, so patching here reaches them).
"""

from __future__ import annotations

from nash_cli.artifact.checkpoints import (
    CODE_MAP_FILES,
    FORMAT_VERSION,
    MANIFEST,
    PICKLE_INDEX,
    PICKLE_WEIGHTS,
    SAFE_INDEX,
    SAFE_WEIGHTS,
    STATES,
    TOKENIZER_FILES,
    check_checkpoint,
    code_files,
    is_local,
    read_config_dict,
    read_manifest,
    refuse_code,
    safetensors_problem,
    weight_files,
)
from nash_cli.artifact.files import (
    FIGURE_SOFTWARE,
    FILE_KINDS,
    SET_JOURNAL_SUFFIX,
    finish_partial_set,
    fsync_dir,
    is_nash_file,
    json_text,
    jsonl_text,
    refuse_existing,
    set_journal,
    write_files_atomic,
)
from nash_cli.artifact.lineage import (
    build_manifest,
    copy_tokenizer,
    library_versions,
    parent_entry,
    save_checkpoint,
    save_generation_config,
    weights_sha256,
)
from nash_cli.artifact.loading import LoadOptions, load_config, load_model, load_tokenizer
from nash_cli.artifact.locks import LOCK_SUFFIX, claim_output, holds_output, lock_path, release_output, releases_outputs, resolve_path
from nash_cli.artifact.outputs import (
    DIRECTORY_KINDS,
    DISK_FULL_FIX,
    FILES_KEY,
    PARTIAL_SUFFIX,
    TRAINING_DISK_FULL_FIX,
    DiskFullError,
    check_output,
    check_partial,
    check_writable,
    directory_kind,
    disk_full_error,
    disk_full_refused,
    foreign_entries,
    input_overlap,
    is_disk_full,
    is_nash_manifest,
    normalize_modes,
    partial_path,
    refuse_output_over_inputs,
    staged_output,
)

__all__ = [
    # checkpoints
    "CODE_MAP_FILES",
    "FORMAT_VERSION",
    "MANIFEST",
    "PICKLE_INDEX",
    "PICKLE_WEIGHTS",
    "SAFE_INDEX",
    "SAFE_WEIGHTS",
    "STATES",
    "TOKENIZER_FILES",
    "check_checkpoint",
    "code_files",
    "is_local",
    "read_config_dict",
    "read_manifest",
    "refuse_code",
    "safetensors_problem",
    "weight_files",
    # loading
    "LoadOptions",
    "load_config",
    "load_model",
    "load_tokenizer",
    # lineage
    "build_manifest",
    "copy_tokenizer",
    "library_versions",
    "parent_entry",
    "save_checkpoint",
    "save_generation_config",
    "weights_sha256",
    # outputs
    "DIRECTORY_KINDS",
    "check_output",
    "check_writable",
    "directory_kind",
    "DISK_FULL_FIX",
    "FILES_KEY",
    "PARTIAL_SUFFIX",
    "TRAINING_DISK_FULL_FIX",
    "DiskFullError",
    "check_partial",
    "disk_full_error",
    "disk_full_refused",
    "foreign_entries",
    "is_disk_full",
    "is_nash_manifest",
    "partial_path",
    "input_overlap",
    "normalize_modes",
    "refuse_output_over_inputs",
    "staged_output",
    # locks
    "LOCK_SUFFIX",
    "claim_output",
    "holds_output",
    "lock_path",
    "release_output",
    "releases_outputs",
    "resolve_path",
    # files
    "FIGURE_SOFTWARE",
    "FILE_KINDS",
    "SET_JOURNAL_SUFFIX",
    "finish_partial_set",
    "fsync_dir",
    "is_nash_file",
    "json_text",
    "jsonl_text",
    "refuse_existing",
    "set_journal",
    "write_files_atomic",
]
