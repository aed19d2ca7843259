"""The training engine in-process: learning, distillation, batching equivalences, the extension
interface, divergence, best-checkpoint selection and resuming."""

from __future__ import annotations

import json
import random
import re
import sys

import pytest
import torch

from conftest import CORPUS
from nash_cli.data import Example, tokenize_examples
from nash_cli.errors import NashError
from nash_cli.toy import tiny_model
from nash_cli.train.config import TrainConfig
from nash_cli.train.loop import TrainingDiverged, train
from nash_cli.train.outputs import save_output
from nash_cli.train.extension import BaseExtension, TrainingExtension

WORDS = sorted({w for line in CORPUS for w in line.split() if w.isalpha()})


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models run fastest on one thread, and a fixed thread count keeps results bitwise stable.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def copy_task(n: int, seed: int = 0) -> list[Example]:
    """Copy 2-6 random words: targets of different lengths, so padding matters."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        words = " ".join(rng.choices(WORDS, k=rng.randint(2, 6)))
        examples.append(Example(words, [words]))
    return examples


@pytest.fixture(scope="module")
def features(tokenizer):
    return tokenize_examples(copy_task(48), tokenizer)


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def config(tmp_path, **kwargs) -> TrainConfig:
    defaults = dict(output=tmp_path / "out", max_steps=6, batch_size=4, lr=3e-3, save_every=0, log_every=1, show_progress=False)
    defaults.update(kwargs)
    return TrainConfig(**defaults)


def model(family, tokenizer, **kwargs):
    kwargs.setdefault("vocab_size", len(tokenizer))
    return tiny_model(family, **kwargs)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_tiny_models_learn_and_distil(family, tokenizer, features, tmp_path):
    # Fine-tune a teacher (no teacher: plain cross-entropy); its loss must fall well below the start.
    teacher = model(family, tokenizer, decoder_layers=4)
    settings = dict(max_steps=120, batch_size=8, log_every=10, warmup_steps=10)
    fine_tuned = train(config(tmp_path / "t", **settings), teacher, features, pad_token_id=0)
    log = read_log(fine_tuned.partial / "train_log.jsonl")
    assert "kl" not in log[0] and fine_tuned.objective["teacher"] is False
    assert log[-1]["ce"] < 0.5 * log[0]["ce"], (log[0], log[-1])

    # Distil a shallower student from it: the student's KL to the teacher falls.
    student = model(family, tokenizer, decoder_layers=2, seed=1)
    distilled = train(
        config(tmp_path / "s", **settings),
        student,
        features,
        pad_token_id=0,
        teacher=fine_tuned.model,
        encoder_layer_map=[0, 1],
        decoder_layer_map=[0, 3],
    )
    log = read_log(distilled.partial / "train_log.jsonl")
    assert {"loss", "ce", "kl", "enc_mse", "dec_mse"} <= log[0].keys()
    assert log[-1]["kl"] < 0.5 * log[0]["kl"], (log[0], log[-1])
    assert log[-1]["loss"] < log[0]["loss"]
    assert all(line["lr"] > 0 for line in log)


def test_grad_accumulation_matches_one_big_batch(tokenizer, features, tmp_path):
    teacher = model("t5", tokenizer, decoder_layers=3, seed=3)
    runs = []
    for batch_size, grad_accum in ((4, 1), (2, 2), (1, 4)):
        student = model("t5", tokenizer, seed=5)
        result = train(
            config(tmp_path / f"b{batch_size}", batch_size=batch_size, grad_accum=grad_accum, max_steps=4),
            student,
            features,
            pad_token_id=0,
            teacher=teacher,
            encoder_layer_map=[0, 1],
            decoder_layer_map=[0, 2],
        )
        runs.append(result.model.state_dict())
    for other in runs[1:]:
        for name, value in runs[0].items():
            torch.testing.assert_close(other[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_freeze_embeddings_and_tied_head_note(tokenizer, features, tmp_path):
    for family in ("t5", "t5-gated"):
        student = model(family, tokenizer)
        embedding = student.get_input_embeddings().weight.detach().clone()
        head = student.get_output_embeddings().weight.detach().clone()
        result = train(config(tmp_path / family, freeze_embeddings=True), student, features, pad_token_id=0)
        assert torch.equal(result.model.get_input_embeddings().weight, embedding)
        tied = family == "t5"
        assert any("lm_head" in note for note in result.notes) == tied
        # T5 v1.1's own lm_head still trains; T5 v1.0's is the embedding matrix.
        assert torch.equal(result.model.get_output_embeddings().weight, head) == tied


def test_best_checkpoint_is_the_output(tokenizer, features, tmp_path):
    from nash_cli.data import Seq2SeqCollator
    from nash_cli.train.losses import cross_entropy

    eval_features = features[:8]
    for keep in ("best", "last"):
        student = model("t5", tokenizer, seed=2)
        result = train(
            config(tmp_path / keep, max_steps=12, lr=3e-2, eval_every=3, keep=keep),
            student,
            features,
            pad_token_id=0,
            eval_features=eval_features,
        )
        log = read_log(result.partial / "train_log.jsonl")
        evals = [line for line in log if "eval_loss" in line]
        assert [line["step"] for line in evals] == [3, 6, 9, 12]
        best = min(evals, key=lambda line: line["eval_loss"])
        assert result.best == {"step": best["step"], "eval_loss": best["eval_loss"]}
        # The returned weights give the selected evaluation's loss.
        batch = Seq2SeqCollator(0)(eval_features)
        result.model.eval()
        with torch.no_grad():
            logits = result.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                decoder_input_ids=result.model.prepare_decoder_input_ids_from_labels(labels=batch["labels"]),
            ).logits
        expected = best["eval_loss"] if keep == "best" else evals[-1]["eval_loss"]
        assert cross_entropy(logits, batch["labels"]).item() == pytest.approx(expected, rel=1e-5)
        assert result.selected == ("best" if keep == "best" else "last")


class Toy(BaseExtension):
    """A trivial extension shaped like prune-encoder's: a parameter pulled towards 1 (lr 0.1), a
    multiplier pushed up by gradient ascent (lr -0.1) and clamped after each step."""

    name = "toy"

    def __init__(self, nan_at: int | None = None, stop_at: int | None = None):
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.multiplier = torch.nn.Parameter(torch.zeros(()))
        self.steps_seen = 0
        self.nan_at = nan_at
        self.stop_at = stop_at

    def prepare(self, model, device):
        self.scale.data = self.scale.data.to(device)
        self.multiplier.data = self.multiplier.data.to(device)

    def param_groups(self):
        return [{"params": [self.scale], "lr": 0.1}, {"params": [self.multiplier], "lr": -0.1}]

    def loss(self, step, total_steps):
        gap = self.scale - 1.0
        value = gap**2 + self.multiplier * 0.5
        if self.nan_at is not None and step + 1 == self.nan_at:
            value = value * float("nan")
        return value, {"toy_gap": gap.item(), "toy_multiplier": self.multiplier.item()}

    def after_optimizer_step(self, step):
        self.steps_seen = step
        with torch.no_grad():
            self.multiplier.clamp_(max=0.35)
        if self.stop_at is not None and step == self.stop_at:
            raise KeyboardInterrupt  # stands in for a crash right after a state was written

    def state_dict(self):
        return {"scale": self.scale.detach(), "multiplier": self.multiplier.detach(), "steps_seen": self.steps_seen}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.scale.copy_(state["scale"])
            self.multiplier.copy_(state["multiplier"])
        self.steps_seen = state["steps_seen"]

    def extra_files(self):
        def write(directory):
            (directory / "toy.json").write_text(json.dumps({"scale": self.scale.item()}))

        return {"toy.json": write}

    def manifest_extra(self):
        return {"toy": {"multiplier": self.multiplier.item()}}


def test_extension_interface(tokenizer, features, tmp_path, make_checkpoint):
    assert isinstance(Toy(), TrainingExtension)
    source = make_checkpoint("t5")
    student = model("t5", tokenizer)
    extension = Toy()
    result = train(config(tmp_path, max_steps=8), student, features, pad_token_id=0, extension=extension)
    log = read_log(result.partial / "train_log.jsonl")
    assert [line["step"] for line in log] == list(range(1, 9))
    assert log[-1]["toy_gap"] > log[0]["toy_gap"] == -1.0  # descent pulls the scale towards 1
    assert 0.3 < extension.multiplier.item() <= 0.35  # ascent pushed it up; the hook clamped it
    assert extension.steps_seen == 8
    # The logged loss includes the extension's term.
    assert log[0]["loss"] == pytest.approx(log[0]["ce"] + 1.0, rel=1e-5)
    save_output(result, tmp_path / "out", source=source, stage="test", arguments={}, extension=extension)
    out = tmp_path / "out"
    assert json.loads((out / "toy.json").read_text())["scale"] == pytest.approx(extension.scale.item())
    manifest = json.loads((out / "nash.json").read_text())
    assert manifest["toy"]["multiplier"] == pytest.approx(0.35)
    assert manifest["training"]["steps"] == 8
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 8
    assert not result.partial.exists()


def test_nan_loss_stops_with_last_state_kept(tokenizer, features, tmp_path):
    student = model("t5", tokenizer)
    with pytest.raises(TrainingDiverged, match="became nan at step 5.*step-00000004") as raised:
        train(config(tmp_path, max_steps=8, save_every=2), student, features, pad_token_id=0, extension=Toy(nan_at=5))
    assert "\n" not in str(raised.value)
    assert "fp16" not in str(raised.value)  # the run computes in float32: no hint about fp16
    partial = tmp_path / "out.partial"
    assert (partial / "latest").read_text() == "step-00000004"
    assert not (tmp_path / "out").exists()
    with pytest.raises(NashError, match="interrupted run; pass --resume"):
        train(config(tmp_path, max_steps=8), model("t5", tokenizer), features, pad_token_id=0)
    # Diverging before any state exists leaves nothing behind to block the next run.
    with pytest.raises(TrainingDiverged, match="no state was saved yet"):
        train(config(tmp_path / "early", save_every=2), model("t5", tokenizer), features, pad_token_id=0, extension=Toy(nan_at=1))
    assert not (tmp_path / "early").exists() or not any((tmp_path / "early").iterdir())


def test_resume_in_process_matches_uninterrupted(tokenizer, features, tmp_path, make_checkpoint):
    teacher = model("t5", tokenizer, decoder_layers=3, seed=3)

    def run(directory, **kwargs):
        extension = kwargs.pop("extension")
        student = model("t5", tokenizer, seed=4)
        settings = dict(max_steps=7, save_every=3, eval_every=2, batch_size=3, grad_accum=2)
        settings.update(kwargs)
        result = train(
            config(directory, **settings),
            student,
            features,
            pad_token_id=0,
            teacher=teacher,
            eval_features=features[:6],
            decoder_layer_map=[0, 2],
            extension=extension,
        )
        return result, extension

    reference, reference_extension = run(tmp_path / "a", extension=Toy())
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", extension=Toy(stop_at=4))  # crashes after the state at step 3
    assert (tmp_path / "b" / "out.partial" / "latest").read_text() == "step-00000003"
    resumed, resumed_extension = run(tmp_path / "b", extension=Toy(), resume=True)
    assert resumed.resumed_from == 3 and resumed.best == reference.best
    for name, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert torch.equal(resumed_extension.multiplier, reference_extension.multiplier)
    assert torch.equal(resumed_extension.scale, reference_extension.scale)
    # The log holds every step once, as if the run had not been interrupted.
    steps = [line["step"] for line in read_log(resumed.partial / "train_log.jsonl") if "eval_loss" not in line]
    assert steps == list(range(1, 8))


def test_a_state_cut_short_while_writing_is_ignored_on_resume(tokenizer, features, tmp_path, monkeypatch):
    """A kill while a state is being written leaves only its temporary directory: `latest` still
    names the previous state, resuming starts there, and the half-written directory goes away."""
    from nash_cli.train import state as st

    def run(directory, **kwargs):
        settings = dict(max_steps=8, save_every=3, batch_size=3)
        settings.update(kwargs)
        return train(config(directory, **settings), model("t5", tokenizer, seed=4), features, pad_token_id=0)

    reference = run(tmp_path / "a")
    save_tensors = st.save_tensors

    def cut_short(obj, path):
        if path.parent.name == ".tmp-step-00000006" and path.name == "optimizer.pt":
            raise KeyboardInterrupt  # stands in for a SIGKILL after the weights, before the rest
        save_tensors(obj, path)

    monkeypatch.setattr(st, "save_tensors", cut_short)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b")
    monkeypatch.setattr(st, "save_tensors", save_tensors)
    partial = tmp_path / "b" / "out.partial"
    assert (partial / "latest").read_text() == "step-00000003"
    assert (partial / ".tmp-step-00000006" / "model.safetensors").is_file()  # the half-written one
    assert not (partial / "step-00000006").exists()
    assert st.latest_state(partial) == partial / "step-00000003"

    resumed = run(tmp_path / "b", resume=True)
    assert resumed.resumed_from == 3
    assert not (partial / ".tmp-step-00000006").exists()
    for name, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    steps = [line["step"] for line in read_log(partial / "train_log.jsonl")]
    assert steps == list(range(1, 9))


def test_latest_state_ignores_what_is_not_a_complete_state(tmp_path):
    from nash_cli.train import state as st

    partial = tmp_path / "out.partial"
    (partial / "step-00000003").mkdir(parents=True)
    (partial / "step-00000003" / st.PROGRESS).write_text('{"step": 3}')
    (partial / ".tmp-step-00000006").mkdir()
    (partial / ".tmp-step-00000006" / st.PROGRESS).write_text('{"step": 6}')
    (partial / "step-00000009").mkdir()  # renamed into place, but without its progress record
    assert st.latest_state(partial) is None  # no pointer yet
    for name, expected in (("step-00000003", "step-00000003"), (".tmp-step-00000006", None), ("step-00000009", None)):
        st.write_text_atomic(partial / st.LATEST, name)
        assert st.latest_state(partial) == (partial / expected if expected else None), name


PLAIN_LINE = re.compile(
    r"^(?P<stage>[\w-]+) step (?P<step>\d+)/(?P<total>\d+) \(\d+%\) loss \d+\.\d{4}(?P<kl> kl \d+\.\d{4})? "
    r"lr \d\.\de[-+]\d\d \| \d+\.\d\d steps/s, elapsed \d+:\d\d, eta \d+:\d\d$"
)


def test_progress_lines_when_stderr_is_not_a_terminal(tokenizer, features, tmp_path, capsys):
    teacher = model("t5", tokenizer, decoder_layers=3, seed=3)
    settings = dict(max_steps=5, log_every=2, show_progress=True)
    capsys.readouterr()
    train(config(tmp_path / "d", **settings), model("t5", tokenizer), features, pad_token_id=0, teacher=teacher, decoder_layer_map=[0, 2])
    lines = [line for line in capsys.readouterr().err.splitlines() if " step " in line]
    matches = [PLAIN_LINE.match(line) for line in lines]
    assert all(matches), lines
    # every --log-every steps and at the end, labelled "distill" (a teacher), with the KL
    assert [(m["stage"], int(m["step"]), int(m["total"]), bool(m["kl"])) for m in matches] == [
        ("distill", 2, 5, True), ("distill", 4, 5, True), ("distill", 5, 5, True),
    ]  # fmt: skip

    # Without a teacher "train"; a caller names its stage; show_progress=False prints nothing.
    train(config(tmp_path / "t", **settings), model("t5", tokenizer), features, pad_token_id=0)
    train(config(tmp_path / "p", **settings), model("t5", tokenizer), features, pad_token_id=0, progress="prune-encoder")
    train(config(tmp_path / "q", **{**settings, "show_progress": False}), model("t5", tokenizer), features, pad_token_id=0)
    lines = [line for line in capsys.readouterr().err.splitlines() if " step " in line]
    assert [(m["stage"], int(m["step"]), bool(m["kl"])) for m in map(PLAIN_LINE.match, lines)] == [
        ("train", 2, False), ("train", 4, False), ("train", 5, False),
        ("prune-encoder", 2, False), ("prune-encoder", 4, False), ("prune-encoder", 5, False),
    ]  # fmt: skip


def test_progress_bar_on_a_terminal_and_a_given_reporter(tokenizer, features, tmp_path, capsys, monkeypatch):
    from nash_cli.progress import LogProgress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    capsys.readouterr()
    train(config(tmp_path / "bar", max_steps=4, log_every=2, show_progress=True), model("t5", tokenizer), features, pad_token_id=0)
    err = capsys.readouterr().err
    assert "train" in err and "4/4" in err  # the Rich bar
    assert not [line for line in err.splitlines() if PLAIN_LINE.match(line.strip())], err

    # A reporter the caller made: the loop sets its total, reports every step, leaves it open.
    given = LogProgress("custom", every=3)
    train(config(tmp_path / "given", max_steps=4), model("t5", tokenizer), features, pad_token_id=0, progress=given)
    assert (given.total, given.completed) == (4, 4)
    lines = [line for line in capsys.readouterr().err.splitlines() if " step " in line]
    assert [(m["stage"], int(m["step"]), int(m["total"])) for m in map(PLAIN_LINE.match, lines)] == [
        ("custom", 3, 4), ("custom", 4, 4),
    ]  # fmt: skip
