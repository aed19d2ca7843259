"""`nash demo` wiring, with the training stages cut to a few steps (the full demo is minutes)."""

from __future__ import annotations

import importlib.util
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
    exported = importlib.util.find_spec("ctranslate2") is not None  # else the demo skips its export
    assert [row[0] for row in rows] == ["teacher", "NASH (2 DL)"] + (["NASH (2 DL) ct2 int8"] if exported else [])
    assert header[3] == "rougeL" and rows[0][-1] == "1.00x" and all(row[-1].endswith(")") for row in rows[1:])
    run = tmp_path / "demo"
    assert (run / "00-inputs" / "train.jsonl").is_file()
    first = json.loads((run / "00-inputs" / "train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"report", "summary"}
    for name in ("report.md", "quality_vs_speedup.png", "encoder_structure.png", "recipe.yaml"):
        assert (run / name).is_file(), name
    compact = json.loads((run / "04-compact" / "nash.json").read_text())
    assert compact["state"] == "compact"
    assert compact["layer_map"]["decoder"] == [0, 5]
    if exported:
        manifest = json.loads((run / "06-export" / "nash.json").read_text())
        assert manifest["stage"] == "export" and manifest["quantization"] == "int8"
        assert manifest["parent"]["path"] == str(run / "05-distill")
        assert (run / "08-eval" / "exported" / "metrics.json").is_file()


def test_demo_never_writes_into_a_directory_nash_did_not_make(tmp_path, cli):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work\n")
    result = cli("demo", "-o", mine)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert f"error: run directory {mine} holds files but no run.json" in result.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]  # no 00-inputs/, recipe.yaml or run.json
    assert not list(tmp_path.glob(".*nash-lock"))
