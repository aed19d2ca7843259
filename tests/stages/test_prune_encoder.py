"""`prune-encoder`: the L0 extension of the training engine, and the command end to end."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_user_error, kill_when, latest_step
from nash_cli import artifact
from nash_cli.errors import NashError
from nash_cli.arch import count_parameters
from nash_cli.l0 import LOG_ALPHA_MAX, LOG_ALPHA_MIN, deterministic_mask, mask_sparsity, masks_for_target
from nash_cli.masking import apply_checkpoint_masks, encoder_shape, load_masks, pruned_params
from nash_cli.train.config import PruneSettings
from nash_cli.train.l0_extension import L0Extension
from nash_cli.toy import tiny_model

ROOT = Path(__file__).resolve().parents[2]




#: prune-encoder without the engine structure: the per-layer rounding these tests check
UNSTRUCTURED = ("--no-uniform-heads", "--ffn-multiple-of", "1")

def test_settings_are_checked():
    PruneSettings().check()
    for bad in (
        PruneSettings(target_sparsity=0.0),
        PruneSettings(target_sparsity=1.0),
        PruneSettings(sparsity_warmup=-1),
        PruneSettings(reg_lr=0),
        PruneSettings(droprate_init=1.0),
    ):
        with pytest.raises(NashError):
            bad.check()


def test_extension_contract(tmp_path):
    model = tiny_model("bart")
    extension = L0Extension(model, PruneSettings(target_sparsity=0.4, sparsity_warmup=0.5, reg_lr=0.02, uniform_heads=False, ffn_multiple_of=1),
        teacher_non_embedding=10**6)
    extension.prepare(model, torch.device("cpu"))
    groups = extension.param_groups()
    assert [g["lr"] for g in groups] == [0.02, -0.02]
    assert all(g["weight_decay"] == 0.0 for g in groups)
    assert {id(p) for p in groups[0]["params"]} == {id(extension.masks.heads_log_alpha), id(extension.masks.ffn_log_alpha)}
    # no mask parameter is part of the model (they must not end up in model.safetensors)
    assert not {id(p) for g in groups for p in g["params"]} & {id(p) for p in model.parameters()}

    # the target rises over the warm-up (a fraction of the run's steps), then holds
    assert extension.loss(0, 100)[1]["target_sparsity"] == 0.0
    assert extension.loss(25, 100)[1]["target_sparsity"] == pytest.approx(0.2)
    term, values = extension.loss(80, 100)
    assert values["target_sparsity"] == pytest.approx(0.4) and extension.warmup_steps == 50
    assert set(values) >= {"expected_sparsity", "deterministic_sparsity", "target_sparsity", "lambda_1", "lambda_2", "lagrangian"}
    assert float(term.detach()) == 0.0  # lambdas start at zero

    # clamp after each step
    with torch.no_grad():
        extension.masks.heads_log_alpha.fill_(-30)
        extension.masks.ffn_log_alpha.fill_(30)
    extension.after_optimizer_step(1)
    assert float(extension.masks.heads_log_alpha.detach().max()) == pytest.approx(LOG_ALPHA_MIN)
    assert float(extension.masks.ffn_log_alpha.detach().min()) == pytest.approx(LOG_ALPHA_MAX)

    # resumable state
    state = extension.state_dict()
    other = L0Extension(model, PruneSettings(), seed=5)
    other.load_state_dict(state)
    assert torch.equal(other.masks.heads_log_alpha, extension.masks.heads_log_alpha)

    # output file and manifest: the Lagrangian's masks drop every head (0.50 of the encoder), so
    # the final masks are rounded to the target 0.4: each layer drops three of its four (tied)
    # heads, the floor of its expected 3.2, lowest index first, and one FFN unit (the ceiling of
    # its expected 0.03) brings the encoder closer to the target
    shape = encoder_shape(model)
    extension.extra_files()["masks.safetensors"](tmp_path)
    masks = load_masks(tmp_path, shape)
    assert masks.heads_mask.tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]
    assert masks.ffn_mask.sum(1).tolist() == [63, 63]
    results = extension.manifest_extra()["prune_encoder"]
    assert results["lagrangian_sparsity"] == pytest.approx(8 * shape.params_per_head / shape.prunable_params)
    assert results["mask_selection"] == "ranked_to_target"
    assert results["heads_per_layer"] == [1, 1] and results["ffn_units_per_layer"] == [63, 63]
    # the per-layer counts the masks were rounded from, recorded
    assert results["log_alpha_shift"] < 0  # the run pruned too much: log_alphas raised to meet 0.4
    for expected, kept, width in (
        (results["expected_heads_dropped_per_layer"], results["heads_per_layer"], 4),
        (results["expected_ffn_units_dropped_per_layer"], results["ffn_units_per_layer"], 64),
    ):
        assert all(math.floor(e) <= width - k <= math.ceil(e) for e, k in zip(expected, kept)), (expected, kept)
    assert results["target_sparsity"] == 0.4
    removed = results["pruned_params"]
    assert removed == 6 * shape.params_per_head + 2 * shape.params_per_unit
    assert results["deterministic_sparsity"] == pytest.approx(removed / shape.prunable_params)
    assert results["whole_model_sparsity"] == pytest.approx(1 - (count_parameters(model)["non_embedding"] - removed) / 10**6)


def test_lagrangian_drives_sparsity_to_the_target():
    """The extension alone, in a minimal loop: log_alpha descends, the lambdas ascend."""
    torch.manual_seed(0)
    model = tiny_model("t5", d_model=32, num_heads=8, d_kv=4, d_ff=256)
    # the per-layer rounding without the engine structure (its steps are coarse at this tiny shape)
    settings = PruneSettings(target_sparsity=0.3, sparsity_warmup=50, reg_lr=0.1, uniform_heads=False, ffn_multiple_of=1)
    extension = L0Extension(model, settings)
    extension.prepare(model, torch.device("cpu"))
    optimizer = torch.optim.AdamW(extension.param_groups())
    model.train()
    steps = 300
    for step in range(steps):
        ids = torch.randint(4, 128, (4, 10))
        out = model(input_ids=ids, labels=ids[:, :5].contiguous())
        term, _ = extension.loss(step, steps)
        optimizer.zero_grad()
        (out.loss + term).backward()
        optimizer.step()
        extension.after_optimizer_step(step + 1)
    results = extension.results()
    assert abs(results["expected_sparsity"] - 0.3) < 0.01, results
    assert abs(results["deterministic_sparsity"] - 0.3) < 0.01, results
    assert results["lambda_2"] > 0


# --------------------------------------------------------------------------- the command


def _write_task(path: Path, n: int, seed: int = 0) -> Path:
    from conftest import CORPUS

    words = sorted({w for line in CORPUS for w in line.split() if w.isalpha()})
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(n):
            text = " ".join(rng.choices(words, k=rng.randint(3, 8)))
            handle.write(json.dumps({"document": text, "summary": " ".join(text.split()[:3])}) + "\n")
    return path


@pytest.fixture
def pipeline(tmp_path, make_checkpoint, cli):
    """A teacher with 8 small heads per layer (a head is 1/48 of an encoder layer's prunable
    parameters, as in real models), a 2-decoder-layer student from select-layers, and data."""
    teacher = make_checkpoint("t5", d_model=32, num_heads=8, d_kv=4, d_ff=256, encoder_layers=2, decoder_layers=4)
    student = tmp_path / "student"
    assert cli("select-layers", teacher, "-k", "2", "-o", student).exit_code == 0
    return {
        "teacher": str(teacher),
        "student": str(student),
        "train": str(_write_task(tmp_path / "train.jsonl", 32)),
        "eval": str(_write_task(tmp_path / "val.jsonl", 8, seed=1)),
    }


def _prune_args(pipeline, out, *extra):
    return [
        "prune-encoder", pipeline["student"], "--teacher", pipeline["teacher"], "--data", pipeline["train"],
        "-o", out, "--target-sparsity", "0.3", "--sparsity-warmup", "50", "--reg-lr", "0.1", "--lr", "1e-3",
        "--log-every", "10", *extra,
    ]  # fmt: skip


def test_round_trip_select_prune_compact_distill(pipeline, tmp_path, cli):
    """select-layers -> prune-encoder (reaches the target) -> compact (== masked) -> distill."""
    masked = tmp_path / "masked"
    result = cli(*_prune_args(pipeline, masked, "--max-steps", "300", "--eval-data", pipeline["eval"], *UNSTRUCTURED, "--json"))
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    pruning = summary["pruning"]
    # the deterministic masks reach the target within 0.01 (and so does the expectation)
    assert abs(pruning["deterministic_sparsity"] - 0.3) <= 0.01, pruning
    assert abs(pruning["expected_sparsity"] - 0.3) <= 0.01, pruning
    assert summary["selected"] == "last" and not summary["notes"]

    assert {"model.safetensors", "masks.safetensors", "nash.json", "train_log.jsonl", "tokenizer.json"} <= {
        p.name for p in masked.iterdir()
    }
    manifest = json.loads((masked / "nash.json").read_text())
    assert manifest["stage"] == "prune-encoder" and manifest["state"] == "masked"
    assert manifest["layer_map"]["decoder"] == [0, 3]
    recorded = manifest["prune_encoder"]
    assert recorded["target_sparsity"] == 0.3
    assert recorded["deterministic_sparsity"] == pytest.approx(pruning["deterministic_sparsity"])
    assert len(recorded["heads_per_layer"]) == 2 and len(recorded["ffn_units_per_layer"]) == 2
    # whole-model: against the full teacher (4 decoder layers), so the deleted layers count too
    teacher = artifact.load_model(pipeline["teacher"])
    student = artifact.load_model(pipeline["student"])
    expected_whole = 1 - (count_parameters(student)["non_embedding"] - recorded["pruned_params"]) / count_parameters(teacher)["non_embedding"]
    assert recorded["whole_model_sparsity"] == pytest.approx(expected_whole)
    assert recorded["whole_model_sparsity"] > pruning["deterministic_sparsity"] * 0.3

    # the train log records expected sparsity, target, lambdas and each loss term
    log = [json.loads(line) for line in (masked / "train_log.jsonl").read_text().splitlines()]
    train_lines = [line for line in log if "expected_sparsity" in line]
    assert train_lines and {"target_sparsity", "deterministic_sparsity", "lambda_1", "lambda_2", "lagrangian", "kl", "ce"} <= set(
        train_lines[-1]
    )
    assert train_lines[0]["target_sparsity"] < train_lines[-1]["target_sparsity"] == pytest.approx(0.3)

    # a run that settled keeps the Lagrangian's own masks: the stored masks are the deterministic
    # masks of the stored log_alphas
    assert recorded["mask_selection"] == "lagrangian"
    assert recorded["lagrangian_sparsity"] == recorded["deterministic_sparsity"]
    masks = load_masks(masked, encoder_shape(student))
    assert torch.equal(masks.heads_mask, deterministic_mask(masks.heads_log_alpha))
    assert torch.equal(masks.ffn_mask, deterministic_mask(masks.ffn_log_alpha))
    assert [int(r.sum()) for r in masks.heads_mask] == recorded["heads_per_layer"]
    # model.safetensors holds the trained weights without masks: no mask keys, weights changed
    trained = artifact.load_model(masked)
    assert not any("log_alpha" in key for key in trained.state_dict())

    # compact == masked (deterministic masks)
    compact = tmp_path / "compact"
    result = cli("compact", masked, "-o", compact, "--json")
    assert result.exit_code == 0, result.stderr
    assert apply_checkpoint_masks(student, pipeline["student"]) is None  # a dense checkpoint has none
    hooks = apply_checkpoint_masks(trained, masked)
    small = artifact.load_model(compact)
    ids = torch.randint(4, trained.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = trained(input_ids=ids, decoder_input_ids=ids[:, :4]).logits
        b = small(input_ids=ids, decoder_input_ids=ids[:, :4]).logits
    assert (a - b).abs().max() < 1e-4
    hooks.remove()
    assert json.loads((compact / "nash.json").read_text())["prune_encoder"]["target_sparsity"] == 0.3

    # distill the compact student further; the result is still the nash class and loads in nash
    final = tmp_path / "final"
    result = cli(
        "distill", compact, "--teacher", pipeline["teacher"], "--data", pipeline["train"], "-o", final,
        "--max-steps", "3", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.json()["objective"]["decoder_layer_map"] == [0, 3]
    reloaded = artifact.load_model(final)
    assert (final / "modeling_nash_t5.py").is_file()  # still loadable with trust_remote_code outside nash
    assert type(reloaded).__name__ == type(small).__name__
    assert json.loads((final / "config.json").read_text())["encoder_heads"] == json.loads(
        (compact / "config.json").read_text()
    )["encoder_heads"]


def test_a_short_run_still_meets_the_target(pipeline, tmp_path, cli):
    """20 steps at the paper's reg_lr (0.01) cannot settle the Lagrangian; the final masks are
    ranked by log_alpha to the target 0.3 instead, both figures are recorded, the note says so,
    and compact of the output equals the masked model."""
    masked = tmp_path / "masked"
    args = [
        "prune-encoder", pipeline["student"], "--teacher", pipeline["teacher"], "--data", pipeline["train"],
        "-o", masked, "--max-steps", "20", "--batch-size", "8", *UNSTRUCTURED, "--json",
    ]  # fmt: skip
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    pruning = summary["pruning"]
    student = artifact.load_model(pipeline["student"])
    shape = encoder_shape(student)
    head_share = shape.params_per_head / shape.prunable_params
    assert (pruning["target_sparsity"], pruning["reg_lr"]) == (0.3, 0.01)
    assert abs(pruning["lagrangian_sparsity"] - 0.3) > 0.05, pruning  # the Lagrangian did not settle
    assert pruning["mask_selection"] == "ranked_to_target"
    assert abs(pruning["deterministic_sparsity"] - 0.3) <= head_share, pruning

    # masks.safetensors holds the final masks: those the rule picks from its stored log_alphas
    masks = load_masks(masked, shape)
    assert mask_sparsity(masks.heads_mask, masks.ffn_mask, shape) == pytest.approx(pruning["deterministic_sparsity"])
    final = masks_for_target(masks.heads_log_alpha, masks.ffn_log_alpha, shape, 0.3)
    assert torch.equal(masks.heads_mask, final[0]) and torch.equal(masks.ffn_mask, final[1])
    lagrangian = (deterministic_mask(masks.heads_log_alpha), deterministic_mask(masks.ffn_log_alpha))
    assert mask_sparsity(*lagrangian, shape) == pytest.approx(pruning["lagrangian_sparsity"])
    assert [int(r.sum()) for r in masks.heads_mask] == pruning["heads_per_layer"]
    assert [int(r.sum()) for r in masks.ffn_mask] == pruning["ffn_units_per_layer"]
    assert pruning["pruned_params"] == pruned_params(shape, masks.heads_mask, masks.ffn_mask)

    # nash.json records both figures
    recorded = json.loads((masked / "nash.json").read_text())["prune_encoder"]
    for key in ("lagrangian_sparsity", "deterministic_sparsity", "mask_selection", "heads_per_layer", "pruned_params"):
        assert recorded[key] == pruning[key], key

    # the note, and the summary table's two rows
    note = (
        f"the Lagrangian's masks removed {pruning['lagrangian_sparsity']:.3f} of the encoder after 20 steps; "
        f"the final masks were chosen by log_alpha to remove {pruning['deterministic_sparsity']:.3f} (target 0.3)"
    )
    assert any(n.startswith(note) and "train longer" in n for n in summary["notes"]), summary["notes"]
    from rich.console import Console

    from nash_cli.cli.prune_encoder import print_result

    console = Console(width=300, record=True)
    print_result(summary, console)
    text = console.export_text()
    assert "Lagrangian's sparsity" in text and f"{pruning['lagrangian_sparsity']:.4f}" in text
    assert "final sparsity (ranked by log_alpha)" in text and f"{pruning['deterministic_sparsity']:.4f}" in text
    assert note in text

    # compact removes exactly the final masks: its logits equal the masked model's
    compact = tmp_path / "compact"
    assert cli("compact", masked, "-o", compact).exit_code == 0
    trained = artifact.load_model(masked)
    hooks = apply_checkpoint_masks(trained, masked)
    small = artifact.load_model(compact)
    ids = torch.randint(4, trained.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = trained(input_ids=ids, decoder_input_ids=ids[:, :4]).logits
        b = small(input_ids=ids, decoder_input_ids=ids[:, :4]).logits
    assert (a - b).abs().max() < 1e-4
    hooks.remove()
    assert count_parameters(trained)["non_embedding"] - count_parameters(small)["non_embedding"] == pruning["pruned_params"]


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--target-sparsity", "1.5"], ["--target-sparsity"]),
        (["--target-sparsity", "0"], ["--target-sparsity"]),
        (["--reg-lr", "-0.01"], ["--reg-lr"]),
        (["--sparsity-warmup", "-3"], ["--sparsity-warmup"]),
        (["--droprate-init", "1"], ["--droprate-init"]),
        (["--ffn-multiple-of", "0"], ["--ffn-multiple-of", "positive whole number"]),
        (["--ffn-multiple-of", "-64"], ["--ffn-multiple-of", "positive whole number"]),
        (["--ffn-multiple-of", "2.5"], ["--ffn-multiple-of"]),
        # one head in each of the 2 layers is 1/40 of this encoder: uniform heads reach at most 0.975
        (["--target-sparsity", "0.99"], ["leaves no attention head", "0.9750", "--no-uniform-heads"]),
    ],
)
def test_bad_options_exit_2_and_write_nothing(extra, fragments, pipeline, tmp_path, cli):
    out = tmp_path / "out"
    result = cli(*_prune_args(pipeline, out, "--max-steps", "2", *extra))
    assert_user_error(result, *fragments)
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_refuses_masked_and_compact_students(pipeline, tmp_path, cli):
    masked = tmp_path / "masked"
    assert cli(*_prune_args(pipeline, masked, "--max-steps", "2")).exit_code == 0
    again = cli("prune-encoder", masked, "--teacher", pipeline["teacher"], "--data", pipeline["train"], "-o", tmp_path / "x")
    assert_user_error(again, "masked checkpoint", "dense student")
    # a masked teacher would be distilled from without its masks (the unpruned model)
    again = cli("prune-encoder", pipeline["student"], "--teacher", masked, "--data", pipeline["train"], "-o", tmp_path / "x")
    assert_user_error(again, "is a masked checkpoint", "as --teacher", f"nash compact {masked} -o DIR")
    assert cli("compact", masked, "-o", tmp_path / "compact").exit_code == 0
    again = cli("prune-encoder", tmp_path / "compact", "--data", pipeline["train"], "-o", tmp_path / "x")
    assert_user_error(again, "dense student")
    assert not (tmp_path / "x").exists()


def test_sigkill_and_resume_restore_the_masks(pipeline, tmp_path, cli):
    """The L0 state (log_alphas, lambdas, their optimiser moments) survives a kill and --resume."""
    common = _prune_args(pipeline, None, "--max-steps", "40", "--save-every", "3", "--json")
    common = [a for a in common if a is not None]
    common.remove("-o")
    reference = tmp_path / "reference"
    assert cli(*common, "-o", reference).exit_code == 0
    out = tmp_path / "out"
    partial = tmp_path / "out.partial"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "nash_cli", *map(str, common), "-o", str(out)]
    # SIGKILLed from outside once the state of step 6 exists, long before the last step.
    kill_when(command, lambda: (latest_step(partial) or 0) >= 6, env=env, cwd=ROOT)
    assert not out.exists()  # it was interrupted
    killed_at = latest_step(partial)
    assert killed_at is not None and 6 <= killed_at < 40
    resumed = subprocess.run(
        [*command, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from"] == killed_at
    expected, got = load_file(str(reference / "masks.safetensors")), load_file(str(out / "masks.safetensors"))
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    expected, got = load_file(str(reference / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_eval_and_bench_apply_a_masked_checkpoints_masks(pipeline, tmp_path, cli):
    """A masked checkpoint is evaluated and timed as the pruned model it stands for: its outputs
    and scores equal those of its compact form (they differ from the unmasked weights'), and
    both commands say the masks were applied."""
    masked, compact = tmp_path / "masked", tmp_path / "compact"
    pruned = cli(*_prune_args(pipeline, masked, "--max-steps", "30", "--target-sparsity", "0.8"))
    assert pruned.exit_code == 0, pruned.stderr
    assert cli("compact", masked, "-o", compact).exit_code == 0
    common = ["--data", pipeline["eval"], "--metric", "rouge", "--metric", "exact_match", "--beams", "2",
              "--max-new-tokens", "6", "--json"]  # fmt: skip
    results = {}
    for name, checkpoint in (("masked", masked), ("compact", compact)):
        output = tmp_path / f"{name}.json"
        run = cli("eval", checkpoint, *common, "-o", output)
        assert run.exit_code == 0, run.stderr
        results[name] = (run.json(), [json.loads(line)["prediction"] for line in output.with_name(f"{name}.generations.jsonl").read_text().splitlines()])
    (masked_doc, masked_out), (compact_doc, compact_out) = results["masked"], results["compact"]
    assert masked_out == compact_out
    assert masked_doc["scores"] == compact_doc["scores"]
    assert masked_doc["masks_applied"] and not compact_doc["masks_applied"]
    assert any("masks" in note for note in masked_doc["notes"])

    # without the masks the same weights generate something else (so the check above can fail)
    from nash_cli.generation import generate_texts, resolve_settings

    plain = artifact.load_model(masked)
    tokenizer = artifact.load_tokenizer(masked)
    sources = [json.loads(line)["document"] for line in Path(pipeline["eval"]).read_text().splitlines()]
    settings = resolve_settings(plain, num_beams=2, max_new_tokens=6)
    assert generate_texts(plain, tokenizer, sources, settings, batch_size=8) != masked_out

    bench = cli("bench", masked, "--baseline", compact, "--batch", "2", "--beams", "2", "--repeats", "1",
                "--max-new-tokens", "4", "--source-length", "8", "--json")  # fmt: skip
    assert bench.exit_code == 0, bench.stderr
    assert any("masked checkpoint" in note for note in bench.json()["notes"])
    assert "note:" in cli("bench", masked, "--batch", "2", "--beams", "2", "--repeats", "1", "--max-new-tokens", "4",
                           "--source-length", "8").stdout  # fmt: skip


def test_a_bfloat16_student_prunes_in_float32_and_is_written_in_bfloat16(pipeline, tmp_path, cli):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    student = tmp_path / "bf16"
    AutoModelForSeq2SeqLM.from_pretrained(pipeline["student"], dtype=torch.bfloat16).save_pretrained(student)
    AutoTokenizer.from_pretrained(pipeline["student"]).save_pretrained(student)
    (student / "nash.json").write_text((Path(pipeline["student"]) / "nash.json").read_text())
    out = tmp_path / "masked"
    result = cli(*_prune_args({**pipeline, "student": str(student)}, out, "--max-steps", "3", "--json"))
    assert result.exit_code == 0, result.stderr
    assert any("stored in bfloat16: it trains in float32" in note for note in result.json()["notes"])
    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values()} == {torch.bfloat16}


def test_the_default_structure_is_one_the_engine_runs_narrow(pipeline, tmp_path, cli):
    """By default the final masks keep the same heads in every layer and FFN widths that are
    multiples of 64, chosen from the stored log_alphas; the manifest records the structure,
    compact keeps it, and the export needs no zero head and says so."""
    masked = tmp_path / "masked"
    result = cli(*_prune_args(pipeline, masked, "--max-steps", "10", "--json"))
    assert result.exit_code == 0, result.stderr
    pruning = result.json()["pruning"]
    assert pruning["structure"] == {"uniform_heads": True, "ffn_multiple_of": 64}
    assert pruning["mask_selection"] == "structured"
    assert len(set(pruning["heads_per_layer"])) == 1 and pruning["heads_per_layer"][0] >= 1
    assert all(units % 64 == 0 for units in pruning["ffn_units_per_layer"]), pruning
    assert any("heads in every encoder layer" in note for note in result.json()["notes"])
    # the stored masks are the structured choice from the stored log_alphas
    stored = load_file(str(masked / "masks.safetensors"))
    shape = encoder_shape(artifact.load_model(pipeline["student"]))
    heads, ffn = masks_for_target(stored["heads.log_alpha"], stored["ffn.log_alpha"], shape, 0.3,
                                  uniform_heads=True, ffn_multiple_of=64)
    assert torch.equal(heads, stored["heads.mask"]) and torch.equal(ffn, stored["ffn.mask"])
    assert json.loads((masked / "nash.json").read_text())["prune_encoder"]["structure"]["uniform_heads"] is True

    compact = tmp_path / "compact"
    result = cli("compact", masked, "-o", compact, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["engine"].startswith("CTranslate2 runs this encoder without padding")
    assert json.loads((compact / "nash.json").read_text())["prune_encoder"]["structure"]["ffn_multiple_of"] == 64
    pytest.importorskip("ctranslate2")
    result = cli("export", compact, "-o", tmp_path / "ct2", "--no-verify", "--json")
    assert result.exit_code == 0, result.stderr
    padding = result.json()["padding"]
    assert padding["zero_heads"] == 0 and padding["engine_heads"] == pruning["heads_per_layer"][0]
    assert padding["ffn_alignment"] == 64
    assert result.json()["padding_summary"].startswith("no padding") and "multiples of 64" in result.json()["padding_summary"]
