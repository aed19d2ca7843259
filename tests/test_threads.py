"""`--threads` on every command that computes, `OMP_NUM_THREADS` when it is not given."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from conftest import assert_user_error
from nash_cli.errors import NashError
from nash_cli.threads import requested_threads, use_threads

#: The stages that compute (train, generate, time or convert): each takes `threads`.
COMPUTING = ("bench", "eval", "plan", "export", "distill", "prune_encoder")


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_requested_threads_prefers_the_option_then_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert requested_threads(2) == 2
    assert requested_threads(None) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # OpenMP's per-level list: the outer count
    assert requested_threads(None) == 4
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert requested_threads(None) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert requested_threads(None) is None


@pytest.mark.parametrize("value", ["0", "many", "-1"])
def test_a_bad_omp_num_threads_is_one_line_naming_it(monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(NashError, match="OMP_NUM_THREADS=.* is not a number of threads; set it to a positive integer"):
        requested_threads(None)


def test_use_threads_sets_torch(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert use_threads(None) == 2  # nothing asked: torch's own count stays
    assert use_threads(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert use_threads(None) == 2


@pytest.mark.parametrize("stage", COMPUTING)
def test_every_computing_stage_takes_threads_and_its_command_the_flag(stage):
    import importlib

    from nash_cli.stages import stage as declared

    options = declared(stage).options
    assert "threads" in {field.name for field in dataclasses.fields(options)}
    module = importlib.import_module(f"nash_cli.cli.{declared(stage).run.__module__.rsplit('.', 1)[-1]}")
    import inspect

    assert "threads" in inspect.signature(module.command).parameters


@pytest.mark.parametrize("stage", ["bench", "eval", "export", "distill", "prune_encoder"])
def test_a_recipe_sets_threads_per_stage_and_zero_is_refused_before_running(stage, make_checkpoint, tmp_path):
    from nash_cli.recipe import parse_recipe

    teacher = make_checkpoint("t5", encoder_layers=1, decoder_layers=1)
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"document": "a b", "summary": "a"}) + "\n")
    base = {"name": "t", "teacher": str(teacher), "data": {"train": str(data), "eval": str(data)}}
    recipe = parse_recipe({**base, "stages": {stage: {"threads": 1}}})
    assert recipe is not None
    with pytest.raises(NashError, match="--threads must be at least 1, got 0"):
        parse_recipe({**base, "stages": {stage: {"threads": 0}}})


def test_plan_refuses_threads_below_one():
    from nash_cli.stages.plan import PlanOptions

    with pytest.raises(NashError, match="--threads must be at least 1, got 0"):
        PlanOptions(checkpoint="ckpt", speedup=2.0, threads=0).check()


RECORDS = [{"document": "the quick brown fox", "summary": "fox"}, {"document": "a cat on a mat", "summary": "cat"}]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    return path


def test_eval_honours_omp_num_threads_and_threads_overrides_it(make_checkpoint, data, cli, monkeypatch):
    checkpoint = make_checkpoint("bart")
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = cli("eval", checkpoint, "--data", data, "--max-new-tokens", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["engine"]["threads"] == 1 and torch.get_num_threads() == 1
    result = cli("eval", checkpoint, "--data", data, "--max-new-tokens", "2", "--threads", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["engine"]["threads"] == 2


def test_distill_takes_threads(make_checkpoint, data, cli, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    student = make_checkpoint("t5", encoder_layers=1, decoder_layers=1)
    result = cli("distill", student, "--data", data, "--max-steps", "1", "--threads", "1", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    assert torch.get_num_threads() == 1
    assert json.loads((tmp_path / "out" / "nash.json").read_text())["arguments"]["threads"] == 1
    assert_user_error(cli("distill", student, "--data", data, "--threads", "0", "-o", tmp_path / "zero"), "--threads")
