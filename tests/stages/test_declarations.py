"""The stage declarations: the CLI, the recipes, the pipeline and the input checks agree with them."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

from nash_cli.cli.app import app
from nash_cli.errors import NashError
from nash_cli.recipe import RUNNER_OWNED, parse_recipe, stage_model
from nash_cli.stages import (
    ANY_STATE,
    Stage,
    all_stages,
    checkpoint_state,
    declare,
    open_input,
    output_state,
    recipe_stages,
    state_refusal,
)

STAGES = all_stages()


def _cli_module(stage: Stage):
    return importlib.import_module("nash_cli.cli." + stage.run.__module__.rsplit(".", 1)[-1])


def test_every_stage_command_is_declared_and_every_declaration_has_its_command():
    commands = {info.name for info in app.registered_commands}
    declared = {stage.command for stage in STAGES}
    assert declared <= commands
    # the commands that are not stages: the whole pipeline, its demo, and the report over results
    assert commands - declared == {"demo", "run", "report"}


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_a_declaration_matches_its_module_and_command(stage):
    module = importlib.import_module(stage.run.__module__)
    assert stage in vars(module).values(), "declared where it is defined"
    fields = {f.name for f in dataclasses.fields(stage.options)}
    assert {stage.model_input, "output", "force"} <= fields
    assert stage.teacher_input is None or stage.teacher_input in fields
    assert set(stage.data_switches) <= fields
    assert "progress" in inspect.signature(stage.run).parameters
    cli = _cli_module(stage)
    assert cli.Options is stage.options, "the command builds the declared options"
    assert callable(cli.print_result), "nash run prints the stage's result with its command's printer"


def test_the_recipe_stages_are_the_declared_ones_in_order():
    stages = recipe_stages()
    assert list(stages) == ["finetune_teacher", "select_layers", "prune_encoder", "compact", "distill", "prune_vocab",
                            "export", "bench", "eval"]
    for name, stage in stages.items():
        fields = set(stage_model(name).model_fields)
        owned = RUNNER_OWNED | {stage.model_input, stage.teacher_input}
        assert not fields & owned, f"{name}: a recipe may not set what the runner fills in"
    with pytest.raises(NashError, match="stages.plan is not a stage; use finetune_teacher, select_layers"):
        parse_recipe({"name": "x", "teacher": "t", "data": {"train": "d"}, "stages": {"plan": {}}})


def test_a_stage_is_declared_once():
    stage = STAGES[0]
    assert declare(stage) is stage
    with pytest.raises(ValueError, match="declared twice"):
        declare(dataclasses.replace(stage))
    with pytest.raises(ValueError, match="role"):
        dataclasses.replace(stage, role="sideways")


def test_states_flow_as_declared():
    stages = recipe_stages()
    assert output_state(stages["select_layers"], "compact") == "compact"
    assert output_state(stages["prune_encoder"], "dense") == "masked"
    assert output_state(stages["compact"], "masked") == "compact"
    assert all(state_refusal(stages[name], "x", state) is None for name in ("bench", "eval") for state in ANY_STATE)
    masked = state_refusal(stages["distill"], "m/", "masked", role="student")
    assert "training would use its weights without the masks" in masked and "nash compact m/ -o DIR" in masked
    assert "as --teacher" in state_refusal(stages["distill"], "m/", "masked", role="teacher")
    assert "dense student" in state_refusal(stages["prune_encoder"], "c/", "compact", role="student")
    assert "nothing to compact" in state_refusal(stages["compact"], "d/", "dense")


def test_a_compact_checkpoint_without_its_manifest_is_compact():
    assert checkpoint_state(None, {"encoder_heads": [[0, 1], [1]]}) == "compact"
    assert checkpoint_state(None, {"d_model": 8}) == "dense"
    assert checkpoint_state({"state": "masked"}, {}) == "masked"


def test_the_opener_refuses_by_the_declaration(make_checkpoint, tmp_path):
    import json
    import shutil

    source = make_checkpoint("t5")
    compact = tmp_path / "compact"
    shutil.copytree(source, compact)
    (compact / "nash.json").write_text(json.dumps({"stage": "compact", "state": "compact"}))
    stages = recipe_stages()
    opened = open_input(stages["select_layers"], compact)
    assert opened.state == "compact" and opened.manifest["stage"] == "compact"
    with pytest.raises(NashError, match="is a compact checkpoint; prune-encoder needs a dense student"):
        open_input(stages["prune_encoder"], compact, role="student")
    assert open_input(stages["prune_encoder"], "google/flan-t5-small", role="student").state == "dense"
