"""The generation interface: both engines answer it alike, and timing runs any object that does."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from conftest import write_checkpoint
from nash_cli.batches import random_batches
from nash_cli.generation import (
    GenerationEngine,
    GenerationSettings,
    TransformersEngine,
    as_engine,
    generate,
    generated_lengths,
)
from nash_cli.timing import BenchSettings, run_bench
from nash_cli.toy import tiny_model

#: Every member of the interface: its attributes and its methods.
MEMBERS = sorted({*GenerationEngine.__annotations__, *(n for n in vars(GenerationEngine) if not n.startswith("_"))})


def _until_eos(row: list[int], eos: list[int]) -> list[int]:
    tokens = row[1:]
    ends = [i for i, token in enumerate(tokens) if token in eos]
    return tokens[: ends[0] + 1] if ends else tokens


def _lively_t5(vocab_size: int):
    """A tiny T5 whose random weights are large enough for varied outputs, some ending early."""
    model = tiny_model("t5", vocab_size=vocab_size, seed=3)
    generator = torch.Generator().manual_seed(14)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        model.lm_head.weight[1] *= 3.0  # the end token
    return model


def test_both_engines_answer_the_interface_alike(tokenizer, tmp_path):
    pytest.importorskip("ctranslate2")
    from nash_cli import artifact
    from nash_cli.export.runtime import CTranslate2Model
    from nash_cli.stages.export import ExportOptions
    from nash_cli.stages.export import run as export

    source = write_checkpoint(tmp_path / "t5", _lively_t5(len(tokenizer)), tokenizer)
    export(ExportOptions(checkpoint=str(source), output=tmp_path / "ct2", verify=False))  # float32: exact
    model = artifact.load_model(source).eval()
    engines = {
        "transformers": as_engine(model),
        "ctranslate2": as_engine(CTranslate2Model(tmp_path / "ct2", threads=1)),
    }
    assert isinstance(engines["transformers"], TransformersEngine)
    assert isinstance(engines["ctranslate2"], CTranslate2Model)  # an engine already: passed through
    assert as_engine(engines["transformers"]) is engines["transformers"]
    for engine in engines.values():
        assert all(hasattr(engine, member) for member in MEMBERS)
    hf, ct2 = engines["transformers"], engines["ctranslate2"]

    assert hf.device == ct2.device == torch.device("cpu")
    assert hf.eos_token_ids == ct2.eos_token_ids == [1]
    assert hf.parameter_counts() == ct2.parameter_counts()  # the export records its source's counts
    hf_info, ct2_info = hf.engine_info(), ct2.engine_info()
    assert (hf_info["engine"], ct2_info["engine"]) == ("transformers", "ctranslate2")
    assert hf_info["compute_type"] == ct2_info["compute_type"] == "float32"
    assert hf_info["device"] == ct2_info["device"] == "cpu" and hf_info["threads"] == ct2_info["threads"] == 1
    assert "version" in ct2_info and "version" not in hf_info  # torch's environment names transformers already
    assert (hf.compiles, ct2.compiles) == (True, False)
    assert list(hf.breakdown_parts()) == ["encoder", "decoder.0", "decoder.1", "lm_head"]
    assert ct2.breakdown_parts() is None
    assert hf.notes(1) == ct2.notes(1) == []  # greedy: nothing CTranslate2 does differently

    (batch,) = random_batches(vocab_size=model.config.vocab_size, batch_size=4, source_length=9, eos_token_id=1, seed=3)
    settings = GenerationSettings(num_beams=1, max_new_tokens=8)
    outputs = {}
    for name, engine in engines.items():
        call = engine.prepare(batch.input_ids, batch.attention_mask, settings)
        assert engine.synchronize() is None
        with torch.inference_mode():
            timed = engine.sequences(call())
        direct = engine.generate(batch.input_ids, batch.attention_mask, settings)
        assert torch.equal(timed, direct)  # the timed path and generate() are one computation
        assert torch.equal(generate(engine, batch.input_ids, batch.attention_mask, settings), direct)
        outputs[name] = direct
    rows = {name: [_until_eos(row, [1]) for row in out.tolist()] for name, out in outputs.items()}
    assert rows["transformers"] == rows["ctranslate2"]
    lengths = generated_lengths(outputs["transformers"], [1])
    assert lengths == generated_lengths(outputs["ctranslate2"], [1])
    assert len(set(map(tuple, rows["transformers"]))) > 1 and min(lengths) < 8  # varied, some end early

    for engine in engines.values():
        passes = []
        memory = engine.memory_pass(lambda: passes.append(engine.generate(batch.input_ids, batch.attention_mask, settings)))
        assert len(passes) == 1  # the pass runs once, measured
        assert memory["kind"] == "cpu_rss" and memory["weights_mib"] > 0 and memory["peak_mib"] > memory["weights_mib"]
        assert memory["increase_mib"] >= 0


class FakeEngine:
    """No torch module and no CTranslate2: only the interface, answering fixed values and counting calls."""

    compiles = False

    def __init__(self, length: int = 3):
        self.device = torch.device("cpu")
        self.length = length
        self.calls = {"prepare": 0, "call": 0, "synchronize": 0, "memory_pass": 0}

    @property
    def eos_token_ids(self) -> list[int]:
        return [7]

    def prepare(self, input_ids, attention_mask, settings):
        self.calls["prepare"] += 1
        rows = input_ids.shape[0]

        def call():
            self.calls["call"] += 1
            time.sleep(0.001)
            return rows

        return call

    def sequences(self, rows):
        body = torch.full((rows, self.length), 5)
        body[:, self.length - 1] = 7
        return torch.cat([torch.zeros(rows, 1, dtype=torch.long), body, torch.zeros(rows, 2, dtype=torch.long)], dim=1)

    def synchronize(self):
        self.calls["synchronize"] += 1

    def generate(self, input_ids, attention_mask, settings):
        return self.sequences(self.prepare(input_ids, attention_mask, settings)())

    def parameter_counts(self):
        return {"total": 42}

    def engine_info(self):
        return {"engine": "fake", "compute_type": "int4", "device": "cpu", "threads": 1, "version": "0.1"}

    def memory_pass(self, run_pass):
        self.calls["memory_pass"] += 1
        run_pass()
        return {"kind": "fake", "weights_mib": 1.0}

    def breakdown_parts(self):
        return None

    def notes(self, num_beams, *, fixed_length=False):
        return []


def test_timing_runs_any_engine_without_asking_which():
    fake = FakeEngine(length=3)
    torch_model = tiny_model("t5", encoder_layers=1, decoder_layers=1, d_model=32, d_ff=64, seed=1)
    batches = random_batches(vocab_size=100, batch_size=2, source_length=6, num_batches=2, eos_token_id=1, seed=2)
    settings = GenerationSettings(num_beams=1, max_new_tokens=4, min_new_tokens=4)
    result = run_bench(
        {"torch": torch_model, "fake": fake}, batches, {"torch": settings, "fake": settings},
        BenchSettings(repeats=3, warmup=2, breakdown=True), baseline="torch",
    )
    reports = {report.name: report for report in result.models}
    report = reports["fake"]
    # warm-up 2 + repeats 3, on 2 batches each; the last warm-up pass is the measured one
    assert fake.calls == {"prepare": 10, "call": 10, "synchronize": 10 * 2, "memory_pass": 1}
    assert report.parameters == {"total": 42} and report.engine == fake.engine_info()
    assert report.peak_memory == {"kind": "fake", "weights_mib": 1.0}
    assert report.breakdown is None and reports["torch"].breakdown is not None  # no modules: no breakdown
    assert report.mean_generated_length == 3.0  # counted up to the fake's own end token
    assert len(report.repeat_s) == 3 and min(report.repeat_s) >= 2 * 0.001
    assert report.speedup is not None and reports["torch"].engine["engine"] == "transformers"
    assert result.environment["fake"] == "0.1"  # an engine's own library version, beside torch's


def test_generation_and_ctranslate2_runtime_do_not_import_each_other():
    code = (
        "import sys, nash_cli.timing, nash_cli.stages.bench, nash_cli.stages.eval; "
        "assert 'nash_cli.export.runtime' not in sys.modules, 'generation side imports runtime'; "
        "import nash_cli.export.runtime; "
        "print(sorted(m for m in sys.modules if m.startswith('nash_cli.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "'nash_cli.export.runtime'" in done.stdout
    code = "import sys, nash_cli.export.runtime; assert 'nash_cli.generation' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
