"""Loading checkpoints: every broken or hostile input ends in one line, exit 2, nothing written.

Each case is a copy of a tiny checkpoint with one thing wrong, handed to a command that loads it
(`select-layers` reads the config and the weights; the training commands read two checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import CORPUS, assert_user_error, snapshot


def broken_copy(make_checkpoint, root: Path, name: str, *, family: str = "t5") -> Path:
    checkpoint = root / name
    shutil.copytree(make_checkpoint(family), checkpoint)
    return checkpoint


def edit_config(checkpoint: Path, **changes) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(changes)
    (checkpoint / "config.json").write_text(json.dumps(config))


def select_layers(cli, checkpoint: Path, root: Path, *extra):
    return cli("select-layers", checkpoint, "--decoder-layers", "1", "-o", root / "out", *extra)


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"d_model": 64}, "is (32, 32) in the weights but (32, 64) in the config's model"),
        ({"num_heads": 2}, "in the weights but"),
        ({"num_layers": 3}, "the config's model has encoder.block.2."),
        ({"num_decoder_layers": 1}, "the weights have decoder.block.1."),
    ],
    ids=["d_model", "num_heads", "more-layers", "fewer-layers"],
)
def test_a_config_of_the_wrong_shape_for_its_weights(changes, fragment, make_checkpoint, cli, tmp_path):
    checkpoint = broken_copy(make_checkpoint, tmp_path, "ckpt")
    edit_config(checkpoint, **changes)
    before = snapshot(tmp_path)
    result = select_layers(cli, checkpoint, tmp_path)
    assert_user_error(result, "do not fit its config.json", fragment, "restore the config.json")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[1, 2]", "holds a JSON array, not a JSON object"),
        ("null", "holds JSON null, not a JSON object"),
        ('"t5"', "holds a JSON string, not a JSON object"),
        ("{not json", "is not valid UTF-8 JSON"),
        (b"\xff\xfe{}", "is not valid UTF-8 JSON"),
    ],
    ids=["list", "null", "string", "invalid", "not-utf8"],
)
def test_a_config_of_the_wrong_json_type(text, fragment, make_checkpoint, cli, tmp_path):
    checkpoint = broken_copy(make_checkpoint, tmp_path, "ckpt")
    path = checkpoint / "config.json"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    before = snapshot(tmp_path)
    assert_user_error(select_layers(cli, checkpoint, tmp_path), "config.json", fragment)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("family, field", [("t5", "num_layers"), ("bart", "encoder_layers")])
def test_a_config_field_of_the_wrong_type(family, field, make_checkpoint, cli, tmp_path):
    checkpoint = broken_copy(make_checkpoint, tmp_path, "ckpt", family=family)
    edit_config(checkpoint, **{field: "two"})
    before = snapshot(tmp_path)
    result = select_layers(cli, checkpoint, tmp_path)
    assert_user_error(result, "config.json does not describe a valid model", f"field '{field}'", "'two'", "fix that field")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- pickles


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickling ran code"))


@pytest.mark.parametrize("payload", ["malicious", "legacy-objects"])
def test_an_unsafe_pickle_under_allow_pickle(payload, make_checkpoint, cli, tmp_path):
    """weights_only=True refuses it; nash says so in one line and never echoes torch's advice
    to pass weights_only=False."""
    checkpoint = broken_copy(make_checkpoint, tmp_path, "ckpt")
    (checkpoint / "model.safetensors").unlink()
    marker = tmp_path / "MARKER"
    if payload == "malicious":
        weights = {"shared.weight": _RunsCode(marker)}
    else:  # an old training checkpoint: tensors plus the run's argparse settings
        weights = {"shared.weight": torch.zeros(2), "args": argparse.Namespace(lr=0.1)}
    torch.save(weights, checkpoint / "pytorch_model.bin")
    before = snapshot(tmp_path)
    result = select_layers(cli, checkpoint, tmp_path, "--allow-pickle")
    assert_user_error(result, "not a safe weights-only pickle", "convert them to safetensors")
    assert "weights_only=False" not in result.stderr
    assert not marker.exists()
    assert snapshot(tmp_path) == before


def test_a_plain_pickle_of_tensors_still_loads(make_checkpoint, cli, tmp_path):
    from safetensors.torch import load_file

    checkpoint = broken_copy(make_checkpoint, tmp_path, "ckpt")
    torch.save(load_file(str(checkpoint / "model.safetensors")), checkpoint / "pytorch_model.bin")
    (checkpoint / "model.safetensors").unlink()
    result = select_layers(cli, checkpoint, tmp_path, "--allow-pickle")
    assert result.exit_code == 0, result.stderr


# --------------------------------------------------------------------------- two checkpoints


@pytest.mark.parametrize("command", ["distill", "prune-encoder"])
def test_student_and_teacher_of_different_families(command, make_checkpoint, cli, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"source": line, "target": line}) + "\n" for line in CORPUS))
    extra = ["--target-sparsity", "0.3"] if command == "prune-encoder" else []
    before = snapshot(tmp_path)
    result = cli(
        command, make_checkpoint("t5"), "--teacher", make_checkpoint("bart"), "--data", data,
        "--source-column", "source", "--target-column", "target", "--max-steps", "1", *extra,
        "-o", tmp_path / "out",
    )
    assert_user_error(result, "is a t5 model and the teacher", "a bart model", "of the student's family")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"model_type": "bert", "is_encoder_decoder": False}, "model type 'bert' is an encoder-only model"),
        ({"model_type": "gpt2"}, "model type 'gpt2' is a decoder-only model"),
        ({"model_type": "prophetnet", "is_encoder_decoder": True}, "is an encoder-decoder model nash does not support"),
        ({"d_model": 8}, "config has no model_type"),
        ({"model_type": ["t5"]}, "model type ['t5'] is not an encoder-decoder model"),
    ],
    ids=["bert", "gpt2", "prophetnet", "no-model-type", "model-type-a-list"],
)
def test_an_unsupported_model_is_named_for_what_it_is(config, fragment, cli, tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(config))
    result = select_layers(cli, checkpoint, tmp_path)
    assert_user_error(result, fragment)
    assert " a unsupported" not in result.stderr and "None" not in result.stderr


@pytest.mark.parametrize("command", ["bench", "eval", "select-layers", "export"])
def test_a_mistyped_local_name_says_the_directory_does_not_exist(command, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = {
        "bench": ["bench", "./ckpt-typo", "--repeats", "1"],
        "eval": ["eval", "./ckpt-typo", "--data", "data.jsonl"],
        "select-layers": ["select-layers", "./ckpt-typo", "--decoder-layers", "1", "-o", "out"],
        "export": ["export", "./ckpt-typo", "-o", "out"],
    }[command]
    if command == "eval":
        (tmp_path / "data.jsonl").write_text(json.dumps({"source": "a", "target": "b"}) + "\n")
    if command == "export":
        pytest.importorskip("ctranslate2")
    result = cli(*args)
    assert_user_error(result, "ckpt-typo does not exist", "check the path")
    assert len(result.stderr) < 200


def test_a_hub_like_name_that_cannot_be_fetched_is_one_short_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    result = cli("select-layers", "ckpt-typo", "--decoder-layers", "1", "-o", "out")
    assert_user_error(result, "no directory ckpt-typo exists here", "could not fetch")
    assert len(result.stderr) < 400
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("record, kind", [(3, "is a number"), ([1], "is an array"), (None, "is null"), ("x", "is a string")])
def test_a_data_record_that_is_not_an_object_is_named_in_plain_words(record, kind, tmp_path):
    """A sibling of "a unsupported": the record's type, said with its article and in JSON's words."""
    from nash_cli.data import load_examples
    from nash_cli.errors import NashError

    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"source": "a", "target": "b"}, record]))
    with pytest.raises(NashError, match=f"record 2 {kind}, not an object"):
        load_examples(str(data))
