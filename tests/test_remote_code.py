"""A checkpoint's own code runs only with --trust-remote-code, and nash never lets transformers ask.

The hostile checkpoint is a stock T5 whose `tokenizer_config.json` (or `config.json`) has an
`auto_map` naming a Python file beside the weights; importing that file writes a marker. Every
command that reads a checkpoint must refuse it in one line that names the file and the flag, with
nothing written and no marker, even with "y" waiting on stdin (transformers' own prompt would take
it as consent). With `--trust-remote-code` the file is a harmless subclass and the load goes on.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS, assert_user_error, snapshot

ROOT = Path(__file__).resolve().parents[1]

TOKENIZER_CODE = """
from pathlib import Path

Path({marker!r}).write_text("the checkpoint's own code ran")

from transformers import TokenizersBackend


class MarkerTokenizer(TokenizersBackend):
    \"\"\"A harmless subclass: loading it proves only that the code ran.\"\"\"
"""

CONFIG_CODE = """
from pathlib import Path

Path({marker!r}).write_text("the checkpoint's own code ran")

from transformers import T5Config


class MarkerConfig(T5Config):
    model_type = "t5"
"""


def hostile(make_checkpoint, root: Path, *, where: str = "tokenizer") -> tuple[Path, Path]:
    """A copy of the tiny T5 checkpoint whose `where` config names its own Python file.

    Returns:
        `(checkpoint, marker)`: the marker file appears only if that Python file is imported.
    """
    checkpoint = root / f"hostile-{where}"
    shutil.copytree(make_checkpoint("t5"), checkpoint)
    marker = root / "MARKER"
    if where == "tokenizer":
        (checkpoint / "tokenization_marker.py").write_text(TOKENIZER_CODE.format(marker=str(marker)))
        path, entry = checkpoint / "tokenizer_config.json", {"AutoTokenizer": [None, "tokenization_marker.MarkerTokenizer"]}
    else:
        (checkpoint / "configuration_marker.py").write_text(CONFIG_CODE.format(marker=str(marker)))
        path, entry = checkpoint / "config.json", {"AutoConfig": "configuration_marker.MarkerConfig"}
    document = json.loads(path.read_text())
    document["auto_map"] = entry
    path.write_text(json.dumps(document, indent=2))
    return checkpoint, marker


@pytest.fixture
def workspace(tmp_path, make_checkpoint):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"source": line, "target": line}) + "\n" for line in CORPUS))
    return tmp_path, data


def commands(checkpoint: Path, data: Path, out: Path) -> dict[str, list]:
    """Every command that reads a checkpoint, each with the least it needs to reach the load."""
    text = ["--data", data, "--source-column", "source", "--target-column", "target"]
    return {
        "eval": ["eval", checkpoint, *text, "--limit", "2", "-o", out / "metrics.json"],
        "bench": ["bench", checkpoint, "--repeats", "1", "--source-length", "8", "-o", out / "bench.json"],
        "bench-data": ["bench", checkpoint, *text[:4], "--repeats", "1", "--batch", "2", "-o", out / "bench.json"],
        "select-layers": ["select-layers", checkpoint, "--decoder-layers", "1", "-o", out / "student"],
        "distill": ["distill", checkpoint, *text, "--max-steps", "1", "-o", out / "final"],
        "distill-teacher": ["distill", checkpoint, "--teacher", checkpoint, *text, "--max-steps", "1", "-o", out / "final"],
        "prune-encoder": [
            "prune-encoder", checkpoint, "--teacher", checkpoint, *text, "--target-sparsity", "0.3",
            "--max-steps", "1", "-o", out / "pruned",
        ],
        "export": ["export", checkpoint, "-o", out / "ct2"],
    }


NAMES = ["eval", "bench", "bench-data", "select-layers", "distill", "distill-teacher", "prune-encoder", "export"]


def _needs(name: str) -> None:
    if name == "export":
        pytest.importorskip("ctranslate2")


@pytest.mark.parametrize("name", NAMES)
def test_every_command_refuses_a_checkpoints_code_even_with_yes_on_stdin(name, workspace, make_checkpoint, cli, monkeypatch):
    _needs(name)
    root, data = workspace
    checkpoint, marker = hostile(make_checkpoint, root)
    out = root / "out"
    before = snapshot(root)
    # transformers' prompt reads sys.stdin: a "y" there would be taken as consent.
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))
    result = cli(*commands(checkpoint, data, out)[name])
    assert_user_error(result, "tokenization_marker.py would run", "tokenizer_config.json", "--trust-remote-code")
    assert "[y/N]" not in result.stdout + result.stderr
    assert not marker.exists()
    assert snapshot(root) == before


@pytest.mark.parametrize("name", ["eval", "select-layers", "distill-teacher"])
def test_code_named_by_the_config_is_refused_too(name, workspace, make_checkpoint, cli):
    root, data = workspace
    checkpoint, marker = hostile(make_checkpoint, root, where="config")
    before = snapshot(root)
    result = cli(*commands(checkpoint, data, root / "out")[name])
    assert_user_error(result, "configuration_marker.py would run", "config.json", "--trust-remote-code")
    assert not marker.exists()
    assert snapshot(root) == before


def test_a_piped_yes_in_a_real_process_runs_nothing(workspace, make_checkpoint):
    """The report's case as it happened: `nash eval` in a shell with `y` piped on stdin."""
    root, data = workspace
    checkpoint, marker = hostile(make_checkpoint, root)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(root / "hf"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "nash_cli", *map(str, commands(checkpoint, data, root / "out")["eval"])],
        input="y\ny\ny\n", check=False, capture_output=True, text=True, env=env, cwd=root, timeout=240,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1 and "--trust-remote-code" in run.stderr
    assert not marker.exists() and not (root / "out").exists()


def test_with_trust_remote_code_the_code_may_run(workspace, make_checkpoint, cli):
    root, data = workspace
    checkpoint, marker = hostile(make_checkpoint, root)
    result = cli(*commands(checkpoint, data, root / "out")["eval"], "--trust-remote-code", "--json")
    assert result.exit_code == 0, result.stderr
    assert marker.exists()  # the positive control: this file does run when it is allowed to
    assert (root / "out" / "metrics.json").is_file()


def test_nash_never_imports_its_own_modeling_file_from_a_checkpoint(tmp_path, make_checkpoint):
    """A compact checkpoint names modeling_nash_*.py; nash uses its packaged classes instead, so a
    tampered copy beside the weights never runs (and needs no --trust-remote-code)."""
    import torch

    from nash_cli import artifact
    from nash_cli.surgery.compact import compact_model

    model = artifact.load_model(make_checkpoint("t5"))
    heads = torch.ones(2, 4)
    heads[0, 1] = 0
    compact, custom = compact_model(model, heads, torch.ones(2, 64))
    assert custom
    out = tmp_path / "compact"
    compact.save_pretrained(out)
    marker = tmp_path / "MARKER"
    (out / "modeling_nash_t5.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    for name in artifact.TOKENIZER_FILES:
        if (make_checkpoint("t5") / name).is_file():
            shutil.copy(make_checkpoint("t5") / name, out / name)
    for trust in (False, True):  # even where the user allows a checkpoint's code
        loaded = artifact.load_model(out, trust_remote_code=trust)
        assert type(loaded).__module__ == "nash_cli.modeling.modeling_nash_t5"
        assert artifact.load_tokenizer(out, trust_remote_code=trust)("the dog")["input_ids"]
    assert not marker.exists()
