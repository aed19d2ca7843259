"""`nash bench`: interleaved timing, statistics, fixed lengths, breakdown, and the CLI's errors."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from conftest import assert_user_error, snapshot
from nash_cli.arch import count_parameters
from nash_cli.batches import random_batches, text_batches
from nash_cli.timing import (
    BenchSettings,
    run_bench,
    speedup_stats,
    summarize,
)
from nash_cli.generation import resolve_settings
from nash_cli.toy import tiny_model



def test_summary_statistics_match_numpy():
    numpy = pytest.importorskip("numpy")
    values = [0.31, 0.12, 0.5, 0.2, 0.22, 0.9, 0.25, 0.27, 0.3, 0.11, 0.4]
    stats = summarize(values)
    assert stats["median"] == pytest.approx(numpy.median(values))
    assert stats["p90"] == pytest.approx(numpy.percentile(values, 90))
    assert stats["p99"] == pytest.approx(numpy.percentile(values, 99))
    assert (stats["min"], stats["max"]) == (0.11, 0.9)


def test_speedup_is_a_ratio_of_medians_with_per_repeat_spread():
    baseline = [1.0, 1.2, 3.0, 1.1]  # repeat 3 hit a slow machine: both models slowed down
    model = [0.5, 0.6, 1.5, 0.5]
    stats = speedup_stats(baseline, model)
    assert stats["value"] == pytest.approx(statistics.median(baseline) / statistics.median(model))
    assert stats["ratios"] == pytest.approx([2.0, 2.0, 2.0, 2.2])
    assert (stats["per_repeat"]["min"], stats["per_repeat"]["max"]) == pytest.approx((2.0, 2.2))
    with pytest.raises(ValueError):
        speedup_stats([1.0], [1.0, 2.0])


@pytest.mark.parametrize("family", ["t5", "t5-gated", "bart"])
def test_parameters_split_into_encoder_decoder_embeddings(family):
    model = tiny_model(family, encoder_layers=2, decoder_layers=1)
    params = count_parameters(model)
    unique = {id(p): p for p in model.parameters()}
    assert params["total"] == sum(p.numel() for p in unique.values())
    assert params["encoder"] + params["decoder"] + params["embeddings"] == params["total"]
    shared = model.get_input_embeddings().weight
    untied = model.lm_head.weight is not shared  # T5 v1.0 and BART tie it, T5 v1.1 does not
    assert untied == (family == "t5-gated")
    # every nn.Embedding counts (T5's relative-position tables, BART's learned positions) plus an untied head
    tables = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.weight is not shared)
    assert params["embeddings"] == shared.numel() + tables + (model.lm_head.weight.numel() if untied else 0)
    assert params["non_embedding"] == params["total"] - params["embeddings"]
    assert params["encoder"] > params["decoder"] > 0


def _models():
    return {
        "teacher": tiny_model("t5", encoder_layers=2, decoder_layers=4, d_model=64, d_ff=128, seed=1),
        "student": tiny_model("t5", encoder_layers=2, decoder_layers=1, d_model=64, d_ff=128, seed=2),
    }


def test_run_bench_interleaves_and_reports_sane_numbers():
    models = _models()
    batches = random_batches(vocab_size=128, batch_size=3, source_length=10, num_batches=2, eos_token_id=1, seed=4)
    generation = {name: resolve_settings(m, num_beams=2, fixed_length=5) for name, m in models.items()}
    calls = []
    result = run_bench(
        models,
        batches,
        generation,
        BenchSettings(repeats=3, warmup=1, breakdown=True),
        baseline="teacher",
        on_call=lambda phase, name: calls.append((phase, name)),
    )
    timed = [name for phase, name in calls if phase == "timed"]
    forward, backward = ["teacher"] * 2 + ["student"] * 2, ["student"] * 2 + ["teacher"] * 2
    assert timed == forward + backward + forward  # interleaved within every repeat, alternating order
    assert [phase for phase, _ in calls[:4]] == ["warmup"] * 4

    reports = {report.name: report for report in result.models}
    for name, report in reports.items():
        assert len(report.repeat_s) == 3 and all(t > 0 for t in report.repeat_s)
        assert report.latency_s["min"] <= report.latency_s["median"] <= report.latency_s["p90"] <= report.latency_s["p99"] <= report.latency_s["max"]
        assert report.mean_generated_length == 5.0  # fixed length really fixes it
        assert report.samples_per_s == pytest.approx(6 * 3 / sum(report.repeat_s))
        assert report.tokens_per_s == pytest.approx(5 * report.samples_per_s)
        assert report.generation == {"num_beams": 2, "max_new_tokens": 5, "min_new_tokens": 5, "compile": False}
        assert report.peak_memory["kind"] == "cpu_rss" and report.peak_memory["peak_mib"] > 10
        weights = sum(p.numel() * 4 for p in models[name].parameters()) / 2**20
        assert report.peak_memory["weights_mib"] == pytest.approx(weights, rel=0.05)  # + buffers, if any
        assert report.peak_memory["increase_mib"] >= 0
        assert report.parameters == count_parameters(models[name])
        parts = report.breakdown["seconds"]
        assert sum(parts.values()) == pytest.approx(report.breakdown["total_s"])
        assert min(parts["encoder"], parts["decoder_layers"], parts["lm_head"]) > 0
        assert len(report.breakdown["decoder_layer_s"]) == len(models[name].decoder.block)
        assert report.breakdown["decoder_steps"] == 5 * 2  # 5 steps on each of 2 batches
    assert reports["teacher"].speedup is None
    for name in ("student",):
        speedup = reports[name].speedup
        ratios = [b / m for b, m in zip(reports["teacher"].repeat_s, reports[name].repeat_s)]
        assert speedup["ratios"] == pytest.approx(ratios)
        assert speedup["value"] == pytest.approx(
            statistics.median(reports["teacher"].repeat_s) / statistics.median(reports[name].repeat_s)
        )
    # One decoder layer instead of four is faster, even on a busy 2-core machine.
    assert reports["student"].speedup["value"] > 1.0
    assert result.inputs["batch_sizes"] == [3, 3] and result.inputs["source_lengths"] == [10, 10]
    assert {"device", "device_name", "threads", "torch", "transformers", "nash"} <= result.environment.keys()
    json.dumps(result.to_dict())


def test_random_and_text_batches(tokenizer):
    first = random_batches(vocab_size=50, batch_size=4, source_length=6, low=4, eos_token_id=1, seed=7)
    again = random_batches(vocab_size=50, batch_size=4, source_length=6, low=4, eos_token_id=1, seed=7)
    assert torch.equal(first[0].input_ids, again[0].input_ids)
    body = first[0].input_ids[:, :-1]
    assert body.min() >= 4 and body.max() < 50 and (first[0].input_ids[:, -1] == 1).all()
    batches = text_batches(tokenizer, ["the cat .", "a b c d e f", "dog"], batch_size=2)
    assert [b.size for b in batches] == [2, 1]
    assert batches[0].attention_mask.sum(dim=1).tolist() == [4, 7]  # with </s>


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def checkpoints(make_checkpoint):
    return (
        make_checkpoint("t5", encoder_layers=2, decoder_layers=2),
        make_checkpoint("t5", encoder_layers=2, decoder_layers=1),
    )


def test_cli_json_report(checkpoints, cli, tmp_path):
    teacher, student = checkpoints
    out = tmp_path / "bench.json"
    result = cli(
        "bench", student, "--baseline", teacher, "--batch", "2", "--beams", "2", "--fixed-length", "4",
        "--source-length", "8", "--repeats", "2", "--threads", "1", "--json", "-o", out,
    )
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert json.loads(out.read_text()) == report
    assert report["baseline"] == str(teacher)
    assert [m["name"] for m in report["models"]] == [str(teacher), str(student)]
    for model in report["models"]:
        assert model["mean_generated_length"] == 4.0
        assert {"median", "p90", "p99"} <= model["latency_s"].keys()
        assert model["samples_per_s"] > 0 and model["tokens_per_s"] > 0
        assert {"total", "encoder", "decoder"} <= model["parameters"].keys()
    assert report["models"][1]["speedup"]["value"] > 0
    assert report["environment"]["threads"] == 1 and report["environment"]["dtype"] == "float32"
    assert report["inputs"]["kind"] == "random" and report["inputs"]["source_lengths"] == [8]
    again = cli("bench", student, "--baseline", teacher, "--repeats", "1", "-o", out)
    assert_user_error(again, "already exists", "--force")


def test_cli_table_and_data_inputs(checkpoints, cli, tmp_path):
    teacher, student = checkpoints
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"dialogue": f"the cat sat on mat {i} ."}) + "\n" for i in range(5)))
    result = cli(
        "bench", student, teacher, "--data", data, "--source-column", "dialogue", "--batch", "2",
        "--num-batches", "2", "--beams", "1", "--max-new-tokens", "3", "--repeats", "1", "--breakdown",
        "-o", tmp_path / "bench.json",
    )
    assert result.exit_code == 0, result.stderr
    assert "median" in result.stdout and "where the time goes" in result.stdout
    assert "speedup" not in result.stdout  # no --baseline, no speedups
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["inputs"]["kind"] == "data" and report["inputs"]["batch_sizes"] == [2, 2]  # 4 of 5 records
    assert report["inputs"]["source_tokens_mean"] == 8.0  # "the cat sat on mat N ." + </s>
    assert all(0 < m["mean_generated_length"] <= 3 for m in report["models"])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--beams", "0"], "--beams must be at least 1"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--repeats", "0"], "--repeats"),
        (["--device", "tpu"], "--device"),
        (["--dtype", "int8"], "--dtype"),
        (["--source-column", "x"], "give --data"),
        (["--fixed-length", "0"], "--fixed-length"),
        (["--fixed-length", "8", "--max-new-tokens", "9"], "drop --max-new-tokens"),
        (["--threads", "0"], "--threads"),
        (["--compile", "--breakdown"], "--breakdown"),
    ],
)
def test_cli_bad_options_exit_2(checkpoints, cli, tmp_path, args, fragment):
    result = cli("bench", checkpoints[1], "--baseline", checkpoints[0], "-o", tmp_path / "b.json", *args)
    assert_user_error(result, fragment)
    assert snapshot(tmp_path) == set()


def test_cli_missing_model_exits_2(checkpoints, cli, tmp_path):
    result = cli("bench", tmp_path / "nope", "--baseline", checkpoints[0], "-o", tmp_path / "b.json")
    assert_user_error(result, "nope")
    assert not (tmp_path / "b.json").exists()


def test_cli_source_length_beyond_positions(make_checkpoint, cli):
    bart = make_checkpoint("bart")
    result = cli("bench", bart, "--source-length", "100000", "--repeats", "1")
    assert_user_error(result, "--source-length 100000 exceeds")
