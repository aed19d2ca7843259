"""The pipeline behind `nash run`: execute a recipe's stages in order into a run directory.

Each stage writes into its own numbered directory (`01-select-layers/`, `02-prune-encoder/`, ...).
A stage is identified by a fingerprint of its options and of its inputs' fingerprints; on a rerun
a stage whose output exists with the same fingerprint is skipped, a stage whose options or inputs
changed is redone (and so is everything after it), and a training stage interrupted part-way is
resumed from its last saved state. The resolved recipe is saved as `recipe.yaml` in the run
directory, and `run.json` records each stage's fingerprint, status and timing.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nash_cli.errors import NashError
from nash_cli.pipeline.checks import RESOLVED_RECIPE, check_inputs, check_run_directory, check_run_name
from nash_cli.pipeline.layout import PlannedStage, default_options, flag_line, has_saved_state, plan_run, stage_done
from nash_cli.pipeline.state import RUN_STATE, check_run_directory_is_nash, mark_run_directory, read_state, write_state
from nash_cli.recipe import Recipe

__all__ = [
    "RESOLVED_RECIPE", "RUN_STATE", "PlannedStage", "PreparedRun", "check_inputs", "describe_plan", "execute_run",
    "plan_run", "prepare_run", "read_state", "run_recipe",
]


def _call(stage: PlannedStage, kwargs: dict[str, Any]) -> Any:
    """Runs one call of a stage: its options from the planned arguments, then its `run`."""
    declared = stage.declared
    return declared.run(declared.options(**kwargs))


def execute_run(
    recipe: Recipe,
    resolved: dict[str, Any],
    run_dir: Path,
    *,
    inputs: dict[str, str],
    log: Callable[[str], None] = print,
    on_result: Callable[[str, Any], None] | None = None,
) -> list[dict[str, Any]]:
    """Runs every stage that is not up to date; returns a summary per stage.

    Args:
        recipe: The validated recipe.
        resolved: The recipe as saved beside the outputs.
        run_dir: The run directory.
        inputs: Resolved external inputs.
        log: Called with one line per stage (run, resume, skip).
        on_result: Called with each stage's key and `run` result, e.g. to print its tables.
    """
    from nash_cli.artifact import claim_output, holds_output, release_output

    claimed = not holds_output(run_dir)
    claim_output(run_dir)  # before anything is written: a second run is refused with the directory untouched
    try:
        return _execute(recipe, resolved, run_dir, inputs=inputs, log=log, on_result=on_result)
    finally:
        if claimed:
            release_output(run_dir)


def _execute(
    recipe: Recipe,
    resolved: dict[str, Any],
    run_dir: Path,
    *,
    inputs: dict[str, str],
    log: Callable[[str], None],
    on_result: Callable[[str, Any], None] | None,
) -> list[dict[str, Any]]:
    from nash_cli.artifact import write_files_atomic

    check_run_directory_is_nash(run_dir)
    mark_run_directory(run_dir)
    write_files_atomic({run_dir / RESOLVED_RECIPE: yaml.safe_dump(resolved, sort_keys=False)})
    state = read_state(run_dir)
    stages = plan_run(recipe, run_dir, inputs=inputs)
    summary = []
    stale = False  # once a stage reruns, every later stage reads new outputs and reruns too
    for stage in stages:
        record = state["stages"].get(stage.key, {})
        if not stale and _up_to_date(stage, record):
            log(f"[skip] {stage.directory.name}: up to date")
            summary.append({"stage": stage.key, "status": "skipped", "directory": str(stage.directory)})
            continue
        resume = (
            stage.declared.resumable
            and record.get("fingerprint") == stage.fingerprint
            and has_saved_state(stage)
            and not stage.directory.exists()
        )
        stale = True
        log(f"[{'resume' if resume else 'run'}] {stage.directory.name}: nash {stage.command}")
        state["stages"][stage.key] = {"fingerprint": stage.fingerprint, "status": "running", "started": _now()}
        write_state(run_dir, state)
        started = time.perf_counter()
        for kwargs in stage.calls or [stage.kwargs]:
            kwargs = dict(kwargs)
            target = Path(kwargs["output"])
            kwargs["force"] = target.exists() or (stage.declared.resumable and not resume)
            if stage.declared.resumable:
                kwargs["resume"] = resume
            result = _call(stage, kwargs)
            if on_result is not None:
                on_result(stage.key, result)
        seconds = round(time.perf_counter() - started, 1)
        state["stages"][stage.key].update(status="done", finished=_now(), seconds=seconds)
        write_state(run_dir, state)
        summary.append({"stage": stage.key, "status": "done", "directory": str(stage.directory), "seconds": seconds})
    return summary


def _up_to_date(stage: PlannedStage, record: dict[str, Any]) -> bool:
    """Whether `run.json`'s `record` says the stage finished with these arguments and inputs, and
    its output is still there (a rerun skips it)."""
    return record.get("fingerprint") == stage.fingerprint and record.get("status") == "done" and stage_done(stage)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class PreparedRun:
    """A recipe resolved against a run directory, ready to plan or execute."""

    recipe: Recipe
    """The validated recipe."""
    resolved: dict[str, Any]
    """The recipe with defaults and overrides applied, as saved beside the outputs."""
    run_dir: Path
    """The run directory."""
    inputs: dict[str, str | None]
    """Teacher and data, resolved (built-in `demo:` inputs written to `00-inputs/`)."""


def prepare_run(recipe_path: str | Path, output: str | Path | None, overrides: list[str], *, materialize: bool = True) -> PreparedRun:
    """Loads the recipe, picks the run directory and resolves the inputs.

    With `materialize=False` (dry runs) built-in inputs are not written; their future paths are used.
    """
    from nash_cli.demo import inputs as builtin
    from nash_cli.recipe import load_recipe

    recipe, resolved = load_recipe(recipe_path, overrides)
    check_run_name(recipe.name, source=str(recipe_path))
    check_inputs(recipe, source=str(recipe_path))
    run_dir = Path(output) if output is not None else Path("runs") / recipe.name
    run_dir = run_dir.absolute()
    if run_dir.exists() and not run_dir.is_dir():
        raise NashError(f"run directory {run_dir} is a file; choose a directory with -o")
    check_run_directory(run_dir, recipe, recipe_path)
    inputs_dir = run_dir / "00-inputs"
    if not materialize:
        inputs = builtin.planned_paths(recipe.teacher, recipe.data.train, recipe.data.eval, inputs_dir)
        return PreparedRun(recipe, resolved, run_dir, inputs)
    from nash_cli.artifact import claim_output, release_output

    # Taken before the first write (run.json, 00-inputs/, recipe.yaml) and held until `run_recipe`
    # ends: a second run of the same directory is refused with the directory untouched.
    claim_output(run_dir)
    try:
        check_run_directory_is_nash(run_dir)  # again under the lock
        mark_run_directory(run_dir)  # before 00-inputs/: an interrupted start stays a nash run directory
        inputs = builtin.materialize(recipe.teacher, recipe.data.train, recipe.data.eval, inputs_dir)
    except BaseException:
        release_output(run_dir)
        raise
    return PreparedRun(recipe, resolved, run_dir, inputs)


def describe_plan(prepared: PreparedRun) -> dict[str, Any]:
    """What `nash run` would do: each stage's status and equivalent command lines."""
    state = read_state(prepared.run_dir)
    stages = plan_run(prepared.recipe, prepared.run_dir, inputs=prepared.inputs)
    described = []
    stale = False
    for stage in stages:
        record = state["stages"].get(stage.key, {})
        up_to_date = not stale and _up_to_date(stage, record)
        stale = stale or not up_to_date
        status = "skip (up to date)" if up_to_date else "run"
        if not up_to_date and stage.declared.resumable and has_saved_state(stage):
            status = "resume" if record.get("fingerprint") == stage.fingerprint else "run (restart)"
        described.append(
            {
                "stage": stage.key,
                "directory": str(stage.directory),
                "status": status,
                "fingerprint": stage.fingerprint,
                "commands": [
                    flag_line(stage.declared, call, default_options(stage.key)) for call in (stage.calls or [stage.kwargs])
                ],
            }
        )
    return {
        "name": prepared.recipe.name,
        "description": prepared.recipe.description,
        "run_dir": str(prepared.run_dir),
        "inputs": prepared.inputs,
        "recipe": prepared.resolved,
        "stages": described,
    }


def run_recipe(
    prepared: PreparedRun, *, log: Callable[[str], None] = print, on_result: Callable[[str, Any], None] | None = None
) -> dict[str, Any]:
    """Executes the prepared run (releasing the run directory's lock `prepare_run` took); returns
    the run directory and a summary per stage."""
    from nash_cli.artifact import release_output

    try:
        summary = execute_run(
            prepared.recipe, prepared.resolved, prepared.run_dir, inputs=prepared.inputs, log=log, on_result=on_result
        )
    finally:
        release_output(prepared.run_dir)
    return {"name": prepared.recipe.name, "run_dir": str(prepared.run_dir), "stages": summary}
