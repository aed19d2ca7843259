"""Output helpers shared by the command modules: Rich consoles, JSON results, notes, layer lists.

Human-readable output (tables, progress) goes to stderr when `--json` is given, so that stdout
carries exactly one JSON document for shell pipelines.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

#: Where tables and messages go by default.
stdout = Console()
#: Where progress bars and notes go; also where tables go under --json.
stderr = Console(stderr=True)


def human(json_mode: bool) -> Console:
    """The console for human-readable output: stderr under --json, else stdout."""
    return stderr if json_mode else stdout


def print_json(result: Any) -> None:
    """Writes `result` as one JSON document on stdout."""
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    sys.stdout.flush()


def emit(result: dict[str, Any], json_mode: bool, printer: Callable[[dict[str, Any], Console], None]) -> None:
    """Prints a stage's result: one JSON document on stdout with `--json`, else `printer`'s tables."""
    if json_mode:
        print_json(result)
    else:
        printer(result, stdout)


def print_notes(notes: list[str], console: Console) -> None:
    """Each note on a line of its own, marked as a note."""
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")


def layer_list(text: str | None, option: str) -> list[int] | None:
    """A layer list flag ("0,5,11") as the stages take it, or None when not given."""
    if text is None:
        return None
    from nash_cli.surgery.layers import parse_indices

    return parse_indices(text, option)


def checked_options(options_class: type, flags: dict[str, Any], *, leave_out: tuple[str, ...] = ()):
    """A command's flags (its `locals()`) as the stage's options, checked before torch is imported,
    so a usage mistake answers at once. `json_output` and the names in `leave_out` are not options."""
    options = options_class(**{k: v for k, v in flags.items() if k != "json_output" and k not in leave_out})
    options.check()
    return options


def run_training_stage(options_class: type, stage: str, flags: dict[str, Any], printer) -> None:
    """The body of `distill` and `prune-encoder`: their flags to options, the run, the result.

    Args:
        options_class: The stage's options type.
        stage: The module under `nash_cli.stages`.
        flags: The command's arguments (`locals()`), with the layer maps as the command line wrote them.
        printer: Prints the result's tables.
    """
    flags = dict(flags)
    json_output = flags.pop("json_output")
    for name in ("decoder_layer_map", "encoder_layer_map"):
        flags[name] = layer_list(flags[name], "--" + name.replace("_", "-"))
    options = checked_options(options_class, flags)

    import importlib

    from nash_cli.train.processes import is_main_process

    result = importlib.import_module(f"nash_cli.stages.{stage}").run(options)
    if is_main_process():  # under torchrun every process runs the stage; one prints
        emit(result.to_dict(), json_output, printer)
