"""Output helpers shared by the command modules: Rich consoles, progress bars, JSON results.

Human-readable output (tables, progress) goes to stderr when `--json` is given, so that stdout
carries exactly one JSON document for shell pipelines.
"""

from __future__ import annotations

import json
import sys
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


def progress(*, transient: bool = False, disable: bool = False):
    """A Rich progress bar with rate and ETA, drawn on stderr (`nash_cli.progress.rich_bar`).

    Usage: `with progress() as bar: task = bar.add_task("training", total=n, status="");
    bar.update(task, advance=1, status="loss 2.31")`. The `status` field is optional text.
    Loops that must also show in logs (not a terminal) use `nash_cli.progress.Progress`.
    """
    from nash_cli.progress import rich_bar

    return rich_bar(console=stderr, transient=transient, disable=disable)
