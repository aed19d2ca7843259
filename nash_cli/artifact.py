"""Checkpoint directories: the only code in nash that knows the on-disk format.

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
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nash_cli import __version__
from nash_cli._hf import quiet_transformers
from nash_cli.errors import NashError

MANIFEST = "nash.json"
FORMAT_VERSION = 1
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
STATES = ("dense", "masked", "compact")

#: Files a tokenizer may consist of; whichever exist are copied into every output.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(kw_only=True)
class LoadOptions:
    """How a stage may load checkpoints (shared by every stage that reads a model)."""

    allow_pickle: bool = False
    """Accept pytorch_model.bin weights (loaded with weights_only=True)."""
    trust_remote_code: bool = False
    """Run a checkpoint's own modeling code (only if you trust it)."""


# --------------------------------------------------------------------------- reading


def is_local(source: str | Path) -> bool:
    """True when `source` names a local path (existing or not) rather than a hub id."""
    text = str(source)
    return Path(text).exists() or not _HUB_ID.match(text) or text.endswith(("/", os.sep))


def weight_files(directory: Path, *, allow_pickle: bool = False) -> list[Path]:
    """Returns the weight files of a local checkpoint, checking that each one exists.

    Raises:
        NashError: when there are no weights, a shard named by the index is missing, or only
            pickle weights exist and `allow_pickle` is false.
    """
    for index_name, single in ((SAFE_INDEX, SAFE_WEIGHTS), (PICKLE_INDEX, PICKLE_WEIGHTS)):
        pickled = single == PICKLE_WEIGHTS
        index = directory / index_name
        if (directory / single).is_file():
            files = [directory / single]
        elif index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError) as error:
                raise NashError(f"{index} is not a valid weight index ({error}); re-save the checkpoint") from None
            files = [directory / name for name in shards]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise NashError(f"{directory} is missing weight shard {missing[0]} named in {index_name}; copy it back")
        else:
            continue
        if pickled and not allow_pickle:
            raise NashError(
                f"{directory} has only pickle weights ({files[0].name}); pass --allow-pickle to load them "
                "(with weights_only=True), or convert the checkpoint to safetensors"
            )
        return files
    raise NashError(
        f"{directory} has no weights (expected {SAFE_WEIGHTS} or {SAFE_INDEX}); point to a saved checkpoint directory"
    )


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a readable safetensors file (only its header is read), or None."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as error:  # safetensors raises its own SafetensorError, or OSError
        return _first_line(error)
    return None


def _check_safetensors(path: Path) -> None:
    problem = safetensors_problem(path)
    if problem is not None:
        raise NashError(f"{path} is not a readable safetensors file ({problem}); re-save or re-copy it")


def read_config_dict(source: str | Path) -> dict[str, Any]:
    """Reads `config.json` of a local checkpoint as a plain dict (no code is executed).

    Raises:
        NashError: for a missing directory, a file, a directory without `config.json`, or a
            `config.json` that is not a JSON object.
    """
    directory = Path(source)
    if not directory.exists():
        raise NashError(f"checkpoint directory {source} does not exist; check the path")
    if not directory.is_dir():
        raise NashError(f"checkpoint {source} is a file; pass the checkpoint's directory")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise NashError(f"{directory} has no config.json, so it is not a Hugging Face checkpoint; pass a saved model directory")
    return _read_json_object(config_path, fix="re-save the checkpoint")


def _read_json_object(path: Path, *, fix: str) -> dict[str, Any]:
    """A JSON file that must hold one object; NashError (with `fix`) for anything else."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # UnicodeDecodeError is a ValueError
        raise NashError(f"{path} is not valid UTF-8 JSON ({_first_line(error)}); {fix}") from None
    if not isinstance(document, dict):
        kinds = {list: "a JSON array", str: "a JSON string", int: "a JSON number", float: "a JSON number", bool: "a JSON boolean"}
        kind = kinds.get(type(document), "JSON null")
        raise NashError(f"{path} holds {kind}, not a JSON object of settings; {fix}")
    return document


def check_checkpoint(source: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Validates a local checkpoint without loading it and returns its config as a dict.

    Checks that the directory exists, holds a `config.json` of a supported encoder-decoder family,
    and holds readable weights. Raises NashError naming the first problem found.
    """
    config = read_config_dict(source)
    _check_family(config)
    for path in weight_files(Path(source), allow_pickle=allow_pickle):
        if path.suffix == ".safetensors":
            _check_safetensors(path)
    return config


def _check_family(config: dict[str, Any]) -> None:
    from types import SimpleNamespace

    from nash_cli.arch import family_of

    family_of(SimpleNamespace(**{"model_type": config.get("model_type"), **config}))


#: Files whose `auto_map` makes transformers import a checkpoint's own Python files.
CODE_MAP_FILES = ("config.json", "tokenizer_config.json")


def code_files(directory: Path) -> list[tuple[str, str]]:
    """The checkpoint's own Python files that transformers would import, with the file naming each.

    Reads the `auto_map` of `config.json` and `tokenizer_config.json` (no code is executed).
    nash's own compact configs (`encoder_heads`) are skipped: nash builds those with its own
    classes and never imports the copy of its modeling file beside the weights.

    Returns:
        `[(naming_file, python_file), ...]`, e.g. `[("tokenizer_config.json", "tokenizer_evil.py")]`.
    """
    from nash_cli import modeling

    found: list[tuple[str, str]] = []
    for name in CODE_MAP_FILES:
        path = directory / name
        if not path.is_file():
            continue
        document = _read_json_object(path, fix="re-save the checkpoint")
        if name == "config.json" and modeling.family_of_config(document) is not None:
            continue
        mapping = document.get("auto_map")
        references: list[Any] = []
        if isinstance(mapping, dict):
            for value in mapping.values():
                references.extend(value if isinstance(value, (list, tuple)) else [value])
        elif isinstance(mapping, (list, tuple)):  # the legacy tokenizer form: [slow, fast]
            references.extend(mapping)
        for reference in references:
            if isinstance(reference, str) and reference:
                # "module.Class", or "other/repo--module.Class" for code kept in another repository
                module = reference.split("--")[-1].rsplit(".", 1)[0]
                entry = (name, f"{module}.py")
                if entry not in found:
                    found.append(entry)
    return found


def refuse_code(source: str | Path) -> None:
    """NashError when loading a local checkpoint would import its own Python code.

    Called unless the user passed `--trust-remote-code`; names the file that would run and how
    to opt in, so transformers is never left to prompt "run the custom code? [y/N]".
    """
    directory = Path(source)
    found = code_files(directory)
    if found:
        naming, python_file = found[0]
        raise NashError(
            f"{directory / python_file} would run: the auto_map in {naming} names it; nash runs a "
            "checkpoint's own code only with --trust-remote-code (pass it only if you trust this checkpoint)"
        )


def _code_failure(source, error) -> str | None:
    """One line for transformers' "pass trust_remote_code=True" refusal, else None."""
    if "trust_remote_code" not in str(error):
        return None
    return (
        f"{source} contains its own code, which must run to load it; nash runs a checkpoint's own code "
        "only with --trust-remote-code (pass it only if you trust this checkpoint)"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_config(source: str | Path, *, allow_pickle: bool = False, trust_remote_code: bool = False):
    """Loads and validates a checkpoint's config without loading its weights.

    A local directory is checked in full first (config, family, readable weights, and, unless
    `trust_remote_code`, that no file of the checkpoint names its own code), so every problem
    surfaces before any heavy work. nash's compact configs (`encoder_heads`) are built with
    nash's own classes (`nash_cli.modeling`), never with the checkpoint's copy of the file.

    Raises:
        NashError: for a missing or invalid checkpoint, a model type nash does not support, or
            code that would run without `trust_remote_code`.
    """
    from huggingface_hub.errors import (
        StrictDataclassError,  # a config field of the wrong type
    )
    from transformers import AutoConfig

    from nash_cli import modeling
    from nash_cli.arch import family_of

    if is_local(source):
        config_dict = check_checkpoint(source, allow_pickle=allow_pickle)
        if not trust_remote_code:
            refuse_code(source)
        config = _nash_config(source, config_dict)
        if config is not None:
            family_of(config)
            return config
    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code)
        except (OSError, ValueError, TypeError, KeyError, StrictDataclassError) as error:
            if is_local(source):
                raise NashError(_config_failure(source, error)) from None
            raise NashError(_code_failure(source, error) or _hub_failure(source, error)) from None
    family = modeling.family_of_config(config.to_dict())
    if family is not None and not isinstance(config, modeling.classes(family)[0]):
        # A compact checkpoint from the hub: AutoConfig built the stock class of its model type.
        config = modeling.classes(family)[0].from_dict(config.to_dict())
    family_of(config)
    return config


def _nash_config(source: str | Path, config_dict: dict[str, Any]):
    """The config of a nash compact checkpoint built with nash's packaged class, or None for any
    other config (never the checkpoint's copy of the modeling file)."""
    from huggingface_hub.errors import (
        StrictDataclassError,  # a config field of the wrong type
    )

    from nash_cli import modeling

    family = modeling.family_of_config(config_dict)
    if family is None:
        return None
    settings = {key: value for key, value in config_dict.items() if key != "model_type"}
    with quiet_transformers():
        try:
            config = modeling.classes(family)[0].from_dict(settings)
        except (ValueError, TypeError, KeyError, IndexError, StrictDataclassError) as error:
            raise NashError(_config_failure(source, error)) from None
    config._name_or_path = str(source)
    return config


def _config_failure(source, error) -> str:
    # Validation errors spread one finding over lines ("Validation error for field 'x':" then why).
    reason = " ".join(str(error).split()) or type(error).__name__
    if len(reason) > 200:
        reason = reason[:197] + "..."
    return (
        f"{Path(source) / 'config.json'} does not describe a valid model ({reason}); "
        "fix that field or restore the config.json saved with these weights"
    )


def load_model(
    source: str | Path,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    dtype: Any = None,
    config: Any = None,
):
    """Loads a seq2seq checkpoint (local directory or hub id) in eval mode.

    Args:
        source: A local checkpoint directory, or a hub id where a network exists.
        allow_pickle: Accept `pytorch_model.bin` weights (loaded with `weights_only=True`).
        trust_remote_code: Let transformers run the checkpoint's own modeling code. Only ever set
            when the user asked for it; nash's own compact models load without it.
        dtype: Optional torch dtype to load the weights in.
        config: The checkpoint's config, when `load_config` already read it.

    Raises:
        NashError: for a missing or invalid checkpoint, a model type nash does not support, code
            that would run without `trust_remote_code`, weights that do not fit the config, or a
            pickle that is not a plain weights-only one.
    """
    import pickle

    from transformers import AutoModelForSeq2SeqLM

    from nash_cli import modeling
    from nash_cli.arch import family_of

    if config is None:
        config = load_config(source, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    nash_family = family_of(config).name if getattr(config, "encoder_heads", None) is not None else None
    if nash_family is not None:
        # nash's own class, never the copy of its modeling file beside the weights.
        loader = modeling.classes(nash_family)[1].from_pretrained
    else:
        loader = AutoModelForSeq2SeqLM.from_pretrained
        kwargs["trust_remote_code"] = trust_remote_code
    with quiet_transformers():
        try:
            model, info = loader(
                str(source),
                config=config,
                use_safetensors=None if allow_pickle else True,
                weights_only=True,
                output_loading_info=True,
                # Report shapes that differ instead of raising: nash refuses the model below,
                # naming the first tensor, and never returns it.
                ignore_mismatched_sizes=True,
                **kwargs,
            )
        except pickle.UnpicklingError:
            raise NashError(
                f"the pickle weights of {source} are not a safe weights-only pickle (they name Python objects "
                "beyond tensors, which unpickling would run); nash will not load them: convert them to "
                "safetensors where you trust their origin"
            ) from None
        except (OSError, ValueError) as error:
            if is_local(source):
                raise NashError(f"could not load {source}: {_first_line(error)}") from None
            raise NashError(_code_failure(source, error) or _hub_failure(source, error)) from None
    mismatched = sorted((str(key), tuple(saved), tuple(built)) for key, saved, built in info.get("mismatched_keys") or ())
    missing = sorted(str(key) for key in info.get("missing_keys") or ())
    unexpected = sorted(str(key) for key in info.get("unexpected_keys") or ())
    if mismatched:
        key, saved, built = mismatched[0]
        raise NashError(_shape_failure(source, f"{key} is {saved} in the weights but {built} in the config's model"))
    if missing:
        raise NashError(_shape_failure(source, f"the config's model has {missing[0]}, the weights do not"))
    if unexpected:
        raise NashError(_shape_failure(source, f"the weights have {unexpected[0]}, the config's model does not"))
    return model.eval()


def _shape_failure(source, detail: str) -> str:
    return (
        f"the weights of {source} do not fit its config.json ({detail}); restore the config.json "
        "saved with these weights"
    )


def _hub_failure(source, error) -> str:
    reason = _first_line(error)
    if len(reason) > 120:  # the hub's messages run to paragraphs; the start says what failed
        reason = reason[:117] + "..."
    return (
        f"no directory {source} exists here, and nash could not fetch a model of that name from the hub "
        f"({reason}); check the path, or the model id and your network"
    )


def load_tokenizer(source: str | Path, *, trust_remote_code: bool = False):
    """Loads the tokenizer stored with a checkpoint.

    `trust_remote_code` is always passed to transformers explicitly, so it never prompts; a local
    checkpoint whose `tokenizer_config.json` names its own code is refused unless it is true.

    Raises:
        NashError: when the checkpoint has no tokenizer files, or its tokenizer needs code that
            may not run.
    """
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {}
    if is_local(source):
        if not any((Path(source) / name).is_file() for name in TOKENIZER_FILES):
            raise NashError(
                f"{source} has no tokenizer files; save the tokenizer into the checkpoint "
                "(tokenizer.save_pretrained(dir)) or copy them from the original model"
            )
        if not trust_remote_code:
            refuse_code(source)
        if (Path(source) / "config.json").is_file():
            # AutoTokenizer reads the config first; given nash's own class it never imports the
            # copy of the modeling file beside the weights, even with trust_remote_code.
            config = _nash_config(source, read_config_dict(source))
            if config is not None:
                kwargs["config"] = config
    with quiet_transformers():
        try:
            return AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code, **kwargs)
        except (OSError, ValueError) as error:
            failure = _code_failure(source, error)
            raise NashError(failure or f"could not load the tokenizer of {source}: {_first_line(error)}") from None


def read_manifest(source: str | Path) -> dict[str, Any] | None:
    """Returns the checkpoint's nash.json, or None when it has none (a checkpoint nash did not make)."""
    if not is_local(source):
        return None
    path = Path(source) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise NashError(f"{path} is not valid JSON ({error}); rerun the stage that wrote it") from None


def weights_sha256(source: str | Path) -> str | None:
    """sha256 over a local checkpoint's weight files, in name order; None for a hub id."""
    if not is_local(source):
        return None
    digest = hashlib.sha256()
    for path in weight_files(Path(source), allow_pickle=True):
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- writing
#
# The promises of every output (docs/artifacts.md): an output never is, contains or lies inside an
# input; `--force` replaces only a previous nash output of the same kind; one nash process at a
# time writes an output (a lock beside it, held from the check to the rename); an unwritable path
# fails before any work; and every file and directory gets the usual permissions.

#: What `--force` may replace: the kind of a nash output directory, from its manifest.
DIRECTORY_KINDS = ("checkpoint", "export", "plan")

#: The files nash writes outside a checkpoint, by kind (see `is_nash_file`).
FILE_KINDS = ("metrics", "generations", "bench", "report", "figure")

#: Text nash writes into its PNG figures, by which `--force` recognises them.
FIGURE_SOFTWARE = "nash"

LOCK_SUFFIX = ".nash-lock"
SET_JOURNAL_SUFFIX = ".nash-set"


def directory_kind(manifest: Mapping[str, Any]) -> str:
    """The kind of a nash output directory: "export" or "plan" for those commands', else "checkpoint"."""
    stage = manifest.get("stage")
    return stage if stage in ("export", "plan") else "checkpoint"


def resolve_path(path: str | Path) -> Path:
    """`path` made absolute with `~`, `..` and symlinks resolved (also for parts that do not exist yet)."""
    return Path(path).expanduser().resolve()


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


# ----------------------------------------------------------------- the output lock


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


# ----------------------------------------------------------------- directories


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


# ----------------------------------------------------------------- files


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
    try:
        if journal is not None:
            finish_partial_set(paths[0])
        for path, data in zip(paths, contents.values()):
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


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


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
