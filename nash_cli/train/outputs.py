"""Writing a finished run: the trained student as a nash checkpoint, and the end of its staging dir."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nash_cli.train import state as st
from nash_cli.train.config import TrainResult
from nash_cli.train.extension import TrainingExtension

#: The tokenizer's own settings file, where transformers reads `src_lang` / `tgt_lang` back from.
TOKENIZER_CONFIG = "tokenizer_config.json"


def save_output(
    result: TrainResult,
    output: str | Path,
    *,
    source: str | Path,
    stage: str,
    arguments: dict[str, Any],
    state: str = "dense",
    layer_map: dict[str, list[int]] | None = None,
    extra: dict[str, Any] | None = None,
    extension: TrainingExtension | None = None,
    force: bool = False,
    tokenizer_source: str | Path | None = None,
    dtypes: dict[str, Any] | None = None,
    tokenizer_settings: dict[str, str] | None = None,
) -> Path:
    """Writes the trained student as a nash checkpoint (main process), then drops the staging dir.

    The checkpoint holds the usual files plus `train_log.jsonl` and the extension's files; its
    manifest records the training summary under "training" plus `extra` and the extension's
    `manifest_extra()`. The output appears atomically (see `nash_cli.artifact.save_checkpoint`).
    `dtypes` (the student's half-precision tensors by name, `train.inputs.train_in_float32`)
    converts those float32-trained tensors back to their storage dtypes before they are written
    (each its own: a float16 T5 keeps `wo` in float32); None writes them as they are.
    `tokenizer_settings` (the language pair's `src_lang` / `tgt_lang`) are written into the copied
    `tokenizer_config.json`, so the output tokenizes for the pair it was trained on.
    """
    from nash_cli.artifact import save_checkpoint

    acc = result.accelerator
    if acc is not None:
        acc.wait_for_everyone()
    if result.is_main_process:
        log = result.partial / st.LOG

        def write_log(directory: Path) -> None:
            if log.is_file():
                shutil.copyfile(log, directory / st.LOG)
            else:
                (directory / st.LOG).write_text("")

        files: dict[str, Callable[[Path], None]] = {st.LOG: write_log}
        manifest = {"training": result.summary()}
        if tokenizer_settings:
            files[TOKENIZER_CONFIG] = lambda directory: _update_tokenizer_config(directory, tokenizer_settings)
        if extension is not None:
            files.update(extension.extra_files())
            manifest.update(extension.manifest_extra())
        manifest.update(extra or {})
        if dtypes:
            for name, tensor in [*result.model.named_parameters(), *result.model.named_buffers()]:
                if name in dtypes:
                    tensor.data = tensor.data.to(dtypes[name])
        save_checkpoint(
            result.model,
            output,
            source=source,
            stage=stage,
            arguments=arguments,
            state=state,
            layer_map=layer_map,
            extra=manifest,
            extra_files=files,
            force=force,
            tokenizer_source=tokenizer_source,
        )
        shutil.rmtree(result.partial, ignore_errors=True)
    if acc is not None:
        acc.wait_for_everyone()
    return Path(output)


def _update_tokenizer_config(directory: Path, settings: dict[str, str]) -> None:
    """Sets `settings` in the tokenizer config copied into `directory` (none copied: nothing to set)."""
    from nash_cli.artifact import json_text

    path = directory / TOKENIZER_CONFIG
    if path.is_file():
        config = json.loads(path.read_text(encoding="utf-8"))
        config.update(settings)
        path.write_text(json_text(config), encoding="utf-8")


__all__ = ["save_output"]
