"""What `nash run` checks before any stage runs: the recipe's name, its inputs, the state each
stage will be given, and the run directory."""

from __future__ import annotations

import re
from pathlib import Path

from nash_cli.errors import NashError
from nash_cli.pipeline.state import check_run_directory_is_nash
from nash_cli.recipe import Recipe
from nash_cli.stages import inspect_checkpoint, output_state, recipe_stages, state_refusal
from nash_cli.stages import stage as declared_stage

#: The resolved recipe saved in the run directory.
RESOLVED_RECIPE = "recipe.yaml"


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
            _, teacher_state = inspect_checkpoint(recipe.teacher, allow_pickle=allow_pickle)
        except NashError as error:
            raise refuse(f"teacher: {error}") from None
    elif not is_builtin(recipe.teacher) and "/" not in recipe.teacher and not _loadable_offline(recipe.teacher):
        # A bare name is more often a local directory mistyped than a hub model (those are org/name):
        # offline, the first stage would fail on it after the run had started.
        raise refuse(
            f"teacher: {recipe.teacher} is not a local directory, and the hub is offline (HF_HUB_OFFLINE) with no "
            f"cached copy of it; give the checkpoint's path (./{recipe.teacher} for a directory here)"
        )
    if (recipe.data.source_lang or recipe.data.target_lang) and not is_builtin(recipe.teacher) and artifact.is_local(recipe.teacher):
        # Every stage sets the pair on the teacher's tokenizer (its students keep it): a code it lacks fails now.
        from nash_cli.data import set_languages

        trust = any(getattr(options, "trust_remote_code", False) for options in recipe.stages.values())
        try:
            tokenizer = artifact.load_tokenizer(recipe.teacher, trust_remote_code=trust)
            set_languages(tokenizer, recipe.data.source_lang, recipe.data.target_lang, where=f"the teacher {recipe.teacher}")
        except NashError as error:
            raise refuse(f"data: {error}") from None
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


def check_run_directory(run_dir: Path, recipe: Recipe, recipe_path: str | Path) -> None:
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


def _loadable_offline(name: str) -> bool:
    """False when the hub is off (`HF_HUB_OFFLINE`) and `name`'s config is not in the local cache."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return True  # online, the stage will fetch it (and say so if it cannot)
    return isinstance(try_to_load_from_cache(name, "config.json"), str)
