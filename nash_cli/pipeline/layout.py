"""A recipe's stages laid out in a run directory: their arguments, upstream and fingerprints, and
the command line each stage's arguments stand for (`nash run --dry-run`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nash_cli.recipe import Recipe, accepted_data_options
from nash_cli.stages import Stage
from nash_cli.stages import stage as declared_stage


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


def stage_done(stage: PlannedStage) -> bool:
    if stage.calls:
        return all(Path(call["output"]).is_file() for call in stage.calls)
    if stage.declared.result_file:
        return Path(stage.kwargs["output"]).is_file()
    return (stage.directory / "nash.json").is_file()


def has_saved_state(stage: PlannedStage) -> bool:
    """Whether an interrupted training stage left a state to resume from (not just an empty start)."""
    from nash_cli.train.state import LATEST

    return (Path(f"{stage.directory}.partial") / LATEST).is_file()


def flag_line(declared: Stage, kwargs: dict[str, Any], defaults: dict[str, Any]) -> str:
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


def default_options(key: str) -> dict[str, Any]:
    from nash_cli.recipe import stage_model

    return {name: info.default for name, info in stage_model(key).model_fields.items() if not info.is_required()}
