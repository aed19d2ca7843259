"""`run.json`: the record of a run directory (each stage's fingerprint, status and timing), and
the mark that nash made the directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nash_cli.errors import NashError

RUN_STATE = "run.json"


def is_run_state(state: Any) -> bool:
    """True when `state` (a parsed `run.json`) is what nash writes: {"stages": {key: {"fingerprint", "status", ...}}}."""
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        return False
    return all(
        isinstance(record, dict) and isinstance(record.get("fingerprint"), str) and record.get("status") in ("running", "done")
        for record in state["stages"].values()
    )


def read_state(run_dir: Path) -> dict[str, Any]:
    """The run's `run.json` (empty when the run is new).

    Raises:
        NashError: `run.json` is not JSON, or not the record nash writes (another tool's file).
    """
    path = run_dir / RUN_STATE
    if not os.path.lexists(path):
        return {"stages": {}}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        raise NashError(f"{path} is not valid JSON; delete it to rerun every stage") from None
    if not is_run_state(state):
        raise NashError(
            f"{path} is not the run.json nash writes, so {run_dir} is not a nash run directory; "
            "choose a new or empty directory with -o"
        )
    return state


def check_run_directory_is_nash(run_dir: Path) -> None:
    """A run directory is new, empty, or one nash made (it holds nash's `run.json`): `nash run`
    never writes its recipe, inputs and stages among a user's own files.

    Raises:
        NashError: the directory holds entries but no run.json, or another tool's run.json.
    """
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if not os.path.lexists(run_dir / RUN_STATE):
        raise NashError(
            f"run directory {run_dir} holds files but no run.json, so nash did not make it and will not write "
            "into it; choose a new or empty directory with -o"
        )
    read_state(run_dir)


def mark_run_directory(run_dir: Path) -> None:
    """Makes the run directory with an empty `run.json`, the file that marks it as nash's, first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(run_dir / RUN_STATE):
        write_state(run_dir, {"stages": {}})


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    from nash_cli.artifact import json_text, write_files_atomic

    write_files_atomic({run_dir / RUN_STATE: json_text(state)})
