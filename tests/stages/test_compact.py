"""`compact`: the compact model equals the masked one, reloads anywhere, and refuses bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_user_error
from nash_cli import artifact
from nash_cli.surgery.compact import compact_model
from nash_cli.masking import attach_fixed, encoder_shape, write_mask_file
from nash_cli.toy import tiny_model

ROOT = Path(__file__).resolve().parents[2]




def _masks(family, shape):
    """Hand-made masks covering the hard cases.

    Layer 0 loses every head (T5: the layer that owns the relative position bias), layer 1 keeps
    heads that are not a prefix, layer 2 keeps all heads but loses every FFN unit.
    """
    heads = torch.ones(shape.num_layers, shape.num_heads)
    heads[0] = 0
    heads[1, 0] = 0
    heads[1, 2] = 0
    ffn = (torch.rand(shape.num_layers, shape.d_ff, generator=torch.Generator().manual_seed(7)) > 0.4).float()
    ffn[2] = 0
    return heads, ffn


def _batch(vocab=96):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(4, vocab, (3, 11), generator=generator)
    attention = torch.ones_like(ids)
    attention[0, 7:] = 0
    attention[2, 9:] = 0
    return ids, attention, torch.randint(4, vocab, (3, 6), generator=generator)


def _outputs(model, ids, attention, decoder):
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=attention, decoder_input_ids=decoder, output_hidden_states=True)
        tokens = model.generate(input_ids=ids, attention_mask=attention, num_beams=4, max_new_tokens=12, do_sample=False)
    return out, tokens


@pytest.mark.parametrize("family", ["t5", "t5-gated", "bart"])
def test_compact_equals_masked(family):
    model = tiny_model(family, vocab_size=96, d_model=32, num_heads=4, d_ff=64, encoder_layers=4, decoder_layers=2)
    heads, ffn = _masks(family, encoder_shape(model))
    hooks = attach_fixed(model, heads, ffn)
    ids, attention, decoder = _batch()
    masked, masked_tokens = _outputs(model, ids, attention, decoder)
    compact, custom = compact_model(model, heads, ffn)
    out, tokens = _outputs(compact, ids, attention, decoder)
    assert custom
    assert (out.logits - masked.logits).abs().max() < 1e-4
    for a, b in zip(out.encoder_hidden_states, masked.encoder_hidden_states):
        assert (a - b).abs().max() < 1e-4
    assert torch.equal(tokens, masked_tokens)
    # the masks matter: without them the encoder computes something else
    hooks.remove()
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=attention, decoder_input_ids=decoder).encoder_last_hidden_state
    assert (plain - out.encoder_last_hidden_state).abs().max() > 1e-2
    # the pruned parameters are gone
    removed = encoder_shape(model).params_per_head * int((heads == 0).sum()) + encoder_shape(
        model
    ).params_per_unit * int((ffn == 0).sum())
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in compact.parameters()) == removed
    if family == "t5-gated":  # v1.1's own lm_head survives compaction untied
        assert torch.equal(compact.lm_head.weight, model.lm_head.weight)
        assert not torch.equal(compact.lm_head.weight, compact.shared.weight)


def test_uniform_widths_give_a_stock_config():
    from transformers import BartForConditionalGeneration, T5ForConditionalGeneration

    bart = tiny_model("bart", d_ff=64)
    shape = encoder_shape(bart)
    ffn = torch.ones(shape.num_layers, shape.d_ff)
    ffn[0, :24] = 0
    ffn[1, 10:34] = 0
    attach_fixed(bart, torch.ones(shape.num_layers, shape.num_heads), ffn)
    ids, attention, decoder = _batch()
    masked, _ = _outputs(bart, ids, attention, decoder)
    compact, custom = compact_model(bart, torch.ones(shape.num_layers, shape.num_heads), ffn)
    assert not custom and type(compact) is BartForConditionalGeneration
    assert compact.config.model_type == "bart" and compact.config.encoder_ffn_dim == 40
    assert not hasattr(compact.config, "auto_map") or not compact.config.auto_map
    out, _ = _outputs(compact, ids, attention, decoder)
    assert (out.encoder_last_hidden_state - masked.encoder_last_hidden_state).abs().max() < 1e-4

    # stock T5 shares one width between encoder and decoder: only "nothing pruned" stays stock
    t5 = tiny_model("t5")
    shape = encoder_shape(t5)
    full = (torch.ones(shape.num_layers, shape.num_heads), torch.ones(shape.num_layers, shape.d_ff))
    compact, custom = compact_model(t5, *full)
    assert not custom and type(compact) is T5ForConditionalGeneration
    uniform_ffn = full[1].clone()
    uniform_ffn[:, :8] = 0
    assert compact_model(t5, full[0], uniform_ffn)[1]


# --------------------------------------------------------------------------- checkpoints and CLI


def write_masked(path: Path, model, heads, ffn, *, source: Path) -> Path:
    """A masked checkpoint as prune-encoder writes it."""

    def masks(directory: Path) -> None:
        write_mask_file(
            directory / "masks.safetensors",
            heads_log_alpha=heads * 8 - 4,
            ffn_log_alpha=ffn * 8 - 4,
            heads_mask=heads,
            ffn_mask=ffn,
        )

    return artifact.save_checkpoint(
        model, path, source=source, stage="prune-encoder", arguments={}, state="masked",
        extra_files={"masks.safetensors": masks},
    )


@pytest.fixture(scope="module")
def compacted(tmp_path_factory, tokenizer):
    """Per family: a masked checkpoint, its compact output (via the CLI) and the masked reference outputs."""
    from conftest import write_checkpoint
    from nash_cli.cli.app import main

    root = tmp_path_factory.mktemp("compact")
    made = {}
    for family in ("t5", "t5-gated", "bart"):
        model = tiny_model(family, vocab_size=len(tokenizer), d_model=32, num_heads=4, d_ff=64, encoder_layers=4)
        source = write_checkpoint(root / f"{family}-dense", model, tokenizer)
        heads, ffn = _masks(family, encoder_shape(model))
        masked_dir = write_masked(root / f"{family}-masked", model, heads, ffn, source=source)
        attach_fixed(model, heads, ffn)
        ids, attention, decoder = _batch(len(tokenizer))
        reference, tokens = _outputs(model, ids, attention, decoder)
        out = root / f"{family}-compact"
        try:
            main(["compact", str(masked_dir), "-o", str(out), "--json"])
        except SystemExit as done:
            assert done.code in (0, None)
        made[family] = {"masked": masked_dir, "compact": out, "logits": reference.logits, "tokens": tokens,
                        "heads": heads, "ffn": ffn, "dense": source}
    return made


def test_cli_output_and_manifest(compacted, cli, tmp_path):
    item = compacted["t5"]
    files = {p.name for p in item["compact"].iterdir()}
    assert {"config.json", "model.safetensors", "modeling_nash_t5.py", "nash.json", "tokenizer.json"} <= files
    assert "masks.safetensors" not in files
    config = json.loads((item["compact"] / "config.json").read_text())
    assert config["model_type"] == "t5"  # stock: AutoTokenizer reads it without code
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_nash_t5.NashT5ForConditionalGeneration"
    assert config["encoder_heads"] == [[], [1, 3], [0, 1, 2, 3], [0, 1, 2, 3]]
    assert config["encoder_ffn_dims"] == [int(r.sum()) for r in item["ffn"]]
    manifest = json.loads((item["compact"] / "nash.json").read_text())
    assert manifest["stage"] == "compact" and manifest["state"] == "compact"
    assert manifest["compact"]["heads_per_layer"] == [0, 2, 4, 4]
    assert manifest["parent"]["path"] == str(item["masked"].absolute())

    result = cli("compact", item["masked"], "-o", tmp_path / "again")
    assert result.exit_code == 0, result.stderr
    for fragment in ("before", "after", "heads kept", "FFN units kept", "0/4", "2/4", "MiB"):
        assert fragment in result.stdout, fragment
    result = cli("compact", item["masked"], "-o", tmp_path / "json", "--json")
    summary = result.json()
    assert summary["heads"] == [0, 2, 4, 4] and summary["custom_code"] is True
    assert summary["parameters"]["after"]["total"] < summary["parameters"]["before"]["total"]
    assert summary["file_size"] == (tmp_path / "json" / "model.safetensors").stat().st_size


@pytest.mark.parametrize("family", ["t5", "t5-gated", "bart"])
def test_nash_loads_compact_without_remote_code(compacted, family):
    item = compacted[family]
    model = artifact.load_model(item["compact"])  # trust_remote_code=False
    assert type(model).__module__.startswith("nash_cli.modeling")
    ids, attention, decoder = _batch(model.config.vocab_size)
    out, tokens = _outputs(model, ids, attention, decoder)
    assert (out.logits - item["logits"]).abs().max() < 1e-4
    assert torch.equal(tokens, item["tokens"])


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_nash_still_loads_compact_outputs_of_earlier_versions(compacted, family, tmp_path):
    """Earlier nash wrote `model_type` "nash_t5" / "nash_bart"; such checkpoints keep loading."""
    import shutil

    legacy = tmp_path / "legacy"
    shutil.copytree(compacted[family]["compact"], legacy)
    config = json.loads((legacy / "config.json").read_text())
    config["model_type"] = f"nash_{family}"
    (legacy / "config.json").write_text(json.dumps(config))
    model = artifact.load_model(legacy)
    assert type(model).__module__.startswith("nash_cli.modeling")
    ids, attention, decoder = _batch(model.config.vocab_size)
    out, _ = _outputs(model, ids, attention, decoder)
    assert (out.logits - compacted[family]["logits"]).abs().max() < 1e-4


def test_stock_transformers_loads_compact_in_a_fresh_process_without_nash(compacted, tmp_path):
    """trust_remote_code=True in an isolated interpreter where `import nash_cli` fails."""
    from safetensors.torch import load_file, save_file

    ids, attention, decoder = _batch(compacted["t5"]["logits"].shape[-1])
    save_file({"ids": ids, "attention": attention, "decoder": decoder}, str(tmp_path / "batch.safetensors"))
    script = """
import importlib.util, json, sys
sys.path.extend(json.loads(sys.argv[2]))  # site-packages, without the .pth files of editable installs
assert importlib.util.find_spec("nash_cli") is None, "nash_cli is importable"
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSeq2SeqLM
batch = load_file("batch.safetensors")
out = {}
for name, path in json.loads(sys.argv[1]).items():
    model = AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True).eval()
    assert not type(model).__module__.startswith("nash_cli"), type(model).__module__
    with torch.no_grad():
        out[name + ".logits"] = model(input_ids=batch["ids"], attention_mask=batch["attention"],
                                      decoder_input_ids=batch["decoder"]).logits
        out[name + ".tokens"] = model.generate(input_ids=batch["ids"], attention_mask=batch["attention"],
                                               num_beams=4, max_new_tokens=12, do_sample=False)
    assert "nash_cli" not in sys.modules
save_file({k: v.contiguous() for k, v in out.items()}, "out.safetensors")
"""
    paths = {family: str(item["compact"]) for family, item in compacted.items()}
    # A checkpoint saved again from the loaded nash class (as distill does) carries the code too.
    resaved = tmp_path / "resaved"
    artifact.load_model(compacted["t5-gated"]["compact"]).save_pretrained(resaved)
    assert (resaved / "modeling_nash_t5.py").is_file()
    assert json.loads((resaved / "config.json").read_text())["auto_map"]["AutoConfig"] == "modeling_nash_t5.NashT5Config"
    paths["resaved"] = str(resaved)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="1")
    # -I -S: no PYTHONPATH, no current directory, no site processing, so an installed nash (an
    # editable install is a .pth file in site-packages) stays out of reach; the libraries are
    # put back on the path by hand.
    import site

    libraries = json.dumps([p for p in site.getsitepackages() if "site-packages" in p])
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, json.dumps(paths), libraries],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = load_file(str(tmp_path / "out.safetensors"))
    for family, item in compacted.items():
        assert (out[f"{family}.logits"] - item["logits"]).abs().max() < 1e-4, family
        assert torch.equal(out[f"{family}.tokens"], item["tokens"]), family
    assert (out["resaved.logits"] - compacted["t5-gated"]["logits"]).abs().max() < 1e-4


STOCK_USE = """
import importlib.util, json, sys
nash = json.loads(sys.argv[3])
if not nash:
    sys.path.extend(json.loads(sys.argv[2]))  # site-packages, without the .pth files of editable installs
    assert importlib.util.find_spec("nash_cli") is None, "nash_cli is importable"
else:
    import nash_cli  # noqa: F401  (importable, not imported by transformers)
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline
report = {}
for name, path in json.loads(sys.argv[1]).items():
    row = report[name] = {}
    tokenizer = AutoTokenizer.from_pretrained(path)
    row["tokenizer"] = type(tokenizer).__name__
    row["ids"] = tokenizer("the quick brown fox")["input_ids"]
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(path)
        row["untrusted"] = "loaded " + type(model).__name__
    except Exception as error:
        row["untrusted"] = type(error).__name__ + ": " + str(error)
    model = AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True)
    row["trusted"] = type(model).__name__
    try:
        generator = pipeline("text2text-generation", model=path, trust_remote_code=True)
        row["pipeline"] = generator("the quick brown fox", max_new_tokens=4)[0]["generated_text"]
    except KeyError as error:
        row["pipeline_error"] = str(error)
assert nash or "nash_cli" not in sys.modules
open("report.json", "w").write(json.dumps(report))
"""


@pytest.mark.parametrize("nash_importable", [False, True], ids=["without-nash", "with-nash"])
def test_stock_transformers_uses_a_compact_checkpoint_without_a_prompt(compacted, tmp_path, nash_importable):
    """Issue 14: what a new user types, in a fresh process with stdin closed (a prompt would show
    on stdout and read end-of-file), with and without nash importable."""
    import site

    paths = {family: str(item["compact"]) for family, item in compacted.items()}
    paths["stock"] = str(compacted["t5"]["dense"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("TRANSFORMERS_VERBOSITY", None)  # transformers' own warnings stay on, as a user sees them
    libraries = json.dumps([p for p in site.getsitepackages() if "site-packages" in p])
    command = [sys.executable, "-I", "-S", "-c", STOCK_USE, json.dumps(paths), libraries, "false"]
    if nash_importable:
        env["PYTHONPATH"] = str(ROOT)
        command = [sys.executable, "-c", STOCK_USE, json.dumps(paths), libraries, "true"]
    run = subprocess.run(
        command, check=False, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout == ""  # no "Do you wish to run the custom code? [y/N]"
    for noise in ("custom code", "trust_remote_code", "model of type"):
        assert noise not in run.stderr.split("LOAD REPORT")[0], (noise, run.stderr[-2000:])
    report = json.loads((tmp_path / "report.json").read_text())
    tokenizer = artifact.load_tokenizer(compacted["t5"]["compact"])
    for family in compacted:
        row = report[family]
        assert row["ids"] == tokenizer("the quick brown fox")["input_ids"], family
        assert row["trusted"] == "Nash" + {"bart": "Bart"}.get(family, "T5") + "ForConditionalGeneration"
        # Without trust_remote_code a stock model is built and refuses the narrower weights:
        # an error, never a silently wrong model.
        assert row["untrusted"].startswith("RuntimeError") and "mismatched" in row["untrusted"], row["untrusted"]
        if "pipeline_error" in row:
            # transformers 5 removed the task for every model: the stock checkpoint fails the same way.
            assert row["pipeline_error"] == report["stock"]["pipeline_error"]
            assert "has been removed" in row["pipeline_error"]
        else:
            assert isinstance(row["pipeline"], str)
    assert report["stock"]["untrusted"] == "loaded T5ForConditionalGeneration"


def documented_snippets() -> list[tuple[str, str]]:
    """The Python blocks of the docs that load a nash output with stock transformers."""
    import re

    found = []
    for name in ("README.md", "docs/compact.md", "docs/getting-started.md"):
        for block in re.findall(r"```python\n(.*?)```", (ROOT / name).read_text(), flags=re.DOTALL):
            if "AutoTokenizer.from_pretrained(" in block and "trust_remote_code=True" in block:
                found.append((name, block))
    return found


@pytest.mark.parametrize("doc, snippet", documented_snippets(), ids=[name for name, _ in documented_snippets()])
def test_the_documented_snippet_runs_verbatim_without_nash(doc, snippet, compacted, tmp_path):
    """Issue 14: the README's and docs' loading snippets, run as written on a compact output."""
    import ast
    import re
    import site

    for directory in set(re.findall(r'from_pretrained\("([^"]+)"', snippet)):
        (tmp_path / directory.rstrip("/")).symlink_to(compacted["t5-gated"]["compact"], target_is_directory=True)
    libraries = [p for p in site.getsitepackages() if "site-packages" in p]
    prelude = (
        "import importlib.util, sys\n"
        f"sys.path.extend({libraries!r})\n"
        "assert importlib.util.find_spec('nash_cli') is None, 'nash_cli is importable'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TRANSFORMERS_VERBOSITY"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", prelude + snippet], check=False, cwd=tmp_path, env=env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, (doc, run.stderr[-3000:])
    # stdout holds what the snippet prints (the decoded outputs) and nothing from transformers.
    printed = ast.literal_eval(run.stdout.strip())
    assert isinstance(printed, list) and len(printed) == 1 and isinstance(printed[0], str), run.stdout
    assert "custom code" not in run.stderr and "model of type" not in run.stderr, run.stderr[-2000:]


# --------------------------------------------------------------------------- bad inputs


def test_refuses_a_dense_checkpoint(compacted, cli, tmp_path):
    result = cli("compact", compacted["t5"]["dense"], "-o", tmp_path / "out")
    assert_user_error(result, "nothing to compact")
    result = cli("compact", compacted["t5"]["compact"], "-o", tmp_path / "out")
    assert_user_error(result, "compact checkpoint", "nothing to compact")
    assert not (tmp_path / "out").exists()


def test_refuses_missing_or_corrupt_masks(compacted, cli, tmp_path):
    import shutil

    broken = tmp_path / "masked"
    shutil.copytree(compacted["bart"]["masked"], broken)
    (broken / "masks.safetensors").unlink()
    assert_user_error(cli("compact", broken, "-o", tmp_path / "out"), "masks.safetensors is missing")
    (broken / "masks.safetensors").write_bytes(b"not a safetensors file at all")
    assert_user_error(cli("compact", broken, "-o", tmp_path / "out"), "not a readable safetensors")
    good = compacted["bart"]["masked"] / "masks.safetensors"
    (broken / "masks.safetensors").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert_user_error(cli("compact", broken, "-o", tmp_path / "out"), "masks.safetensors")
    write_mask_file(
        broken / "masks.safetensors",
        heads_log_alpha=torch.zeros(4, 2), ffn_log_alpha=torch.zeros(4, 64),
        heads_mask=torch.ones(4, 2), ffn_mask=torch.ones(4, 64),
    )
    assert_user_error(cli("compact", broken, "-o", tmp_path / "out"), "masks written with this checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masked"]  # no output, no staging leftovers


def test_refuses_missing_path_and_existing_output(compacted, cli, tmp_path):
    assert_user_error(cli("compact", tmp_path / "nope", "-o", tmp_path / "out"), "does not exist")
    (tmp_path / "taken").mkdir()
    assert_user_error(cli("compact", compacted["t5"]["masked"], "-o", tmp_path / "taken"), "--force")
    result = cli("compact", compacted["t5"]["masked"], "-o", tmp_path / "taken", "--force")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "taken" / "model.safetensors").is_file()
