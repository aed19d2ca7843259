"""Recipes: a whole NASH pipeline in one YAML file, parsed into strict, typed models.

A recipe names the teacher, the data, and the options of each stage, with the same names as the
CLI flags (`--target-sparsity` is `target_sparsity`). The options of each stage are not written
twice: their models are derived from the signature of the stage's command function, so a recipe
accepts exactly what the command accepts, with the same types and defaults. Unknown keys and
wrong types are errors that name their path in the file (`stages.prune_encoder.target_sparsity`).

```yaml
name: t5-base-samsum-nash3
teacher: ckpt/                       # a fine-tuned checkpoint (path or hub id)
data:
  train: samsum                      # file or hub dataset
  train_split: train
  eval: samsum
  eval_split: validation
  source_column: dialogue
  target_column: summary
  source_prefix: "summarize: "
stages:
  select_layers: {decoder_layers: 3}
  prune_encoder: {target_sparsity: 0.3, epochs: 20, sparsity_warmup: 0.8, lr: 3.0e-5, batch_size: 4}
  compact: {}
  distill: {epochs: 20, lr: 3.0e-4, batch_size: 4}
  export: {quantization: int8, vocab_map: true}  # optional: a CTranslate2 model (with a vocabulary
                                     # map from data.train), benched and evaluated too
  bench: {beams: 4, batch: 32}
  eval: {metric: [rouge], beams: 4}
```
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from nash_cli import stages
from nash_cli.data.options import DataOptions, InputReading
from nash_cli.errors import NashError, require_at_least
from nash_cli.stages import Stage

#: Options the runner fills in for every stage from the run itself (paths, data, run control);
#: a recipe may not set them. A stage's own model and teacher inputs (`Stage.model_input`,
#: `Stage.teacher_input`) are the runner's too.
RUNNER_OWNED = frozenset(
    {"output", "force", "resume", "json_output", "show_progress", "data", "eval_data", "split", "eval_split"}
)

#: Where the data is and how much of it is read: the recipe's own `data:` keys (train, eval and
#: their splits), the runner's, or a stage's own option (limit); not read options.
_DATA_PLACES = frozenset({"data", "eval_data", "split", "eval_split", "limit"})

#: Data options: set once under `data:` and passed to every stage that takes them. They are the
#: read options of the data option groups (`nash_cli.data.options.DataOptions`: columns, template,
#: prefix, languages, lengths), so an option declared there is a recipe key too.
DATA_OPTIONS = tuple(field.name for field in dataclasses.fields(DataOptions) if field.name not in _DATA_PLACES)

STRICT = ConfigDict(extra="forbid", strict=True)


class _RecipeDataPlaces(BaseModel):
    """A recipe's `data:` section: where the training and evaluation data come from, and how to
    read them (the read options, `DATA_OPTIONS`, go to every stage that takes them)."""

    model_config = STRICT

    train: str
    """Training data: a JSON / JSONL / CSV / Parquet file, or a hub dataset name."""
    train_split: Optional[str] = None
    """Split of a hub dataset to train on (e.g. "train")."""
    eval: Optional[str] = None
    """Evaluation data; defaults to no evaluation during training and `train` for `eval`."""
    eval_split: Optional[str] = None
    """Split of a hub dataset to evaluate on (e.g. "validation")."""


def _plain(annotation):
    """Strips Annotated and turns Path into str, keeping Optional and lists."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _plain(typing.get_args(annotation)[0])
    if annotation is Path:
        return str
    if origin in (Union, getattr(__import__("types"), "UnionType", Union)):
        return Optional[_plain(next(a for a in typing.get_args(annotation) if a is not type(None)))]
    if origin is list:
        (item,) = typing.get_args(annotation)
        return list[_plain(item)]
    return annotation


def _recipe_data() -> type[BaseModel]:
    """`data:`'s model: its places, and each read option with the type the data options give it,
    left out (None) unless the recipe sets it, so each stage keeps its own default."""
    hints = typing.get_type_hints(DataOptions)
    options = {name: (Optional[_plain(hints[name])], Field(None)) for name in DATA_OPTIONS}
    return create_model("RecipeData", __base__=_RecipeDataPlaces, __doc__=_RecipeDataPlaces.__doc__, **options)


#: A recipe's `data:` section (see `_RecipeDataPlaces` and `DATA_OPTIONS`).
RecipeData = _recipe_data()


def runner_owned(stage: Stage) -> frozenset[str]:
    """The options of `stage` that a recipe may not set: the runner fills them in."""
    return RUNNER_OWNED | {name for name in (stage.model_input, stage.teacher_input) if name}


@cache
def stage_model(stage: str) -> type[BaseModel]:
    """A strict pydantic model of the options a recipe may give `stage`, from its options type."""
    declared = stages.stage(stage)
    options = declared.options
    hints = typing.get_type_hints(options)
    owned = runner_owned(declared)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(options):
        if field.name in owned or field.name in DATA_OPTIONS:
            continue
        if field.name in declared.data_switches:
            fields[field.name] = (bool, Field(False))
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = ...
        if isinstance(default, Path):
            default = str(default)
        fields[field.name] = (_plain(hints[field.name]), Field(default))
    model_name = "".join(part.title() for part in stage.split("_")) + "RecipeOptions"
    return create_model(model_name, __config__=STRICT, **fields)


def accepted_data_options(stage: str) -> tuple[str, ...]:
    """The data options (`DATA_OPTIONS`) the stage takes."""
    names = {field.name for field in dataclasses.fields(stages.stage(stage).options)}
    return tuple(name for name in DATA_OPTIONS if name in names)


class Recipe(BaseModel):
    """A parsed recipe. `stages` holds validated option models, in pipeline order."""

    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)

    name: str
    """A name for the run (used in reports)."""
    teacher: str
    """The fine-tuned teacher (local path or hub id); with `finetune_teacher`, the model to fine-tune first."""
    data: RecipeData
    """The data; see RecipeData."""
    description: Optional[str] = None
    """Free text shown in the plan and the report."""
    stages: dict[str, Any] = Field(default_factory=dict)
    """Stage name -> options (validated against the stage's command)."""


def parse_recipe(raw: dict[str, Any], *, source: str = "recipe") -> Recipe:
    """Validates a recipe given as a dict (already YAML-decoded).

    Raises:
        NashError: naming the first wrong key's path, e.g. `stages.prune_encoder.target_sparsity`.
    """
    if not isinstance(raw, dict):
        raise NashError(f"{source}: the recipe must be a mapping with name, teacher, data and stages")
    stages_raw = raw.get("stages") or {}
    if not isinstance(stages_raw, dict):
        raise NashError(f"{source}: stages must be a mapping of stage name -> options")
    try:
        recipe = Recipe.model_validate({**raw, "stages": {}})
    except ValidationError as error:
        raise NashError(f"{source}: {_first_problem(error)}") from None
    for name in ("max_source_length", "max_target_length"):
        # Checked here: the stages' own checks never see `data:`, so 0 would pass --dry-run.
        require_at_least(f"{source}: data.{name}", getattr(recipe.data, name))
    try:  # the languages' form too, for the same reason (their codes are checked against the teacher later)
        InputReading(source_lang=recipe.data.source_lang, target_lang=recipe.data.target_lang).check()
    except NashError as error:
        raise NashError(f"{source}: data: {error}") from None
    declared = stages.recipe_stages()
    parsed: dict[str, Any] = {}
    for name in stages_raw:
        if name not in declared:
            raise NashError(f"{source}: stages.{name} is not a stage; use {', '.join(declared)}")
    for name, stage in declared.items():  # run order, whatever order the file uses
        if name not in stages_raw or stages_raw[name] is False:  # `bench: false` turns a stage off
            continue
        options = stages_raw[name] if stages_raw[name] is not None else {}
        if not isinstance(options, dict):
            raise NashError(f"{source}: stages.{name} must be a mapping of options (or {{}})")
        for switch in stage.data_switches:
            if switch in options and not isinstance(options[switch], bool):
                raise NashError(f"{source}: stages.{name}.{switch} is true or false in a recipe (got "
                                f"{options[switch]!r}); true reads data.train, so put the file there")
        try:
            parsed[name] = stage_model(name).model_validate(options)
        except ValidationError as error:
            raise NashError(f"{source}: {_first_problem(error, prefix=f'stages.{name}')}") from None
        try:
            check_stage(name, parsed[name].model_dump())
        except NashError as error:
            raise NashError(f"{source}: stages.{name}: {error}") from None
    recipe.stages = parsed
    return recipe


def check_stage(stage: str, options: dict[str, Any]) -> None:
    """Runs the stage's own checks (`Options.check()`), so a recipe fails at once, not mid-run.

    The fields the runner fills in get placeholders here.

    Raises:
        NashError: for an impossible value (e.g. `--eval-every 0`, `--target-sparsity 1.5`).
    """
    declared = stages.stage(stage)
    cls = declared.options
    options = {**options, **{name: "." if options.get(name) else None for name in declared.data_switches}}
    placeholders: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if required and field.name not in options:
            placeholders[field.name] = ["."] if field.name == "models" else Path(".") if field.name == "output" else "."
    cls(**placeholders, **options).check()


def _first_problem(error: ValidationError, prefix: str = "") -> str:
    problem = error.errors()[0]
    path = ".".join(str(part) for part in (prefix, *problem["loc"]) if part != "")
    if problem["type"] == "extra_forbidden":
        return f"{path} is not a known option; check the spelling against the command's --help"
    if problem["type"] == "missing":
        return f"{path} is required"
    got = problem.get("input")
    return f"{path}: {problem['msg'].lower()} (got {got!r})"


def apply_overrides(raw: Any, overrides: list[str], *, source: str = "the recipe") -> dict[str, Any]:
    """Applies `--set a.b=v` overrides; values are read as YAML scalars (0.4, true, [rouge]).

    Raises:
        NashError: a malformed override, or a recipe (`source`) whose top level is not a mapping.
    """
    if overrides and not isinstance(raw, dict):
        raise NashError(
            f"--set cannot apply: {source} holds a YAML {type(raw).__name__}, not a mapping of name, teacher, "
            "data and stages; fix its top level"
        )
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise NashError(f"--set {override!r} is not KEY=VALUE; write e.g. --set prune_encoder.target_sparsity=0.4")
        parts = key.split(".")
        if parts[0] in stages.recipe_stages():
            parts = ["stages", *parts]
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise NashError(f"--set {key}: {part} is not a mapping in the recipe")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError:
            node[parts[-1]] = value
    return raw


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[Recipe, dict[str, Any]]:
    """Reads, overrides and validates a recipe file; returns the recipe and the resolved dict."""
    from nash_cli.data import TEXT_ENCODING

    path = Path(path)
    if path.is_dir():
        raise NashError(f"{path} is a directory, not a recipe file; pass the recipe's .yaml file (examples are in recipes/)")
    if not path.is_file():
        raise NashError(f"recipe {path} does not exist; check the path (examples are in recipes/)")
    try:
        raw = yaml.safe_load(path.read_text(encoding=TEXT_ENCODING)) or {}
    except UnicodeDecodeError as error:
        raise NashError(
            f"recipe {path} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}); "
            "save it as UTF-8"
        ) from None
    except OSError as error:
        raise NashError(f"cannot read recipe {path} ({error.strerror or error}); check its permissions") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise NashError(f"{path} is not valid YAML{where}; fix the syntax") from None
    raw = apply_overrides(raw, overrides or [], source=str(path))
    recipe = parse_recipe(raw, source=str(path))
    return recipe, resolved_dict(recipe)


def resolved_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe with every default filled in, as plain data (what `nash run` saves)."""
    return {
        "name": recipe.name,
        "description": recipe.description,
        "teacher": recipe.teacher,
        "data": recipe.data.model_dump(),
        "stages": {name: options.model_dump() for name, options in recipe.stages.items()},
    }
