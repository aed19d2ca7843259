"""Resumable states that are damaged: `--resume` refuses them in one line, naming the file and the
fix, and changes nothing (the run is not started, the state is kept)."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from conftest import CORPUS
from nash_cli.data import Example, tokenize_examples
from nash_cli.errors import NashError
from nash_cli.toy import tiny_model
from nash_cli.train import state as st
from nash_cli.train.config import TrainConfig
from nash_cli.train.loop import train

WORDS = sorted({w for line in CORPUS for w in line.split() if w.isalpha()})
STEP = "step-00000002"


def config(directory: Path, **kwargs) -> TrainConfig:
    settings = dict(output=directory / "out", max_steps=4, batch_size=4, lr=3e-3, save_every=2, log_every=1, show_progress=False)
    settings.update(kwargs)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def features(tokenizer):
    rng = random.Random(0)
    examples = [Example(" ".join(rng.choices(WORDS, k=3)), ["a b"]) for _ in range(16)]
    return tokenize_examples(examples, tokenizer)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, tokenizer, features):
    """A run of 4 steps stopped right after its state at step 2: `<dir>/out.partial/`."""
    directory = tmp_path_factory.mktemp("interrupted")
    save = st.StateStore.save

    def save_then_stop(self, step, *args, **kwargs):
        save(self, step, *args, **kwargs)
        raise KeyboardInterrupt  # stands in for a SIGKILL after the state was committed

    st.StateStore.save = save_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config(directory, eval_every=1), tiny_model("t5", vocab_size=len(tokenizer)), features, pad_token_id=0, eval_features=features[:4])
    finally:
        st.StateStore.save = save
    partial = directory / "out.partial"
    assert st.latest_state(partial) == partial / STEP
    assert (partial / best_dir(partial) / "model.safetensors").is_file()
    return partial


def best_dir(partial: Path) -> str:
    return st.best_name(st.read_progress(partial / STEP)["best"]["step"])


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def files(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


CASES = {
    "progress-truncated": (lambda p: truncate(p / STEP / st.PROGRESS), ["progress.json is cut short"]),
    "progress-no-step": (lambda p: (p / STEP / st.PROGRESS).write_text('{"epoch": 0}'), ["progress.json has no step"]),
    "optimizer-missing": (lambda p: (p / STEP / "optimizer.pt").unlink(), ["optimizer.pt is missing"]),
    "optimizer-truncated": (lambda p: truncate(p / STEP / "optimizer.pt"), ["optimizer.pt is cut short"]),
    "scheduler-truncated": (lambda p: truncate(p / STEP / "scheduler.pt"), ["scheduler.pt is cut short"]),
    "weights-truncated": (lambda p: truncate(p / STEP / "model.safetensors"), ["model.safetensors is not a readable"]),
    "best-weights-missing": (lambda p: shutil.rmtree(p / best_dir(p)), ["model.safetensors is missing"]),
    "run-json-truncated": (lambda p: truncate(p / st.RUN), ["run.json is cut short"]),
    "run-json-missing": (lambda p: (p / st.RUN).unlink(), ["run.json is missing"]),
}


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_state_is_refused_in_one_line_and_kept(case, interrupted, tmp_path, tokenizer, features):
    damage, fragments = CASES[case]
    partial = tmp_path / "out.partial"
    shutil.copytree(interrupted, partial)
    damage(partial)
    before = files(tmp_path)
    with pytest.raises(NashError) as raised:
        train(config(tmp_path, resume=True, eval_every=1), tiny_model("t5", vocab_size=len(tokenizer)), features, pad_token_id=0, eval_features=features[:4])
    message = str(raised.value)
    assert "\n" not in message
    for fragment in [*fragments, "--force instead of --resume", str(partial)]:
        assert fragment in message, (fragment, message)
    assert files(tmp_path) == before, "a refused resume changed the staging directory"
    assert not (tmp_path / "out").exists()


def test_the_undamaged_state_resumes(interrupted, tmp_path, tokenizer, features):
    # The fixture's state is sound: the refusals above are the damage, not the fixture.
    shutil.copytree(interrupted, tmp_path / "out.partial")
    result = train(config(tmp_path, resume=True, eval_every=1), tiny_model("t5", vocab_size=len(tokenizer)), features, pad_token_id=0, eval_features=features[:4])
    assert result.resumed_from == 2 and result.steps == 4


def test_check_state_returns_the_progress_record(interrupted):
    progress = st.check_state(interrupted / STEP)
    assert progress["step"] == 2
    assert json.loads((interrupted / STEP / st.PROGRESS).read_text()) == progress
    with pytest.raises(NashError, match="extension.pt is missing"):
        st.check_state(interrupted / STEP, extension=True)
    torch.manual_seed(0)  # the fixture's run reseeded torch; leave the global state as a fresh test expects


def _resume(tmp_path, tokenizer, features, **kwargs):
    eval_features = kwargs.pop("eval_features", features[:4])
    return train(
        config(tmp_path, resume=True, eval_every=1), tiny_model("t5", vocab_size=len(tokenizer)), features,
        pad_token_id=0, eval_features=eval_features, **kwargs,
    )  # fmt: skip


def _edit_fingerprint(partial: Path, **changes) -> None:
    run = json.loads((partial / st.RUN).read_text())
    for key, value in changes.items():
        if value is None:
            run["fingerprint"].pop(key, None)
        else:
            run["fingerprint"][key] = value
    (partial / st.RUN).write_text(json.dumps(run))


def test_resume_refuses_other_models_and_other_eval_data(interrupted, tmp_path, tokenizer, features):
    partial = tmp_path / "out.partial"
    shutil.copytree(interrupted, partial)
    _edit_fingerprint(partial, student="sha256:" + "a" * 64, teacher=None)
    before = files(tmp_path)
    with pytest.raises(NashError) as raised:
        _resume(tmp_path, tokenizer, features, models={"student": "sha256:" + "b" * 64, "teacher": None})
    message = str(raised.value)
    assert "the student weights differ" in message and "sha256:aaaaaaaaaaaa then, sha256:bbbbbbbbbbbb now" in message
    assert "--force without --resume" in message and "\n" not in message
    with pytest.raises(NashError, match="eval_data differ from the interrupted run's"):
        _resume(tmp_path, tokenizer, features, eval_features=features[4:8], models={"student": "sha256:" + "a" * 64})
    assert files(tmp_path) == before


def test_a_run_json_of_an_earlier_version_still_resumes(interrupted, tmp_path, tokenizer, features):
    """Earlier versions recorded neither the models nor the eval data: their absence is no change."""
    partial = tmp_path / "out.partial"
    shutil.copytree(interrupted, partial)
    _edit_fingerprint(partial, eval_data=None, student=None, teacher=None)
    result = _resume(tmp_path, tokenizer, features, models={"student": "sha256:" + "c" * 64, "teacher": None})
    assert result.resumed_from == 2 and result.steps == 4
