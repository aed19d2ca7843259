"""Numbers the options refuse (issue 22, item 18): NaN and infinities, seeds no generator takes,
inputs too long to time, and a recipe's data lengths; each one line naming the option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import CORPUS, assert_user_error, snapshot
from nash_cli.errors import NashError, SEED_MAX, require_finite_options
from nash_cli.recipe import parse_recipe


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"source": s, "target": s}) + "\n" for s in CORPUS))
    return path


@pytest.mark.parametrize("flag", ["--lr", "--weight-decay", "--alpha-kd", "--temperature", "--max-grad-norm"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_distill_refuses_non_finite_numbers(flag, value, make_checkpoint, data_file, tmp_path, cli):
    before = snapshot(tmp_path)
    result = cli("distill", make_checkpoint("t5"), "--data", data_file, "-o", tmp_path / "out", f"{flag}={value}")
    assert_user_error(result, flag, "must be a finite number", value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("flag", ["--reg-lr", "--sparsity-warmup", "--lr", "--target-sparsity"])
def test_prune_encoder_refuses_non_finite_numbers(flag, make_checkpoint, data_file, tmp_path, cli):
    result = cli("prune-encoder", make_checkpoint("t5"), "--data", data_file, "-o", tmp_path / "out", f"{flag}=nan")
    assert_user_error(result, flag, "must be a finite number")
    assert not (tmp_path / "out").exists()


def test_plan_refuses_an_infinite_speedup(make_checkpoint, tmp_path, cli):
    result = cli("plan", make_checkpoint("t5"), "--speedup", "inf", "-o", tmp_path / "plan")
    assert_user_error(result, "--speedup must be a finite number")
    assert not (tmp_path / "plan").exists()


@pytest.mark.parametrize("command", ["distill", "prune-encoder", "bench", "plan"])
@pytest.mark.parametrize("seed", ["12345678901234567890", "-1"])
def test_seeds_are_bounded(command, seed, make_checkpoint, data_file, tmp_path, cli):
    checkpoint = make_checkpoint("t5")
    args = {
        "distill": ["--data", data_file, "-o", tmp_path / "out"],
        "prune-encoder": ["--data", data_file, "-o", tmp_path / "out"],
        "bench": [],
        "plan": ["--speedup", "2"],
    }[command]
    result = cli(command, checkpoint, *args, "--seed", seed)
    assert_user_error(result, "--seed must be between 0 and", str(SEED_MAX))


def test_bench_bounds_the_source_length(make_checkpoint, cli):
    assert_user_error(cli("bench", make_checkpoint("t5"), "--source-length", "100000"),
                      "--source-length 100000", "use at most 8192")


def test_every_float_field_is_checked():
    from dataclasses import dataclass, field

    @dataclass
    class Options:
        rate: float = 1.0
        sizes: list[float] = field(default_factory=lambda: [0.1, float("inf")])

    with pytest.raises(NashError, match="--sizes must be a finite number, got inf"):
        require_finite_options(Options())


BASE = {
    "name": "r",
    "teacher": "ckpt/",
    "data": {"train": "train.jsonl"},
    "stages": {"select_layers": {"decoder_layers": 1}, "distill": {}},
}


@pytest.mark.parametrize("key", ["max_source_length", "max_target_length"])
def test_recipe_data_lengths_are_checked(key):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    raw["data"][key] = 0
    with pytest.raises(NashError, match=f"r.yaml: data.{key} must be at least 1, got 0"):
        parse_recipe(raw, source="r.yaml")


@pytest.mark.parametrize("value", [".nan", ".inf"])
def test_recipe_values_must_be_finite(value):
    raw = yaml.safe_load(yaml.safe_dump(BASE).replace("distill: {}", f"distill: {{lr: {value}}}"))
    with pytest.raises(NashError, match="stages.distill: --lr must be a finite number"):
        parse_recipe(raw, source="r.yaml")
