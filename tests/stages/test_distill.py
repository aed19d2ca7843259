"""`nash distill` end to end: outputs, bad inputs, SIGKILL + resume, and two processes (torchrun)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import CORPUS, assert_user_error, kill_when, latest_step, snapshot, write_checkpoint, write_masked

from nash_cli.toy import tiny_model

ROOT = Path(__file__).resolve().parents[2]
WORDS = sorted({w for line in CORPUS for w in line.split() if w.isalpha()})


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_task(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(n):
            words = " ".join(rng.choices(WORDS, k=rng.randint(2, 6)))
            handle.write(json.dumps({"document": words, "summary": words}) + "\n")
    return path


@pytest.fixture
def setup(tmp_path, make_checkpoint, cli):
    """A 4-decoder-layer teacher, a 2-layer student made by select-layers, train and eval data."""
    teacher = make_checkpoint("t5", encoder_layers=2, decoder_layers=4)
    student = tmp_path / "student"
    assert cli("select-layers", teacher, "-k", "2", "-o", student).exit_code == 0
    return {
        "teacher": str(teacher),
        "student": str(student),
        "train": str(write_task(tmp_path / "train.jsonl", 24)),
        "eval": str(write_task(tmp_path / "val.jsonl", 6, seed=1)),
    }


def run_nash(*args, env: dict | None = None, launcher: list[str] | None = None, timeout: int = 180):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    command = [*(launcher or [sys.executable]), "-m", "nash_cli", *map(str, args)]
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)


def weights(directory) -> dict[str, torch.Tensor]:
    return load_file(str(Path(directory) / "model.safetensors"))


def test_distill_and_fine_tune_end_to_end(setup, tmp_path, cli):
    out = tmp_path / "out"
    result = cli(
        "distill", setup["student"], "--teacher", setup["teacher"], "--data", setup["train"],
        "--eval-data", setup["eval"], "-o", out, "--max-steps", "4", "--eval-every", "2", "--log-every", "1", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    # The decoder map comes from the student's nash.json (select-layers kept teacher layers 0 and 3).
    assert summary["objective"]["decoder_layer_map"] == [0, 3]
    assert summary["objective"]["encoder_layer_map"] == [0, 1]
    assert summary["steps"] == 4 and summary["best"]["step"] in (2, 4)
    assert {"config.json", "model.safetensors", "nash.json", "tokenizer.json", "train_log.jsonl"} <= {
        p.name for p in out.iterdir()
    }
    manifest = json.loads((out / "nash.json").read_text())
    assert manifest["stage"] == "distill" and manifest["layer_map"]["decoder"] == [0, 3]
    assert manifest["arguments"]["max_steps"] == 4
    assert manifest["training"]["final_train"]["kl"] > 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in log if "eval_loss" not in line] == [1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "student", "train.jsonl", "val.jsonl"]

    from transformers import AutoModelForSeq2SeqLM

    AutoModelForSeq2SeqLM.from_pretrained(out)  # stock transformers reads it

    plain = cli("distill", out, "--data", setup["train"], "-o", tmp_path / "ft", "--max-steps", "2", "--json")
    assert plain.exit_code == 0, plain.stderr
    assert plain.json()["objective"]["teacher"] is False and "kl" not in plain.json()["final_train"]


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("missing-data", ["does not exist"]),
        ("empty-data", ["is empty"]),
        ("bad-jsonl", ["line 2 is not valid JSON"]),
        ("missing-column", ["no column 'body'", "'document', 'summary'"]),
        ("unknown-extension", ["unknown extension '.txt'"]),
        ("bad-eval-data", ["val.jsonl line 1"]),
        ("missing-student", ["does not exist"]),
        ("vocab-mismatch", ["vocabulary"]),
        ("map-length", ["lists 3 layers but the student has 2"]),
        ("map-range", ["teacher decoder layer 9"]),
        ("map-syntax", ["not a list of layer numbers"]),
        ("no-map", ["no layer map", "--decoder-layer-map"]),
        ("map-without-teacher", ["need a --teacher"]),
        ("resume-nothing", ["holds no saved state"]),
        ("existing-output", ["already exists", "--force"]),
        ("interrupted", ["interrupted run", "--resume"]),
        ("bad-lr", ["--lr must be positive"]),
        ("bad-keep", ["--keep"]),
        ("bad-precision", ["--mixed-precision"]),
        ("masked-student", ["is a masked checkpoint", "training would use its weights without the masks", "nash compact"]),
        ("masked-teacher", ["is a masked checkpoint", "as --teacher", "nash compact"]),
        ("latin1-data", ["latin1.jsonl is not UTF-8 text", "byte 0xe9"]),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(case, fragments, setup, tmp_path, cli, make_checkpoint, tokenizer):
    args = ["distill", setup["student"], "--teacher", setup["teacher"], "--data", setup["train"], "-o", tmp_path / "out"]

    def replace(option, value):
        args[args.index(option) + 1] = value

    if case == "missing-data":
        replace("--data", tmp_path / "nope.jsonl")
    elif case == "empty-data":
        (tmp_path / "empty.jsonl").write_text("")
        replace("--data", tmp_path / "empty.jsonl")
    elif case == "bad-jsonl":
        (tmp_path / "bad.jsonl").write_text('{"document": "a", "summary": "b"}\n{"document": \n')
        replace("--data", tmp_path / "bad.jsonl")
    elif case == "missing-column":
        args += ["--source-column", "body"]
    elif case == "unknown-extension":
        (tmp_path / "data.txt").write_text("hello")
        replace("--data", tmp_path / "data.txt")
    elif case == "bad-eval-data":
        (tmp_path / "val.jsonl").write_text("not json\n")
        args += ["--eval-data", tmp_path / "val.jsonl"]
    elif case == "missing-student":
        args[1] = str(tmp_path / "no-student")
    elif case == "vocab-mismatch":
        replace("--teacher", make_checkpoint("t5", vocab_size=len(tokenizer) + 7))
    elif case == "map-length":
        args += ["--decoder-layer-map", "0,1,2"]
    elif case == "map-range":
        args += ["--decoder-layer-map", "0,9"]
    elif case == "map-syntax":
        args += ["--decoder-layer-map", "a,b"]
    elif case == "no-map":
        args[1] = str(make_checkpoint("t5", encoder_layers=2, decoder_layers=2, seed=1))  # no nash.json
    elif case == "map-without-teacher":
        index = args.index("--teacher")
        del args[index : index + 2]
        args += ["--decoder-layer-map", "0,3"]
    elif case == "resume-nothing":
        args += ["--resume"]
    elif case == "existing-output":
        (tmp_path / "out").mkdir()
    elif case == "interrupted":
        (tmp_path / "out.partial").mkdir()
    elif case == "bad-lr":
        args += ["--lr", "0"]
    elif case == "bad-keep":
        args += ["--keep", "worst"]
    elif case == "bad-precision":
        args += ["--mixed-precision", "fp8"]
    elif case == "masked-student":  # distill trained the unmasked weights and wrote "masked" with no masks
        args[1] = str(write_masked(tmp_path / "masked", Path(setup["student"])))
    elif case == "masked-teacher":
        replace("--teacher", write_masked(tmp_path / "masked-teacher", Path(setup["teacher"])))
    elif case == "latin1-data":
        (tmp_path / "latin1.jsonl").write_bytes('{"document": "caf\u00e9", "summary": "x"}\n'.encode("latin-1"))
        replace("--data", tmp_path / "latin1.jsonl")
    before = snapshot(tmp_path)
    result = cli(*args)
    assert_user_error(result, *fragments)
    assert snapshot(tmp_path) == before


def test_sigkill_and_resume_give_the_same_weights(setup, tmp_path, cli, tokenizer):
    from transformers import AutoModelForSeq2SeqLM

    from nash_cli.toy import tiny_config

    # A student with dropout, so the random state must be restored too.
    config = tiny_config("t5", vocab_size=len(tokenizer), decoder_layers=2)
    config.dropout_rate = 0.1
    torch.manual_seed(7)
    student = write_checkpoint(tmp_path / "dropout-student", AutoModelForSeq2SeqLM.from_config(config), tokenizer)
    # Many steps after the states the kills wait for, so a kill lands mid-run even on a slow machine.
    common = [
        "distill", student, "--teacher", setup["teacher"], "--data", setup["train"], "--eval-data", setup["eval"],
        "--decoder-layer-map", "0,3", "--max-steps", "40", "--save-every", "3", "--eval-every", "4",
        "--batch-size", "3", "--log-every", "1", "--json",
    ]  # fmt: skip
    reference = cli(*common, "-o", tmp_path / "reference")
    assert reference.exit_code == 0, reference.stderr

    out = tmp_path / "out"
    partial = tmp_path / "out.partial"
    command = [sys.executable, "-m", "nash_cli", *map(str, common), "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # 1. Killed from outside once a state exists.
    kill_when(command, lambda: (latest_step(partial) or 0) >= 3, env=env, cwd=ROOT)
    assert not out.exists()  # it was interrupted
    first = latest_step(partial)
    assert first is not None and 3 <= first < 40
    # 2. Resumed, then killed again once it has written a newer state.
    kill_when([*command, "--resume"], lambda: (latest_step(partial) or 0) > first, env=env, cwd=ROOT)
    assert not out.exists()
    second = latest_step(partial)
    assert second is not None and first < second < 40
    # 3. Resumed to the end.
    resumed = run_nash(*common, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from"] == second
    assert not partial.exists()

    expected, got = weights(tmp_path / "reference"), weights(out)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    reference_steps = [json.loads(line)["step"] for line in (tmp_path / "reference" / "train_log.jsonl").read_text().splitlines()]
    assert steps == reference_steps


def test_two_processes_match_one_with_the_same_global_batch(setup, tmp_path, cli):
    common = [
        "distill", setup["student"], "--teacher", setup["teacher"], "--data", setup["train"],
        "--eval-data", setup["eval"], "--max-steps", "4", "--eval-every", "2", "--keep", "last", "--json",
    ]  # fmt: skip
    one = cli(*common, "-o", tmp_path / "one", "--batch-size", "4")
    assert one.exit_code == 0, one.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = run_nash(*common, "-o", tmp_path / "two", "--batch-size", "2", launcher=launcher)
    assert two.returncode == 0, two.stderr
    summary = json.loads(two.stdout)  # only rank 0 prints: exactly one JSON document
    assert summary["processes"] == 2 and summary["global_batch_size"] == 4
    assert summary["eval"]["eval_loss"] == pytest.approx(one.json()["eval"]["eval_loss"], rel=1e-5)
    expected, got = weights(tmp_path / "one"), weights(tmp_path / "two")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_batch_larger_than_the_data_is_one_batch_of_all_of_it(setup, tmp_path, cli):
    # Before, --batch-size 100000 on 24 examples filled each step by repeating every example
    # 4,167 times, without a word: 4,167 times the work for the same gradient.
    result = cli(
        "distill", setup["student"], "--teacher", setup["teacher"], "--data", setup["train"],
        "--max-steps", "1", "--batch-size", "100000", "-o", tmp_path / "out", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert summary["global_batch_size"] == 24
    assert any("--batch-size 100000 is larger than the 24 training examples" in note for note in summary["notes"])
    manifest = json.loads((tmp_path / "out" / "nash.json").read_text())
    assert manifest["arguments"]["batch_size"] == 24  # what it trained with
    # Through --grad-accum the global batch may still exceed the data: kept, and said.
    result = cli(
        "distill", setup["student"], "--teacher", setup["teacher"], "--data", setup["train"],
        "--max-steps", "1", "--batch-size", "10", "--grad-accum", "3", "-o", tmp_path / "accum", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert summary["global_batch_size"] == 30
    assert any("each step repeats some of them" in note for note in summary["notes"])


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_two_processes_train_a_compact_model_with_empty_layers(family, tmp_path, tokenizer):
    """Layer 0 keeps no heads, layer 1 no FFN units: parameters no step uses must not stall DDP
    (accelerate's default find_unused_parameters=False fails at step 2 on them)."""
    from nash_cli import modeling
    from nash_cli.toy import tiny_config

    base = tiny_config(family, vocab_size=len(tokenizer), encoder_layers=2).to_dict()
    base.pop("model_type", None)
    base.update(encoder_heads=[[], [0, 1, 2, 3]], encoder_ffn_dims=[20, 0])
    config_class, model_class = modeling.classes(family)
    torch.manual_seed(0)
    student = write_checkpoint(tmp_path / "student", model_class(config_class(**base)), tokenizer)
    data = write_task(tmp_path / "train.jsonl", 8)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = run_nash(
        "distill", student, "--data", data, "-o", tmp_path / "out", "--max-steps", "3", "--batch-size", "2",
        "--json", launcher=launcher,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["steps"] == 3
    assert set(weights(tmp_path / "out")) == set(weights(student))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_student_trains_in_float32_and_is_written_in_its_dtype(
    dtype, tmp_path, cli, tokenizer, make_checkpoint, monkeypatch
):
    """In its storage dtype a bf16 student barely changes at --lr 3e-5 and an fp16 one ends in NaN."""
    from nash_cli.toy import tiny_model
    from nash_cli.train.loop import Trainer

    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    full = write_checkpoint(tmp_path / "float32", tiny_model("t5", vocab_size=len(tokenizer)), tokenizer)
    # loaded in half precision as transformers does it: a float16 T5 keeps its `wo` in float32
    half = AutoModelForSeq2SeqLM.from_pretrained(full, dtype=getattr(torch, dtype))
    student = write_checkpoint(tmp_path / "student", half, tokenizer)
    trained_in: set[torch.dtype] = set()
    setup = Trainer.setup

    def recording_setup(self, *args, **kwargs):
        trained_in.update(p.dtype for p in self.student.parameters() if p.requires_grad)
        trained_in.update(p.dtype for p in self.teacher.parameters())
        return setup(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "setup", recording_setup)
    done = cli(
        "distill", student, "--teacher", student, "--data", write_task(tmp_path / "train.jsonl", 16),
        "-o", tmp_path / "out", "--lr", "3e-5", "--max-steps", "4", "--batch-size", "4", "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert trained_in == {torch.float32}
    notes = done.json()["notes"]
    assert any(f"stored in {dtype}: it trains in float32 (pass --mixed-precision" in note for note in notes), notes
    assert any(f"teacher is stored in {dtype}: it runs in float32" in note for note in notes), notes
    written, before = weights(tmp_path / "out"), weights(student)
    assert {name: t.dtype for name, t in written.items()} == {name: t.dtype for name, t in before.items()}
    assert getattr(torch, dtype) in {t.dtype for t in written.values()}
    if dtype == "float16":
        assert torch.float32 in {t.dtype for t in written.values()}  # each tensor keeps its own dtype
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == dtype
    changed = sum(int((written[k] != before[k]).sum()) for k in before) / sum(t.numel() for t in before.values())
    assert changed > 0.05


def test_resume_refuses_a_different_student(setup, tmp_path, cli, tokenizer, monkeypatch):
    """Other weights of the same shapes resumed silently (and were recorded as the parent of weights
    that descend from the first student); other shapes ended in a traceback."""
    from transformers import AutoModelForSeq2SeqLM

    from nash_cli.toy import tiny_model
    from nash_cli.train import state as st

    student = tmp_path / "first"
    shutil.copytree(setup["student"], student)
    common = ["--teacher", setup["teacher"], "--data", setup["train"], "-o", tmp_path / "out", "--max-steps", "4", "--save-every", "2"]
    save = st.StateStore.save

    def save_then_stop(self, step, *args, **kwargs):
        save(self, step, *args, **kwargs)
        raise KeyboardInterrupt  # stands in for a kill after the state was committed

    monkeypatch.setattr(st.StateStore, "save", save_then_stop)
    assert cli("distill", student, *common).exit_code != 0  # nash reports the interruption
    monkeypatch.setattr(st.StateStore, "save", save)
    partial = tmp_path / "out.partial"
    assert st.latest_state(partial) is not None

    same_shapes = AutoModelForSeq2SeqLM.from_config(AutoModelForSeq2SeqLM.from_pretrained(student).config)
    other_shapes = tiny_model("t5", vocab_size=len(tokenizer), d_ff=48, decoder_layers=2)
    for name, model in (("same-shapes", same_shapes), ("other-shapes", other_shapes)):
        other = write_checkpoint(tmp_path / name, model, tokenizer)
        shutil.copyfile(student / "nash.json", other / "nash.json")  # the same layer map
        before = snapshot(tmp_path)
        result = cli("distill", other, *common, "--resume")
        assert_user_error(result, "cannot resume", "student weights differ", "--student the run started from", "--force")
        assert snapshot(tmp_path) == before
    # the student it started from still resumes
    resumed = cli("distill", student, *common, "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.json()["resumed_from"] == 2


def test_layerdrop_is_off_while_training_and_kept_in_the_output(tmp_path, tokenizer, cli):
    # A layer skipped by LayerDrop has no hidden state for the layer-wise loss: before, distilling a
    # student whose config had encoder_layerdrop > 0 (M2M100's default) failed with a KeyError.
    model = tiny_model("bart", vocab_size=len(tokenizer))
    model.config.encoder_layerdrop = model.config.decoder_layerdrop = 0.9
    teacher = write_checkpoint(tmp_path / "teacher", model, tokenizer)
    data = write_task(tmp_path / "train.jsonl", 8)
    result = cli(
        "distill", teacher, "--teacher", teacher, "--data", data, "--max-steps", "2", "--batch-size", "4",
        "-o", tmp_path / "out", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert any("LayerDrop (encoder 0.9, decoder 0.9) is off" in note for note in result.json()["notes"])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["encoder_layerdrop"], config["decoder_layerdrop"]) == (0.9, 0.9)
