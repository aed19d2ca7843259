"""Reading a checkpoint directory without running it: the on-disk format, its weights, configs and manifest.

What a checkpoint is (docs/artifacts.md): a Hugging Face directory plus `nash.json`. This module
knows the file names, finds and checks the weights, reads `config.json` and `nash.json` (each once per
process while it stays the same, see `nash_cli.artifact.cache`), and names any of the checkpoint's
own Python code that loading it would import. Nothing here imports torch or transformers at import
time.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from nash_cli.artifact.cache import read_once
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
    "source.spm",  # Marian: the source and target SentencePiece models beside its vocab.json
    "target.spm",
    "target_vocab.json",
    "chat_template.jinja",
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


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
            shards = _index_shards(index)
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


def _index_shards(index: Path) -> list[str]:
    """The shard file names a weight index names; NashError naming the index when it names none
    or names them with anything but file names."""
    fix = "re-save the checkpoint (or copy its index back)"
    try:
        document = json.loads(index.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise NashError(f"{index} is not a valid weight index ({_first_line(error)}); {fix}") from None
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict):
        raise NashError(f"{index} is not a valid weight index (no weight_map object of tensor -> shard); {fix}")
    if not weight_map:
        raise NashError(f"{index} is not a valid weight index (its weight_map names no tensors); {fix}")
    bad = next((name for name in weight_map.values() if not isinstance(name, str) or not name
                or Path(name).name != name), None)  # a number, an empty name, or a path out of the checkpoint
    if bad is not None:
        raise NashError(f"{index} is not a valid weight index (shard {bad!r} is not a file name); {fix}")
    return sorted(set(weight_map.values()))


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
    return read_json_object(config_path, fix="re-save the checkpoint")


def read_json_object(path: Path, *, fix: str) -> dict[str, Any]:
    """A JSON file that must hold one object; NashError (with `fix`) for anything else.

    Read once per process while the file stays the same (`config.json` is asked for by the checks,
    the code refusal and loading); every caller gets its own copy.
    """
    return read_once("json object", [path], lambda: _parse_json_object(path, fix=fix))


def _parse_json_object(path: Path, *, fix: str) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # UnicodeDecodeError is a ValueError
        raise NashError(f"{path} is not valid UTF-8 JSON ({_first_line(error)}); {fix}") from None
    if not isinstance(document, dict):
        raise NashError(f"{path} holds {_json_kind(document)}, not a JSON object of settings; {fix}")
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
        document = read_json_object(path, fix="re-save the checkpoint")
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_manifest(source: str | Path) -> dict[str, Any] | None:
    """Returns the checkpoint's nash.json, or None when it has none (a checkpoint nash did not make)."""
    if not is_local(source):
        return None
    path = Path(source) / MANIFEST
    if not path.is_file():
        return None

    def parse() -> Any:
        try:
            document = json.loads(path.read_text())
        except ValueError as error:
            raise NashError(f"{path} is not valid JSON ({error}); rerun the stage that wrote it") from None
        check_manifest(path, document)
        return document

    # A stage asks for its parent's manifest several times (checks, its own logic, the lineage of
    # its output): read once per process while the file stays the same; each caller gets a copy.
    return read_once("manifest", [path], parse)


def check_manifest(path: Path, document: Any) -> None:
    """NashError naming `path` when a `nash.json` does not have the shape nash writes.

    Only what nash reads back is checked (the document an object, `state` one of `STATES`,
    `layer_map` a mapping of stack to a list of layer indices or null), so a manifest of an older
    or newer nash with more keys still reads.
    """
    fix = "rerun the stage that wrote it (or delete nash.json if nash did not write this checkpoint)"
    if not isinstance(document, dict):
        raise NashError(f"{path} holds {_json_kind(document)}, not the JSON object nash writes; {fix}")
    state = document.get("state")
    if state is not None and state not in STATES:
        raise NashError(f"{path} records state {state!r}, not one of {', '.join(STATES)}; {fix}")
    layer_map = document.get("layer_map")
    if layer_map is None:
        return
    if not isinstance(layer_map, dict):
        raise NashError(f"{path}: layer_map must map encoder / decoder to lists of layers, not {layer_map!r}; {fix}")
    for stack, layers in layer_map.items():
        if layers is None:
            continue
        if not isinstance(layers, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
            raise NashError(
                f"{path}: layer_map.{stack} must be a list of teacher layer indices (e.g. [0, 3]), not {layers!r}; {fix}"
            )


def _json_kind(document: Any) -> str:
    kinds = {list: "a JSON array", str: "a JSON string", int: "a JSON number", float: "a JSON number", bool: "a JSON boolean"}
    return kinds.get(type(document), "JSON null")
