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
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nash_cli.errors import NashError
from nash_cli.recipe import Recipe, accepted_data_options
from nash_cli.stages import Stage, checkpoint_state, output_state, recipe_stages, state_refusal
from nash_cli.stages import stage as declared_stage

RUN_STATE = "run.json"
RESOLVED_RECIPE = "recipe.yaml"


@dataclass
class PlannedStage:
    """One stage of a run, with everything needed to execute it."""

    key: str
    """Recipe key, e.g. "prune_encoder"."""
    command: str
    """The CLI command it runs, e.g. "prune-encoder"."""
    directory: Path
    """Where the stage writes (a checkpoint directory, or a folder of result files)."""
    kwargs: dict[str, Any]
    """Arguments for the command function, runner-owned paths included."""
    upstream: list[str]
    """Keys of the stages (or "inputs") whose outputs this stage reads."""
    produces_checkpoint: bool
    """Whether `directory` is a checkpoint that later stages read."""
    fingerprint: str = ""
    """sha256 of the options and the upstream fingerprints."""
    calls: list[dict[str, Any]] = field(default_factory=list)
    """For stages run on several models (eval): one kwargs dict per call."""

    @property
    def declared(self) -> Stage:
        """The stage's declaration."""
        return declared_stage(self.key)


def stage_directory(index: int, key: str) -> str:
    """`02-prune-encoder` for the second stage, `prune_encoder`."""
    return f"{index:02d}-{key.replace('_', '-')}"


def _input_fingerprint(source: str) -> str:
    """Identifies an input the run did not make: a local path by its files' sizes and times."""
    path = Path(source)
    if not path.exists():
        return f"name:{source}"
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.name != "nash.json")
    return hashlib.sha256(
        json.dumps([[str(p.relative_to(path.parent)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]).encode()
    ).hexdigest()


def _data_kwargs(recipe: Recipe, key: str) -> dict[str, Any]:
    data = recipe.data
    return {name: getattr(data, name) for name in accepted_data_options(key) if getattr(data, name) is not None}


def _train_and_eval_data(recipe: Recipe, inputs: dict[str, Any]) -> dict[str, Any]:
    """The data arguments of a stage that reads the training data, and the evaluation data if any."""
    arguments: dict[str, Any] = {"data": inputs["train"]}
    if recipe.data.train_split:
        arguments["split"] = recipe.data.train_split
    if inputs.get("eval"):
        arguments["eval_data"] = inputs["eval"]
        if recipe.data.eval_split:
            arguments["eval_split"] = recipe.data.eval_split
    return arguments


def _measured_data(recipe: Recipe, inputs: dict[str, Any]) -> dict[str, Any]:
    """The data a measuring stage reads: the evaluation data, else the training data."""
    if inputs.get("eval"):
        data, split = inputs["eval"], recipe.data.eval_split
    else:
        data, split = inputs["train"], recipe.data.train_split
    return {"data": data, **({"split": split} if split else {})}


def plan_run(recipe: Recipe, run_dir: Path, *, inputs: dict[str, str]) -> list[PlannedStage]:
    """Lays out the stages of `recipe` in `run_dir`, each as its declaration (`Stage`) says.

    A "transform" stage reads the current checkpoint and its output becomes the current one (a
    "teacher" stage's becomes the teacher too); a "branch" stage (export) reads the current
    checkpoint, and its output is measured beside it; a "measure" stage reads the models and
    writes its result file (all models in one call when it takes a list, else one call each).

    Args:
        recipe: The validated recipe.
        run_dir: The run directory.
        inputs: Resolved external inputs: "teacher", "train", "eval" (paths or hub ids).
    """
    stages: list[PlannedStage] = []
    teacher, teacher_key = inputs["teacher"], "inputs"
    current, current_key = teacher, "inputs"  # the checkpoint the next stage reads
    branches: list[tuple[str, str]] = []  # (key, directory) of outputs measured beside the student
    for index, key in enumerate(recipe.stages, start=1):
        declared = declared_stage(key)
        directory = run_dir / stage_directory(index, key)
        kwargs = {**recipe.stages[key].model_dump(), **_data_kwargs(recipe, key)}
        upstream = [current_key]
        calls: list[dict[str, Any]] = []
        if declared.role == "measure":
            upstream.append(teacher_key)
            upstream.extend(branch for branch, _ in branches)
            data = _measured_data(recipe, inputs)
            if declared.takes_list:  # bench: every model in one interleaved run, against the teacher
                kwargs.update({declared.model_input: [current] + [path for _, path in branches]})
                kwargs.update({declared.teacher_input: teacher, "output": directory / declared.result_file, **data})
            else:  # eval: one call per model, each into its own folder
                models = [("teacher", teacher), ("student", current)] + [("exported", path) for _, path in branches]
                for label, model in models:
                    call = {**kwargs, declared.model_input: model, "data": data["data"]}
                    call["output"] = directory / label / declared.result_file
                    calls.append({**call, **data})
        else:
            kwargs.update({declared.model_input: current, "output": directory})
            if declared.data == "train":
                kwargs.update(_train_and_eval_data(recipe, inputs))
            for switch in declared.data_switches:  # `vocab_map: true` stands for the recipe's data
                if kwargs.pop(switch):
                    data = _train_and_eval_data(recipe, inputs)
                    kwargs.update({switch: data.pop("data")}, **data)
            if declared.teacher_input and declared.role == "transform":
                kwargs[declared.teacher_input] = teacher
                upstream.append(teacher_key)
        produces = declared.role in ("transform", "teacher")
        stages.append(PlannedStage(key, declared.command, directory, kwargs, upstream, produces, calls=calls))
        if declared.role == "branch":
            branches.append((key, str(directory)))
        if produces:
            current, current_key = str(directory), key
        if declared.role == "teacher":
            teacher, teacher_key = str(directory), key
    fingerprints = {"inputs": hashlib.sha256(
        json.dumps({name: _input_fingerprint(value) for name, value in sorted(inputs.items()) if value}).encode()
    ).hexdigest()}
    for planned in stages:
        payload = {
            "stage": planned.key,
            "kwargs": _portable(planned.calls or planned.kwargs, run_dir),
            "upstream": [fingerprints[name] for name in planned.upstream],
        }
        planned.fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        fingerprints[planned.key] = planned.fingerprint
    return stages


def _portable(value: Any, run_dir: Path) -> Any:
    """Paths inside the run directory, relative to it, so a moved run keeps its fingerprints."""
    if isinstance(value, dict):
        return {k: _portable(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, run_dir) for v in value]
    text = str(value) if isinstance(value, Path) else value
    if isinstance(text, str) and text.startswith(str(run_dir)):
        return "$RUN" + text[len(str(run_dir)) :]
    return value


def _stage_done(stage: PlannedStage) -> bool:
    if stage.calls:
        return all(Path(call["output"]).is_file() for call in stage.calls)
    if stage.declared.result_file:
        return Path(stage.kwargs["output"]).is_file()
    return (stage.directory / "nash.json").is_file()


def _has_saved_state(stage: PlannedStage) -> bool:
    """Whether an interrupted training stage left a state to resume from (not just an empty start)."""
    from nash_cli.train.state import LATEST

    return (Path(f"{stage.directory}.partial") / LATEST).is_file()


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


def _mark_run_directory(run_dir: Path) -> None:
    """Makes the run directory with an empty `run.json`, the file that marks it as nash's, first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(run_dir / RUN_STATE):
        _write_state(run_dir, {"stages": {}})


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    from nash_cli.artifact import json_text, write_files_atomic

    write_files_atomic({run_dir / RUN_STATE: json_text(state)})


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
    _mark_run_directory(run_dir)
    write_files_atomic({run_dir / RESOLVED_RECIPE: yaml.safe_dump(resolved, sort_keys=False)})
    state = read_state(run_dir)
    stages = plan_run(recipe, run_dir, inputs=inputs)
    summary = []
    stale = False  # once a stage reruns, every later stage reads new outputs and reruns too
    for stage in stages:
        record = state["stages"].get(stage.key, {})
        if (
            not stale
            and record.get("fingerprint") == stage.fingerprint
            and record.get("status") == "done"
            and _stage_done(stage)
        ):
            log(f"[skip] {stage.directory.name}: up to date")
            summary.append({"stage": stage.key, "status": "skipped", "directory": str(stage.directory)})
            continue
        resume = (
            stage.declared.resumable
            and record.get("fingerprint") == stage.fingerprint
            and _has_saved_state(stage)
            and not stage.directory.exists()
        )
        stale = True
        log(f"[{'resume' if resume else 'run'}] {stage.directory.name}: nash {stage.command}")
        state["stages"][stage.key] = {"fingerprint": stage.fingerprint, "status": "running", "started": _now()}
        _write_state(run_dir, state)
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
        _write_state(run_dir, state)
        summary.append({"stage": stage.key, "status": "done", "directory": str(stage.directory), "seconds": seconds})
    return summary


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
    _check_run_directory(run_dir, recipe, recipe_path)
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
        _mark_run_directory(run_dir)  # before 00-inputs/: an interrupted start stays a nash run directory
        inputs = builtin.materialize(recipe.teacher, recipe.data.train, recipe.data.eval, inputs_dir)
    except BaseException:
        release_output(run_dir)
        raise
    return PreparedRun(recipe, resolved, run_dir, inputs)


#: A recipe name is a directory name under runs/: one path component, not `.` or `..`.
_UNSAFE_NAME = re.compile(r"[/\\]|\.\.|^\.?$")


def check_run_name(name: str, *, source: str = "recipe") -> None:
    """Refuses a recipe name that would put the default run directory (`runs/<name>`) elsewhere.

    Raises:
        NashError: the name holds `/`, `\\` or `..`, or is empty or `.`.
    """
    if _UNSAFE_NAME.search(name.strip()):
        raise NashError(
            f"{source}: name {name!r} must be a plain directory name (the run goes to runs/<name>), without '/', '\\' or '..'; "
            "choose a name such as my-run"
        )


def check_inputs(recipe: Recipe, *, source: str = "recipe") -> None:
    """Checks every input the recipe names, and what each stage will be given, before any stage runs.

    The teacher must be a readable checkpoint of a supported family and the data files must exist
    and be readable (hub names are left to the stages: checking them needs the network). Outputs
    of earlier stages do not exist yet; what is checked for them is their state, walked through
    the stages as each declaration says (what it `reads`, what it `writes`), with the same
    `state_refusal` the stages apply to the real checkpoint: a recipe that passes here is not
    refused half-way for what it feeds a stage.

    Raises:
        NashError: naming the recipe, the input and the fix.
    """
    from nash_cli import artifact
    from nash_cli.data import check_data_source
    from nash_cli.demo.inputs import is_builtin

    def refuse(message: str) -> NashError:
        return NashError(f"{source}: {message}")

    teacher_state = "dense"  # a hub teacher, or the built-in one
    if not is_builtin(recipe.teacher) and artifact.is_local(recipe.teacher):
        allow_pickle = any(getattr(options, "allow_pickle", False) for options in recipe.stages.values())
        try:
            config = artifact.check_checkpoint(recipe.teacher, allow_pickle=allow_pickle)
        except NashError as error:
            raise refuse(f"teacher: {error}") from None
        teacher_state = checkpoint_state(artifact.read_manifest(recipe.teacher), config)
    for name, data in (("data.train", recipe.data.train), ("data.eval", recipe.data.eval)):
        if data is not None and not is_builtin(data):
            try:
                check_data_source(data, flag=name)
            except NashError as error:
                raise refuse(str(error)) from None

    def writing(state: str) -> str:
        return " or ".join(key for key, other in recipe_stages().items() if other.writes == state)

    teacher_fix = f"run `nash compact {recipe.teacher} -o DIR` and make DIR the teacher"
    state, current = teacher_state, f"the teacher {recipe.teacher}"
    for key in recipe.stages:
        declared = declared_stage(key)
        if state_refusal(declared, current, state, role="checkpoint"):
            if state == "masked" and "compact" in declared.reads:
                fix = teacher_fix if current.startswith("the teacher") else f"add `{writing('compact')}: {{}}` to the stages"
                raise refuse(f"stages.{key} would read a masked checkpoint ({current}); {fix}")
            if "masked" in declared.reads:
                raise refuse(f"stages.{key} would read {current}, which has no masks; put {writing('masked')} before it or drop {key}")
            raise refuse(f"stages.{key} would read {current}, a {state} checkpoint; {declared.refusal}")
        distils = declared.teacher_input and declared.role == "transform"
        if distils and state_refusal(declared, recipe.teacher, teacher_state, role="teacher"):
            raise refuse(f"stages.{key} would distil from a {teacher_state} teacher ({recipe.teacher}); {teacher_fix}")
        if declared.role in ("transform", "teacher"):
            state, current = output_state(declared, state), f"the output of stages.{key}"
            if declared.role == "teacher":
                teacher_state = state


def _check_run_directory(run_dir: Path, recipe: Recipe, recipe_path: str | Path) -> None:
    """The run directory must be writable, new, empty or a nash run's, and must not be, contain or
    lie inside the recipe or an input it names (its own saved recipe.yaml, rerun from inside a nash
    run directory, excepted)."""
    from nash_cli.artifact import check_writable, refuse_output_over_inputs, resolve_path

    named = {"teacher": recipe.teacher, "train data": recipe.data.train, "eval data": recipe.data.eval, "recipe": recipe_path}
    if resolve_path(recipe_path) == resolve_path(run_dir / RESOLVED_RECIPE):
        del named["recipe"]
    refuse_output_over_inputs([run_dir], named)
    check_writable(run_dir)
    check_run_directory_is_nash(run_dir)


def _flag_lines(declared: Stage, kwargs: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The command line equivalent to `kwargs`, leaving out options at their defaults."""
    import shlex

    positional = (declared.model_input,)  # the command's argument
    comma_lists = _integer_lists(declared.options)  # the CLI reads them as one word: 0,5,11
    words = ["nash", declared.command]
    for name in positional:
        if name in kwargs:
            value = kwargs[name]
            words.extend(str(v) for v in (value if isinstance(value, list) else [value]))
    for name, value in kwargs.items():
        if value is False and defaults.get(name) is True:  # an on-by-default switch turned off
            words.append("--no-" + name.replace("_", "-"))
            continue
        if name in positional or value is None or value is False or (name in defaults and defaults[name] == value):
            continue
        flag = "--" + name.replace("_", "-")
        if flag == "--json-output":
            flag = "--json"
        if name in comma_lists and isinstance(value, list):
            words.extend([flag, ",".join(str(v) for v in value)])
        elif value is True:
            words.append(flag)
        elif isinstance(value, list):
            for item in value:
                words.extend([flag, str(item)])
        else:
            words.extend([flag, str(value)])
    return " ".join(shlex.quote(w) for w in words)


def _integer_lists(options: type) -> set[str]:
    """The fields of an options type that hold a list of integers (layer indices and maps)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(options)
    return {f.name for f in dataclasses.fields(options) if "list[int]" in str(hints[f.name])}


def _defaults(key: str) -> dict[str, Any]:
    from nash_cli.recipe import stage_model

    return {name: info.default for name, info in stage_model(key).model_fields.items() if not info.is_required()}


def describe_plan(prepared: PreparedRun) -> dict[str, Any]:
    """What `nash run` would do: each stage's status and equivalent command lines."""
    state = read_state(prepared.run_dir)
    stages = plan_run(prepared.recipe, prepared.run_dir, inputs=prepared.inputs)
    described = []
    stale = False
    for stage in stages:
        record = state["stages"].get(stage.key, {})
        up_to_date = (
            not stale
            and record.get("fingerprint") == stage.fingerprint
            and record.get("status") == "done"
            and _stage_done(stage)
        )
        stale = stale or not up_to_date
        status = "skip (up to date)" if up_to_date else "run"
        if not up_to_date and stage.declared.resumable and _has_saved_state(stage):
            status = "resume" if record.get("fingerprint") == stage.fingerprint else "run (restart)"
        described.append(
            {
                "stage": stage.key,
                "directory": str(stage.directory),
                "status": status,
                "fingerprint": stage.fingerprint,
                "commands": [
                    _flag_lines(stage.declared, call, _defaults(stage.key)) for call in (stage.calls or [stage.kwargs])
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
