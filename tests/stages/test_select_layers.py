"""`nash select-layers` end to end: outputs that stock transformers loads, and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_user_error, snapshot, write_masked

ROOT = Path(__file__).resolve().parents[2]


def _decoder_prefix(family):
    return "model.decoder.layers" if family == "bart" else "decoder.block"


@pytest.mark.parametrize("family", ["t5", "t5-gated", "bart"])
def test_output_reloads_with_stock_transformers(family, make_checkpoint, tmp_path, cli):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    teacher_dir = make_checkpoint(family, encoder_layers=4, decoder_layers=6)
    result = cli("select-layers", teacher_dir, "--decoder-layers", "3", "-o", tmp_path / "student", "--json")
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert summary["kept"]["decoder"] == [0, 2, 5]

    out = tmp_path / "student"
    assert {"config.json", "generation_config.json", "model.safetensors", "nash.json", "tokenizer.json"} <= {
        p.name for p in out.iterdir()
    }
    student = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    teacher = AutoModelForSeq2SeqLM.from_pretrained(teacher_dir).eval()
    prefix = _decoder_prefix(family)
    s_state, t_state = student.state_dict(), teacher.state_dict()
    for new, old in enumerate([0, 2, 5]):
        for key, value in s_state.items():
            if key.startswith(f"{prefix}.{new}.") and "relative_attention_bias" not in key:
                assert torch.equal(value, t_state[key.replace(f"{prefix}.{new}.", f"{prefix}.{old}.")]), key
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["the cat sat on the mat .", "bob will bring coffee ."], return_tensors="pt", padding=True)
    generated = student.generate(**batch, num_beams=4, max_new_tokens=8)
    assert generated.shape[0] == 2

    manifest = json.loads((out / "nash.json").read_text())
    assert manifest["stage"] == "select-layers" and manifest["state"] == "dense"
    assert manifest["layer_map"]["decoder"] == [0, 2, 5]
    assert manifest["parent"]["path"] == str(Path(teacher_dir).absolute())
    assert len(manifest["parent"]["sha256"]) == 64
    assert manifest["arguments"]["decoder_layers"] == 3
    assert {"torch", "transformers", "nash"} <= manifest["versions"].keys()


def test_strategies_and_explicit_layers(make_checkpoint, tmp_path, cli):
    teacher_dir = make_checkpoint("t5", encoder_layers=4, decoder_layers=6)
    high = cli("select-layers", teacher_dir, "-k", "2", "--strategy", "high", "-o", tmp_path / "high", "--json")
    assert high.json()["kept"]["decoder"] == [4, 5]
    low = cli("select-layers", teacher_dir, "-k", "2", "--strategy", "low", "-o", tmp_path / "low", "--json")
    assert low.json()["kept"]["decoder"] == [0, 1]
    explicit = cli("select-layers", teacher_dir, "--layers", "5,1,3", "-o", tmp_path / "x", "--json")
    assert explicit.json()["kept"]["decoder"] == [1, 3, 5]
    # the position bias table survives when layer 0 is dropped
    weights = load_file(tmp_path / "high" / "model.safetensors")
    assert "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in weights


def test_layer_map_composes_through_two_selections(make_checkpoint, tmp_path, cli):
    teacher_dir = make_checkpoint("t5", encoder_layers=4, decoder_layers=6)
    assert cli("select-layers", teacher_dir, "--layers", "1,3,4,5", "-o", tmp_path / "a").exit_code == 0
    assert cli("select-layers", tmp_path / "a", "--layers", "0,3", "-o", tmp_path / "b").exit_code == 0
    manifest = json.loads((tmp_path / "b" / "nash.json").read_text())
    assert manifest["layer_map"]["decoder"] == [1, 5]
    assert [entry["stage"] for entry in manifest["lineage"]] == ["input", "select-layers"]


def test_encoder_layers_option(make_checkpoint, tmp_path, cli):
    teacher_dir = make_checkpoint("bart", encoder_layers=4, decoder_layers=6)
    result = cli("select-layers", teacher_dir, "-k", "3", "--encoder-layers", "2", "-o", tmp_path / "s", "--json")
    assert result.exit_code == 0, result.stderr
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert (config["encoder_layers"], config["decoder_layers"]) == (2, 3)
    assert result.json()["kept"]["encoder"] == [0, 3]


def test_force_replaces_an_existing_output(make_checkpoint, tmp_path, cli):
    teacher_dir = make_checkpoint("t5", encoder_layers=4, decoder_layers=6)
    out = tmp_path / "s"
    assert cli("select-layers", teacher_dir, "-k", "3", "-o", out).exit_code == 0
    assert cli("select-layers", teacher_dir, "-k", "2", "-o", out, "--force").exit_code == 0
    assert json.loads((out / "config.json").read_text())["num_decoder_layers"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no staging or backup directory left


def _bad_dirs(tmp_path: Path, make_checkpoint) -> dict[str, Path]:
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text((make_checkpoint("t5") / "config.json").read_text())
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((make_checkpoint("t5") / "config.json").read_text())
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(bert)
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2)).save_pretrained(gpt2)
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    return {"empty": empty, "corrupt": corrupt, "bert": bert, "gpt2": gpt2, "no_config": no_config}


def test_every_bad_input_exits_2_with_one_line_and_writes_nothing(make_checkpoint, tmp_path, cli):
    teacher = make_checkpoint("t5", encoder_layers=4, decoder_layers=6)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    bad = _bad_dirs(inputs, make_checkpoint)
    work = tmp_path / "work"
    work.mkdir()
    existing = work / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    before = snapshot(work)
    out = work / "out"
    cases = [
        ((teacher, "-k", "0", "-o", out), "keep at least 1"),
        ((teacher, "-k", "7", "-o", out), "only 6"),
        ((teacher, "--layers", "0,2,2", "-o", out), "twice"),
        ((teacher, "--layers", "0,6", "-o", out), "does not exist"),
        ((teacher, "--layers", "0,1", "-k", "2", "-o", out), "--layers and --decoder-layers"),
        ((teacher, "-o", out), "--decoder-layers"),
        ((teacher, "-k", "2", "--strategy", "middle", "-o", out), "strategy"),
        ((inputs / "missing", "-k", "2", "-o", out), "does not exist"),
        ((bad["no_config"], "-k", "2", "-o", out), "config.json"),
        ((bad["empty"], "-k", "2", "-o", out), "no weights"),
        ((bad["corrupt"], "-k", "2", "-o", out), "safetensors"),
        ((bad["bert"], "-k", "2", "-o", out), "'bert'"),
        ((bad["gpt2"], "-k", "2", "-o", out), "'gpt2'"),
        ((teacher, "-k", "2", "-o", existing), "--force"),
    ]
    for args, fragment in cases:
        result = cli("select-layers", *args)
        assert_user_error(result, fragment)
        assert snapshot(work) == before, args
    assert (existing / "keep.txt").read_text() == "mine"


def test_pickle_weights_need_allow_pickle(make_checkpoint, tmp_path, cli):
    from safetensors.torch import load_file

    teacher = make_checkpoint("t5", encoder_layers=2, decoder_layers=4)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (pickled / name).write_text((teacher / name).read_text())
    torch.save(load_file(teacher / "model.safetensors"), pickled / "pytorch_model.bin")
    assert_user_error(cli("select-layers", pickled, "-k", "2", "-o", tmp_path / "s"), "--allow-pickle")
    assert not (tmp_path / "s").exists()
    result = cli("select-layers", pickled, "-k", "2", "-o", tmp_path / "s", "--allow-pickle")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "s" / "model.safetensors").is_file()


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "nash_cli", "select-layers", str(tmp_path / "missing"), "-k", "3", "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error:")
    assert not (tmp_path / "o").exists()


def test_help_is_instant_and_does_not_import_torch():
    code = "import sys, runpy; sys.argv=['nash','--help']\ntry:\n runpy.run_module('nash_cli', run_name='__main__')\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "select-layers" in proc.stdout
    assert proc.stdout.strip().endswith("False"), "nash --help imported torch"
    assert elapsed < 3.0  # generous for a loaded CI machine; typically ~0.3 s


def test_version(cli):
    from nash_cli import __version__

    result = cli("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_real_t5_vocabulary_round_trips_text(shared_dir, tmp_path, cli):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from nash_cli.toy import tiny_model

    vocab = shared_dir / "data" / "t5-vocab"
    if not (vocab / "tokenizer.json").is_file():
        pytest.skip("no T5 vocabulary in ../shared")
    tokenizer = AutoTokenizer.from_pretrained(vocab)
    teacher_dir = tmp_path / "teacher"
    tiny_model("t5", vocab_size=len(tokenizer), encoder_layers=2, decoder_layers=4).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    assert cli("select-layers", teacher_dir, "-k", "2", "-o", tmp_path / "s").exit_code == 0
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "s")
    text = "summarize: The quick brown fox jumps over the lazy dog."
    ids = reloaded(text).input_ids
    assert ids == tokenizer(text).input_ids and len(ids) > 5
    assert reloaded.decode(ids, skip_special_tokens=True) == text
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "s")
    out = model.generate(**reloaded([text], return_tensors="pt"), num_beams=4, max_new_tokens=4)
    assert isinstance(reloaded.batch_decode(out, skip_special_tokens=True)[0], str)


def test_a_masked_checkpoint_is_refused_naming_compact(make_checkpoint, tmp_path, cli):
    # select-layers reads only the weights: on a masked checkpoint it wrote a "dense" student
    # without the masks, i.e. the unpruned encoder. It refuses and says how to get a dense model.
    teacher = make_checkpoint("t5", encoder_layers=2, decoder_layers=4)
    masked = write_masked(tmp_path / "masked", teacher)
    before = snapshot(tmp_path)
    result = cli("select-layers", masked, "-k", "2", "-o", tmp_path / "out")
    assert_user_error(result, "is a masked checkpoint", f"nash compact {masked} -o DIR")
    assert snapshot(tmp_path) == before
    # The way the message points works: compact, then select layers.
    assert cli("compact", masked, "-o", tmp_path / "compact").exit_code == 0
    result = cli("select-layers", tmp_path / "compact", "-k", "2", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    # the student keeps the compact encoder, and says so (it was recorded as "dense")
    assert json.loads((tmp_path / "out" / "nash.json").read_text())["state"] == "compact"
    from nash_cli import artifact

    student = artifact.load_model(str(tmp_path / "out"))
    assert student.config.num_decoder_layers == 2
