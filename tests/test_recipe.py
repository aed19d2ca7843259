"""Recipes: every shipped recipe validates, errors name their path, overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import assert_user_error, make_unreadable, snapshot
from nash_cli.errors import NashError
from nash_cli.recipe import load_recipe, parse_recipe, stage_model
from nash_cli.stages import recipe_stages

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_there_are_recipes_for_the_papers_settings():
    names = {path.stem for path in RECIPES}
    for task in ("samsum", "xsum", "cnndm", "tweetqa"):
        for k in (3, 4):
            assert f"t5-base-{task}-nash{k}" in names
    assert "bart-base-cnndm-nash3" in names
    assert any(name.startswith("flan-t5") and "dolly" in name for name in names)
    assert "demo" in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_validates_and_plans(path, tmp_path, cli):
    recipe, resolved = load_recipe(path)
    assert list(recipe.stages) == [key for key in recipe_stages() if key in recipe.stages]
    result = cli("run", path, "-o", tmp_path / "run", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    plan = result.json()
    assert [stage["stage"] for stage in plan["stages"]] == list(recipe.stages)
    assert all(stage["status"] == "run" for stage in plan["stages"])
    for stage in plan["stages"]:
        assert all(command.startswith("nash ") for command in stage["commands"])
    assert not (tmp_path / "run").exists(), "a dry run wrote files"
    if path.stem != "demo":
        prune = resolved["stages"]["prune_encoder"]
        assert prune["target_sparsity"] == 0.3 and prune["reg_lr"] == 0.01
        assert prune["alpha_enc"] == prune["alpha_dec"] == 0.001
        assert resolved["data"]["max_source_length"] == 512 and resolved["data"]["max_target_length"] == 128


def test_stage_models_mirror_the_commands():
    fields = stage_model("prune_encoder").model_fields
    assert fields["target_sparsity"].default == 0.3
    assert "output" not in fields and "teacher" not in fields and "force" not in fields
    assert fields["lr"].annotation is float


BASE = {
    "name": "t",
    "teacher": "ckpt",
    "data": {"train": "train.jsonl"},
    "stages": {"select_layers": {"decoder_layers": 3}, "prune_encoder": {"target_sparsity": 0.3}},
}


def _copy():
    return yaml.safe_load(yaml.safe_dump(BASE))


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda r: r["stages"]["prune_encoder"].update(target_sparsty=0.3), "stages.prune_encoder.target_sparsty"),
        (lambda r: r["stages"]["prune_encoder"].update(target_sparsity="high"), "stages.prune_encoder.target_sparsity"),
        (lambda r: r["stages"]["select_layers"].update(decoder_layers=2.5), "stages.select_layers.decoder_layers"),
        (lambda r: r["stages"].update(prune={}), "stages.prune is not a stage"),
        (lambda r: r["data"].update(trian="x"), "data.trian"),
        (lambda r: r.pop("teacher"), "teacher is required"),
        (lambda r: r.update(extra=1), "extra is not a known option"),
        (lambda r: r["stages"]["select_layers"].update(output="x"), "stages.select_layers.output"),
    ],
)
def test_errors_name_the_path(mutate, fragment):
    raw = _copy()
    mutate(raw)
    with pytest.raises(NashError) as error:
        parse_recipe(raw, source="r.yaml")
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(BASE))
    recipe, resolved = load_recipe(path, ["prune_encoder.target_sparsity=0.4", "stages.select_layers.strategy=high"])
    assert recipe.stages["prune_encoder"].target_sparsity == 0.4
    assert resolved["stages"]["select_layers"]["strategy"] == "high"
    with pytest.raises(NashError, match="KEY=VALUE"):
        load_recipe(path, ["prune_encoder.target_sparsity"])
    with pytest.raises(NashError, match="stages.prune_encoder.target_sparsity"):
        load_recipe(path, ["prune_encoder.target_sparsity=lots"])


def test_cli_errors_exit_2(tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert_user_error(cli("run", bad, "--dry-run"), "not valid YAML")
    assert_user_error(cli("run", tmp_path / "missing.yaml", "--dry-run"), "does not exist")
    unknown = tmp_path / "unknown.yaml"
    raw = _copy()
    raw["stages"]["compact"] = {"speed": 1}
    unknown.write_text(yaml.safe_dump(raw))
    assert_user_error(cli("run", unknown, "--dry-run"), "stages.compact.speed")


def test_unreadable_recipes_are_one_line(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "recipes"
    folder.mkdir()
    assert_user_error(cli("run", folder, "--dry-run"), "is a directory, not a recipe file")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(yaml.safe_dump({**_copy(), "description": "caf\u00e9"}, allow_unicode=True).encode("latin-1"))
    assert_user_error(cli("run", latin1, "--dry-run"), "latin1.yaml is not UTF-8 text", "byte 0xe9", "save it as UTF-8")
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump([BASE]))
    assert_user_error(cli("run", listed, "--dry-run", "--set", "name=x"), "--set cannot apply", "list.yaml holds a YAML list")
    assert_user_error(cli("run", listed, "--dry-run"), "the recipe must be a mapping")  # without --set, as before
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just words\n")
    assert_user_error(cli("run", scalar, "--dry-run", "--set", "name=x"), "holds a YAML str")
    assert snapshot(tmp_path) == {"recipes", "latin1.yaml", "list.yaml", "scalar.yaml"}


def test_a_recipe_that_cannot_be_read_is_one_line(tmp_path, cli, monkeypatch):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(BASE))
    make_unreadable(recipe, monkeypatch, method="read_text")
    try:
        assert_user_error(cli("run", recipe, "--dry-run"), "cannot read recipe", "Permission denied")
    finally:
        recipe.chmod(0o644)


def test_option_bounds_are_checked_in_the_recipe():
    raw = _copy()
    raw["stages"]["prune_encoder"]["eval_every"] = 0
    with pytest.raises(NashError, match="stages.prune_encoder: --eval-every must be at least 1"):
        parse_recipe(raw)


@pytest.mark.parametrize(
    ("stage", "key", "value", "fragment"),
    [
        ("prune_encoder", "target_sparsity", 1.5, "target-sparsity"),
        ("select_layers", "decoder_layers", 0, "decoder_layers"),
        ("select_layers", "strategy", "middle", "strategy"),
        ("prune_encoder", "lr", -1.0, "lr"),
    ],
)
def test_impossible_values_fail_when_the_recipe_is_read(stage, key, value, fragment):
    raw = _copy()
    raw["stages"][stage][key] = value
    with pytest.raises(NashError) as error:
        parse_recipe(raw)
    assert f"stages.{stage}" in str(error.value) and fragment in str(error.value)
