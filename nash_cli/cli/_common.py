"""Output helpers shared by the command modules: Rich consoles, JSON results, notes, layer lists.

Human-readable output (tables, progress) goes to stderr when `--json` is given, so that stdout
carries exactly one JSON document for shell pipelines.

The consoles print text as written, without Rich markup: nash's lines carry paths, model names,
notes and messages with square brackets (`nash-cli[ctranslate2]`, `out[1]/`), which markup would
take for style tags and drop. Style is given as a `style=` argument or a `rich.text.Text`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

#: Where tables and messages go by default.
stdout = Console(markup=False)
#: Where progress bars and notes go; also where tables go under --json.
stderr = Console(stderr=True, markup=False)

#: A command module's `print_result`: a stage's result (its `to_dict()`) as tables on a console.
#: Every stage command module has one under that name, which `nash run` looks up.
Printer = Callable[[dict[str, Any], Console], None]


def human(json_mode: bool) -> Console:
    """The console for human-readable output: stderr under --json, else stdout."""
    return stderr if json_mode else stdout


def print_json(result: Any) -> None:
    """Writes `result` as one JSON document on stdout."""
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    sys.stdout.flush()


def emit(result: dict[str, Any], json_mode: bool, printer: Printer) -> None:
    """Prints a stage's result: one JSON document on stdout with `--json`, else `printer`'s tables."""
    if json_mode:
        print_json(result)
    else:
        printer(result, stdout)


def print_notes(notes: list[str], console: Console) -> None:
    """Each note on a line of its own, marked as a note; the note's text is printed as written."""
    from rich.text import Text

    for note in notes:
        console.print(Text.assemble(("note:", "yellow"), " ", note))


def layer_list(text: str | None, option: str) -> list[int] | None:
    """A layer list flag ("0,5,11") as the stages take it, or None when not given."""
    if text is None:
        return None
    from nash_cli.surgery.layers import parse_indices

    return parse_indices(text, option)


def run_training_stage(run: Callable[[Any], Any], options: Any, json_output: bool, printer: Printer) -> None:
    """The end of `distill` and `prune-encoder`: the run, then the result, printed by one process.

    Args:
        run: The stage's `run` function; the command imports it only after checking `options`,
            so that a usage mistake answers before torch is imported.
        options: The stage's options, checked.
        json_output: Print the result as JSON on stdout instead of `printer`'s tables.
        printer: The command module's `print_result`.
    """
    from nash_cli.train.processes import is_main_process

    result = run(options)
    if is_main_process():  # under torchrun every process runs the stage; one prints
        emit(result.to_dict(), json_output, printer)
