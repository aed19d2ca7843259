"""Side files of a checkpoint and a run (issue 22, items 8, 10, 15, 17, 19): weights holding NaN,
a generation config, weight index, manifest or tokenizer file of the wrong shape, a CTranslate2
export handed to a training stage. Each is one line naming the file, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import CORPUS, assert_user_error, snapshot


def copy_of(make_checkpoint, root: Path, name: str = "ckpt", family: str = "t5") -> Path:
    checkpoint = root / name
    shutil.copytree(make_checkpoint(family), checkpoint)
    return checkpoint


def select_layers(cli, checkpoint: Path, root: Path):
    return cli("select-layers", checkpoint, "--decoder-layers", "1", "-o", root / "out")


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"source": s, "target": s}) + "\n" for s in CORPUS))
    return path


# --------------------------------------------------------------------------- item 8: weights


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(value, make_checkpoint, tmp_path, data_file, cli):
    from safetensors.torch import load_file, save_file

    checkpoint = copy_of(make_checkpoint, tmp_path)
    weights = load_file(checkpoint / "model.safetensors")
    name = next(key for key in sorted(weights) if "DenseReluDense.wo" in key)
    weights[name].view(-1)[0] = value
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    before = snapshot(tmp_path)
    kind = "NaN" if value != value else "infinite"
    assert_user_error(select_layers(cli, checkpoint, tmp_path), str(checkpoint), kind, name)
    assert_user_error(cli("eval", checkpoint, "--data", data_file), name)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- items 10, 15, 19: generation config


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"num_beams": 4,', "is not valid UTF-8 JSON"),  # transformers ignored it: beam 1, 20 tokens
        ("[1, 2]", "holds a JSON array"),  # a TypeError traceback
        ('{"max_new_tokens": 0}', "max_new_tokens"),  # "--max-new-tokens must be at least 1"
        ('{"early_stopping": "banana"}', "early_stopping"),
        ('{"forced_bos_token_id": 100000}', "forced_bos_token_id to 100000, past the model's vocabulary"),
        ('{"decoder_start_token_id": "x"}', "decoder_start_token_id to 'x', not a token id"),
    ],
)
def test_an_unusable_generation_config_is_named(text, fragment, make_checkpoint, tmp_path, data_file, cli):
    checkpoint = copy_of(make_checkpoint, tmp_path)
    (checkpoint / "generation_config.json").write_text(text)
    path = str(checkpoint / "generation_config.json")
    assert_user_error(cli("eval", checkpoint, "--data", data_file), path, fragment)
    assert_user_error(cli("bench", checkpoint, "--repeats", "1", "--num-batches", "1"), path, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["[1, 2]", '{"num_beams": 4,'])
def test_prune_vocab_names_an_unusable_generation_config(text, make_checkpoint, tmp_path, data_file, cli):
    checkpoint = copy_of(make_checkpoint, tmp_path)
    (checkpoint / "generation_config.json").write_text(text)
    result = cli("prune-vocab", checkpoint, "--data", data_file, "-o", tmp_path / "out")
    assert_user_error(result, str(checkpoint / "generation_config.json"))
    assert not (tmp_path / "out").exists()


def test_a_generation_config_cap_of_zero_names_the_file(make_checkpoint, tmp_path):
    from types import SimpleNamespace

    from nash_cli.errors import NashError
    from nash_cli.generation import resolve_settings

    model = SimpleNamespace(generation_config=SimpleNamespace(num_beams=1, max_new_tokens=0),
                            config=SimpleNamespace(_name_or_path="ckpt"))
    with pytest.raises(NashError, match=r"ckpt/generation_config.json sets max_new_tokens to 0"):
        resolve_settings(model)
    assert resolve_settings(model, max_new_tokens=3).max_new_tokens == 3


# --------------------------------------------------------------------------- item 15: weight index, manifest


@pytest.mark.parametrize(
    "weight_map, fragment",
    [({}, "names no tensors"), ({"shared.weight": 1}, "shard 1 is not a file name"),
     ({"shared.weight": "../x.safetensors"}, "is not a file name"), (None, "no weight_map")],
)
def test_a_weight_index_of_the_wrong_shape_is_named(weight_map, fragment, make_checkpoint, tmp_path, cli):
    checkpoint = copy_of(make_checkpoint, tmp_path)
    (checkpoint / "model.safetensors").rename(checkpoint / "model-00001-of-00001.safetensors")
    index = {"metadata": {}, **({"weight_map": weight_map} if weight_map is not None else {})}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_user_error(select_layers(cli, checkpoint, tmp_path), "model.safetensors.index.json", fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "manifest, fragment",
    [
        ([1, 2], "holds a JSON array"),
        ({"state": "banana"}, "records state 'banana'"),
        ({"state": "dense", "layer_map": {"decoder": "0,3"}}, "layer_map.decoder must be a list of teacher layer indices"),
        ({"state": "dense", "layer_map": [0, 3]}, "layer_map must map encoder / decoder"),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_named(manifest, fragment, make_checkpoint, tmp_path, cli):
    checkpoint = copy_of(make_checkpoint, tmp_path)
    (checkpoint / "nash.json").write_text(json.dumps(manifest))
    assert_user_error(select_layers(cli, checkpoint, tmp_path), str(checkpoint / "nash.json"), fragment)
    assert not (tmp_path / "out").exists()


def test_a_layer_map_string_is_not_counted_as_layers(make_checkpoint, tmp_path, data_file, cli):
    teacher = make_checkpoint("t5", decoder_layers=4)
    student = tmp_path / "student"
    assert cli("select-layers", teacher, "--layers", "0,3", "-o", student).exit_code == 0
    manifest = json.loads((student / "nash.json").read_text())
    manifest["layer_map"]["decoder"] = "0,3"
    (student / "nash.json").write_text(json.dumps(manifest))
    result = cli("distill", student, "--teacher", teacher, "--data", data_file, "-o", tmp_path / "out", "--max-steps", "1")
    assert_user_error(result, "layer_map.decoder must be a list", "'0,3'")
    assert "lists 3 layers" not in result.stderr


# --------------------------------------------------------------------------- item 14: tokenizer and embedding


def test_a_tokenizer_larger_than_the_embedding_is_refused(make_checkpoint, tmp_path, data_file, cli):
    from nash_cli.toy import train_word_tokenizer

    checkpoint = copy_of(make_checkpoint, tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    bigger = train_word_tokenizer(CORPUS + [" ".join(f"w{i}" for i in range(200))], vocab_size=300)
    assert len(bigger) > config["vocab_size"]
    bigger.save_pretrained(checkpoint)
    before = snapshot(tmp_path)
    fragments = (f"has {len(bigger)} tokens but the model's embedding has {config['vocab_size']} rows",)
    assert_user_error(cli("eval", checkpoint, "--data", data_file), *fragments)
    assert_user_error(cli("distill", checkpoint, "--data", data_file, "-o", tmp_path / "out"), *fragments)
    assert_user_error(cli("prune-encoder", checkpoint, "--data", data_file, "-o", tmp_path / "out"), *fragments)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- item 17: tokenizer files


def test_tokenizer_json_without_its_config_is_named(make_checkpoint, tmp_path, data_file, cli):
    checkpoint = copy_of(make_checkpoint, tmp_path)
    (checkpoint / "tokenizer_config.json").unlink()
    assert_user_error(cli("eval", checkpoint, "--data", data_file), "tokenizer_config.json is missing",
                      "copy tokenizer_config.json")


def test_a_corrupt_sentencepiece_model_is_named(make_checkpoint, tmp_path, data_file, cli):
    pytest.importorskip("sentencepiece")
    checkpoint = copy_of(make_checkpoint, tmp_path)
    (checkpoint / "tokenizer.json").unlink()
    (checkpoint / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    (checkpoint / "spiece.model").write_bytes(b"not a sentencepiece model")
    result = cli("eval", checkpoint, "--data", data_file)
    assert_user_error(result, str(checkpoint / "spiece.model"), "is not a readable SentencePiece model")
    assert "tiktoken" not in result.stderr


# --------------------------------------------------------------------------- exports


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, make_checkpoint):
    pytest.importorskip("ctranslate2")
    from nash_cli.stages.export import ExportOptions, run

    output = tmp_path_factory.mktemp("export") / "ct2"
    run(ExportOptions(checkpoint=str(make_checkpoint("t5")), output=output))
    return output


@pytest.mark.parametrize("text, fragment", [("[1]", "holds a JSON array"), ('{"num_beams": 4,', "is not valid")])
def test_an_exports_generation_config_is_checked(text, fragment, export_dir, tmp_path, data_file, cli):
    export = tmp_path / "ct2"
    shutil.copytree(export_dir, export)
    (export / "generation_config.json").write_text(text)
    path = str(export / "generation_config.json")
    assert_user_error(cli("eval", export, "--data", data_file), path, fragment)
    assert_user_error(cli("bench", export, "--repeats", "1", "--num-batches", "1"), path, fragment)


def test_an_export_without_its_tokenizer_config_is_named(export_dir, tmp_path, data_file, cli):
    export = tmp_path / "ct2"
    shutil.copytree(export_dir, export)
    (export / "tokenizer_config.json").unlink()
    assert_user_error(cli("eval", export, "--data", data_file), str(export), "tokenizer_config.json is missing")


@pytest.mark.parametrize("command", ["distill", "prune-encoder", "select-layers", "compact", "prune-vocab"])
def test_an_export_given_to_a_training_stage_says_it_is_an_export(command, export_dir, make_checkpoint, tmp_path,
                                                                   data_file, cli):
    args = {
        "distill": ["--data", data_file], "prune-encoder": ["--data", data_file], "select-layers": ["--decoder-layers", "1"],
        "compact": [], "prune-vocab": ["--data", data_file],
    }[command]
    result = cli(command, export_dir, *args, "-o", tmp_path / "out")
    assert_user_error(result, "is a CTranslate2 export", str(make_checkpoint("t5")), "export")
    assert "architecture unknown" not in result.stderr
    assert not (tmp_path / "out").exists()
