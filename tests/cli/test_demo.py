"""`nash demo` wiring, with the training stages cut to a few steps (the full demo is minutes)."""

from __future__ import annotations

import json


def test_demo_runs_the_whole_pipeline_offline(tmp_path, cli):
    short = [
        "--set", "finetune_teacher.max_steps=3",
        "--set", "prune_encoder.max_steps=3",
        "--set", "distill.max_steps=3",
        "--set", "bench.repeats=1",
        "--set", "bench.warmup=1",
        "--set", "bench.threads=1",
    ]
    result = cli("demo", "-o", tmp_path / "demo", *short, "--json")
    assert result.exit_code == 0, result.stderr
    assert "nash demo: about " in result.stderr  # the expected duration; stdout stays JSON
    out = result.json()
    header, rows = out["table1"]["header"], out["table1"]["rows"]
    assert [row[0] for row in rows] == ["teacher", "NASH (2 DL)", "NASH (2 DL) ct2 int8"]
    assert header[3] == "rougeL" and rows[0][-1] == "1.00x" and rows[1][-1].endswith(")") and rows[2][-1].endswith(")")
    run = tmp_path / "demo"
    assert (run / "00-inputs" / "train.jsonl").is_file()
    first = json.loads((run / "00-inputs" / "train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"report", "summary"}
    for name in ("report.md", "quality_vs_speedup.png", "encoder_structure.png", "recipe.yaml"):
        assert (run / name).is_file(), name
    compact = json.loads((run / "04-compact" / "nash.json").read_text())
    assert compact["state"] == "compact"
    assert compact["layer_map"]["decoder"] == [0, 5]
    exported = json.loads((run / "06-export" / "nash.json").read_text())
    assert exported["stage"] == "export" and exported["quantization"] == "int8"
    assert exported["parent"]["path"] == str(run / "05-distill")
    assert (run / "08-eval" / "exported" / "metrics.json").is_file()
