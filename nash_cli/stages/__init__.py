"""The stages of nash, one module each, each declared once where it is defined.

A stage module holds an `Options` dataclass that owns the stage's defaults and checks (a
docstring per field; `check()` raises `NashError` before any heavy work), a result type with
`to_dict()`, `run(options, *, progress=None) -> result`, and, at its end, its `Stage`
declaration: its recipe key and command, its options type and `run`, the checkpoint states it
reads, what it writes, the inputs it takes and where a recipe run puts it. Everything that lists
stages reads these declarations: the recipe schemas (`nash_cli.recipe`), the `nash run`
pipeline and its pre-check (`nash_cli.pipeline`), the input opener (`open_input`) and the
printers of `nash run` (`nash_cli.cli.run`). A new stage is this package's new module plus a
thin command module in `nash_cli.cli`; nothing else names it.

Importing a stage module does not import torch.

| module            | command                | reads                  | writes                |
|-------------------|------------------------|------------------------|-----------------------|
| `select_layers`   | `nash select-layers`   | dense, compact         | the same state        |
| `prune_encoder`   | `nash prune-encoder`   | dense                  | masked                |
| `compact`         | `nash compact`         | masked                 | compact               |
| `distill`         | `nash distill`         | dense, compact         | the same state        |
| `prune_vocab`     | `nash prune-vocab`     | dense, compact         | the same state        |
| `export`          | `nash export`          | dense, compact         | a CTranslate2 model   |
| `bench`           | `nash bench`           | any                    | bench.json            |
| `eval`            | `nash eval`            | any                    | metrics.json          |
| `plan`            | `nash plan`            | dense                  | a recipe              |

(`distill` also declares `finetune_teacher`, the recipe stage that fine-tunes the teacher first.)
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from nash_cli.errors import NashError

#: The states of a checkpoint, as its manifest records them (`nash_cli.artifact.STATES`).
ANY_STATE = frozenset({"dense", "masked", "compact"})
#: The states a stage that reads only weights can take: a masked checkpoint's weights are the
#: unpruned ones (its masks live beside them), so such a stage would silently drop the pruning.
UNMASKED = frozenset({"dense", "compact"})

#: Where a stage stands in a recipe run (`Stage.role`).
ROLES = ("teacher", "transform", "branch", "measure")


@dataclass(frozen=True)
class Stage:
    """One stage, declared once at the end of the module that defines it.

    Example (the end of `nash_cli/stages/compact.py`)::

        STAGE = declare(Stage(name="compact", command="compact", options=CompactOptions, run=run,
                              order=40, reads=frozenset({"masked"}), writes="compact",
                              refusal="nothing to compact; compact the output of nash prune-encoder"))
    """

    name: str
    """Recipe key, e.g. "prune_encoder"."""
    command: str
    """The `nash` command that runs it, e.g. "prune-encoder"."""
    options: type
    """The options dataclass: its fields are the command's flags and the recipe's keys."""
    run: Callable[..., Any]
    """`run(options, *, progress=None)`; returns a result with `to_dict()`."""
    order: int | None
    """Position in a recipe run (stages run in increasing order); None: not a recipe stage."""
    role: str | None = "transform"
    """What a recipe run does with it: "transform" (its checkpoint is what the next stage reads),
    "teacher" (it trains without a teacher, and its checkpoint becomes the teacher of the later
    stages as well), "branch" (its output, the current student on another engine, is measured
    beside the student; the next stage still reads the student), "measure" (it reads the models
    and writes a result file). None for a stage that is not in recipes."""
    reads: frozenset[str] = UNMASKED
    """The checkpoint states its model input may be in."""
    refusal: str = ""
    """What it needs, said when its input is in a state it does not read (besides a masked
    checkpoint given to a stage that reads only weights, which always gets "compact it first")."""
    writes: str | None = "same"
    """The state of the checkpoint it writes: "same" as its input, "masked" or "compact"; None when
    it writes no checkpoint that a later stage reads."""
    model_input: str = "checkpoint"
    """The option that takes the model it reads ("checkpoint", "student"; "models" for a list)."""
    teacher_input: str | None = None
    """The option that takes the teacher or baseline, if any ("teacher", "baseline")."""
    teacher_reads: frozenset[str] = UNMASKED
    """The checkpoint states its teacher may be in."""
    data: str | None = None
    """Which of a recipe's data it reads: "train" (data.train, and data.eval for evaluation
    during the stage), "eval" (data.eval, else data.train), or None."""
    data_switches: tuple[str, ...] = ()
    """Options that a recipe gives as true / false for its own data (`export: {vocab_map: true}`
    is `nash export --vocab-map <data.train> --eval-data <data.eval>`)."""
    result_file: str | None = None
    """A measuring stage's result file name ("bench.json", "metrics.json")."""

    def __post_init__(self) -> None:
        if (self.order is None) != (self.role is None):
            raise ValueError(f"stage {self.name}: a recipe stage has an order and a role, any other neither")
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"stage {self.name}: role {self.role!r} is not one of {ROLES}")
        if self.role == "measure" and not self.result_file:
            raise ValueError(f"stage {self.name}: a measuring stage names its result_file")

    @property
    def resumable(self) -> bool:
        """Whether an interrupted run continues from a saved state (`--resume`): the training stages."""
        return any(f.name == "resume" for f in fields(self.options))

    @property
    def takes_list(self) -> bool:
        """Whether the model input is a list of models, measured in one call (bench)."""
        import typing

        return typing.get_origin(typing.get_type_hints(self.options)[self.model_input]) is list


_DECLARED: dict[str, Stage] = {}


def declare(stage: Stage) -> Stage:
    """Registers `stage` (called once, where the stage is defined) and returns it."""
    if stage.name in _DECLARED and _DECLARED[stage.name] is not stage:
        raise ValueError(f"stage {stage.name} is declared twice")
    _DECLARED[stage.name] = stage
    return stage


@cache
def all_stages() -> tuple[Stage, ...]:
    """Every declared stage: recipe stages in run order, then the others by name.

    The modules of this package are imported to collect their declarations (none imports torch).
    """
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return tuple(sorted(_DECLARED.values(), key=lambda s: (s.order is None, s.order or 0, s.name)))


def recipe_stages() -> dict[str, Stage]:
    """The stages a recipe may hold, in run order, by recipe key."""
    return {stage.name: stage for stage in all_stages() if stage.order is not None}


def stage(name: str) -> Stage:
    """The declaration of the stage whose recipe key is `name`."""
    all_stages()
    return _DECLARED[name]


def arguments(options: Any) -> dict[str, Any]:
    """A stage's options as plain JSON values, as recorded in manifests and run states."""
    return {f.name: _plain(getattr(options, f.name)) for f in fields(options)}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --- the input opener --------------------------------------------------------------------------


@dataclass(frozen=True)
class StageInput:
    """A checkpoint a stage reads, opened once: where it is, its manifest, its config and state."""

    source: str
    """As the user gave it: a local directory or a hub id."""
    manifest: dict[str, Any]
    """Its `nash.json` (empty for a checkpoint nash did not write)."""
    state: str
    """"dense", "masked" or "compact"."""


def checkpoint_state(manifest: dict[str, Any] | None, config: dict[str, Any] | None = None) -> str:
    """A checkpoint's state: its manifest's, else "compact" for a config with per-layer encoder
    widths (a compact checkpoint copied without its manifest), else "dense"."""
    state = (manifest or {}).get("state")
    if isinstance(state, str):
        return state
    if config and (config.get("encoder_heads") is not None or config.get("encoder_ffn_dims") is not None):
        return "compact"
    return "dense"


def state_refusal(stage: Stage, source: str, state: str, *, role: str = "checkpoint") -> str | None:
    """Why `stage` cannot read `source`, a checkpoint in `state`, as its `role`; None when it can.

    The one place that says which state goes where: the stages call it on the real checkpoint
    (`open_input`), and `nash run`'s pre-check on the state each stage's input will have.

    Args:
        stage: The stage that would read it.
        source: The checkpoint, for the message.
        state: Its state.
        role: "checkpoint", "student" or "teacher": how the stage takes it.
    """
    reads = stage.teacher_reads if role == "teacher" else stage.reads
    if state in reads:
        return None
    if state == "masked" and "compact" in reads:  # compacting it makes it readable
        user = {"student": "training", "teacher": "distillation"}.get(role, stage.command)
        passed = {"teacher": "--teacher"}.get(role, f"the {role}")
        return (
            f"{source} is a masked checkpoint (prune-encoder's output): {user} would use its weights without "
            f"the masks; run nash compact first (`nash compact {source} -o DIR`) and pass DIR as {passed}"
        )
    masks = " with no masks" if "masked" in reads else ""
    return f"{source} is a {state} checkpoint{masks}; {stage.refusal or f'{stage.command} cannot read it'}"


def inspect_checkpoint(source: str | Path, *, allow_pickle: bool = False) -> tuple[dict[str, Any], str]:
    """A local checkpoint's manifest (empty when nash did not write it) and state, after checking
    its files (`artifact.check_checkpoint`): what `open_input` and `nash run`'s pre-check read.

    Raises:
        NashError: an unreadable or unsupported checkpoint.
    """
    from nash_cli import artifact

    config = artifact.check_checkpoint(source, allow_pickle=allow_pickle)
    manifest = artifact.read_manifest(source) or {}
    return manifest, checkpoint_state(manifest, config)


def open_input(
    stage: Stage, source: str | Path, *, role: str = "checkpoint", allow_pickle: bool = False
) -> StageInput:
    """Opens a checkpoint a stage reads: checks its files, reads its manifest, refuses its state.

    Args:
        stage: The reading stage's declaration (what it `reads`).
        source: A local checkpoint directory or a hub id (a hub checkpoint is dense).
        role: "checkpoint", "student" or "teacher".
        allow_pickle: Accept `pytorch_model.bin` weights.

    Raises:
        NashError: an unreadable or unsupported checkpoint, or one in a state the stage does not read.
    """
    from nash_cli import artifact

    source = str(source)
    manifest: dict[str, Any] = {}
    state = "dense"  # a hub checkpoint
    if artifact.is_local(source):
        refuse_export(stage, source)
        manifest, state = inspect_checkpoint(source, allow_pickle=allow_pickle)
    problem = state_refusal(stage, source, state, role=role)
    if problem:
        raise NashError(problem)
    return StageInput(source=source, manifest=manifest, state=state)


def refuse_export(stage: Stage, source: str) -> None:
    """NashError when `source` is a CTranslate2 export, which only bench and eval read: its
    config.json is CTranslate2's (no `model_type`), and "architecture unknown" would hide that the
    checkpoint it came from is what the stage needs."""
    from nash_cli import artifact
    from nash_cli.export.runtime import is_ctranslate2_dir

    if not is_ctranslate2_dir(source):
        return
    try:
        parent = ((artifact.read_manifest(source) or {}).get("parent") or {}).get("path")
    except (NashError, AttributeError):
        parent = None
    where = f" ({parent})" if isinstance(parent, str) and parent else ""
    raise NashError(
        f"{source} is a CTranslate2 export (nash export's output), which {stage.command} cannot read; pass the "
        f"checkpoint it was exported from{where} instead (nash bench and nash eval read exports)"
    )


def output_state(stage: Stage, input_state: str) -> str:
    """The state of what `stage` writes from an input in `input_state`."""
    return input_state if stage.writes in (None, "same") else stage.writes
