"""BART's learned positions (issue 22, item 14): inputs past `max_position_embeddings` are
truncated to what the model can read (eval, bench, training), and a length the user asks the
decoder for beyond them is refused in one line."""

from __future__ import annotations

import json

import pytest

from conftest import assert_user_error


@pytest.fixture
def long_data(tmp_path):
    """Inputs of 400 words, past the tiny BART's 256 positions."""
    path = tmp_path / "long.jsonl"
    source = " ".join(["the quick brown fox jumps over the lazy dog ."] * 40)
    path.write_text("".join(json.dumps({"source": source, "target": "the dog ."}) + "\n" for _ in range(4)))
    return path


def test_eval_truncates_inputs_to_the_models_positions(make_checkpoint, long_data, cli):
    result = cli("eval", make_checkpoint("bart"), "--data", long_data, "--max-source-length", "512",
                 "--max-new-tokens", "3", "--json")
    assert result.exit_code == 0, result.stderr
    assert "IndexError" not in result.stderr


def test_bench_on_data_truncates_inputs_to_the_models_positions(make_checkpoint, long_data, cli):
    result = cli("bench", make_checkpoint("bart"), "--data", long_data, "--max-source-length", "512",
                 "--max-new-tokens", "2", "--repeats", "1", "--batch", "2", "--num-batches", "1", "--json")
    assert result.exit_code == 0, result.stderr


def test_distill_truncates_inputs_to_the_models_positions(make_checkpoint, long_data, tmp_path, cli):
    result = cli("distill", make_checkpoint("bart"), "--data", long_data, "--max-source-length", "512",
                 "--max-steps", "1", "--batch-size", "2", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("flag", ["--fixed-length", "--max-new-tokens"])
def test_bench_refuses_more_new_tokens_than_decoder_positions(flag, make_checkpoint, cli):
    result = cli("bench", make_checkpoint("bart"), flag, "300", "--repeats", "1", "--num-batches", "1",
                 "--source-length", "8")
    assert_user_error(result, f"{flag} 300", "the model has 256", "use at most 255")


def test_a_checkpoints_own_cap_past_the_positions_is_lowered(make_checkpoint):
    from nash_cli import artifact
    from nash_cli.generation import resolve_settings

    model = artifact.load_model(make_checkpoint("bart"))
    model.generation_config.max_new_tokens = 1000
    assert resolve_settings(model).max_new_tokens == 255


def test_bench_source_length_past_the_positions_says_the_bound(make_checkpoint, cli):
    result = cli("bench", make_checkpoint("bart"), "--source-length", "300", "--repeats", "1")
    assert_user_error(result, "--source-length 300 exceeds the model's 256 positions", "use at most 256")
