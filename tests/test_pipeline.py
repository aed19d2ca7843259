"""`nash run` end to end on a tiny model, reruns that skip, overrides that redo, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import CORPUS, assert_user_error, assert_usual_modes, kill_when, latest_step, snapshot


@pytest.fixture
def tiny_recipe(tmp_path, make_checkpoint):
    teacher = make_checkpoint("t5", encoder_layers=4, decoder_layers=4)
    rows = [{"text": s, "summary": " ".join(s.split()[:4])} for s in CORPUS] * 3
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = {"max_steps": 3, "batch_size": 4, "save_every": 2, "eval_every": 100, "log_every": 1}
    recipe = {
        "name": "tiny",
        "teacher": str(teacher),
        "data": {"train": str(data), "eval": str(data), "source_column": "text", "target_column": "summary"},
        "stages": {
            "select_layers": {"decoder_layers": 2},
            "prune_encoder": {"target_sparsity": 0.2, "sparsity_warmup": 0.5, **train},
            "compact": {},
            "distill": train,
            "bench": {"batch": 4, "beams": 2, "repeats": 2, "warmup": 1, "max_new_tokens": 4, "num_batches": 1},
            "eval": {"metric": ["rouge", "exact_match"], "beams": 2, "max_new_tokens": 6},
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_run_skips_what_is_done_and_redoes_what_changed(tiny_recipe, tmp_path, cli):
    run_dir = tmp_path / "run"
    first = cli("run", tiny_recipe, "-o", run_dir, "--json")
    assert first.exit_code == 0, first.stderr
    statuses = [stage["status"] for stage in first.json()["stages"]]
    assert statuses == ["done"] * 6
    names = sorted(p.name for p in run_dir.iterdir())
    assert names[:6] == ["01-select-layers", "02-prune-encoder", "03-compact", "04-distill", "05-bench", "06-eval"]
    assert (run_dir / "recipe.yaml").is_file() and (run_dir / "run.json").is_file()
    assert json.loads((run_dir / "03-compact" / "nash.json").read_text())["state"] == "compact"
    assert (run_dir / "06-eval" / "student" / "metrics.json").is_file()
    assert (run_dir / "06-eval" / "teacher" / "generations.jsonl").is_file()
    assert_usual_modes(run_dir)  # weights, masks.safetensors, nash.json, metrics, generations, run.json alike

    again = cli("run", tiny_recipe, "-o", run_dir, "--json")
    assert again.exit_code == 0, again.stderr
    assert [stage["status"] for stage in again.json()["stages"]] == ["skipped"] * 6

    plan = cli("run", tiny_recipe, "-o", run_dir, "--dry-run", "--json", "--set", "distill.lr=0.001").json()
    assert [s["status"] for s in plan["stages"]] == ["skip (up to date)"] * 3 + ["run"] * 3
    changed = cli("run", tiny_recipe, "-o", run_dir, "--json", "--set", "distill.lr=0.001")
    assert changed.exit_code == 0, changed.stderr
    assert [stage["status"] for stage in changed.json()["stages"]] == ["skipped"] * 3 + ["done"] * 3

    report = cli("report", run_dir, "--json")
    assert report.exit_code == 0, report.stderr
    written = report.json()["written"]
    for key in ("report", "figure_5", "figure_6"):
        assert Path(written[key]).is_file()
    header, rows = report.json()["table1"]["header"], report.json()["table1"]["rows"]
    assert header[0] == "model" and "rougeL" in header and header[-1] == "speedup"
    assert rows[0][0] == "teacher" and rows[0][-1] == "1.00x"
    assert rows[1][0] == "NASH (2 DL)"
    assert (Path(written["figure_5"]).read_bytes()[:8]) == b"\x89PNG\r\n\x1a\n"
    assert_user_error(cli("report", run_dir), "--force")
    assert cli("report", run_dir, "--force").exit_code == 0
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".report-")]
    assert_usual_modes(run_dir)
    (run_dir / "report.md").write_text("my own notes\n")
    assert_user_error(cli("report", run_dir, "--force"), "not a report file nash wrote")
    assert (run_dir / "report.md").read_text() == "my own notes\n"


def test_an_interrupted_training_stage_resumes(tiny_recipe, tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "nash_cli", "run", str(tiny_recipe), "-o", str(run_dir), "--json"]
    # distill runs 40 steps, saving a state every 2: the kill lands mid-stage even on a slow machine
    limits = ["--set", "prune_encoder.max_steps=2", "--set", "distill.max_steps=40", "--set", "stages.bench=false"]
    limits += ["--set", "stages.eval=false"]
    partial = run_dir / "04-distill.partial"
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    # SIGKILL the run from outside inside distill, once it has saved a state
    kill_when([*command, *limits], lambda: latest_step(partial) is not None, env=env, cwd=tmp_path)
    assert partial.is_dir() and not (run_dir / "04-distill").exists()
    assert latest_step(partial) < 40

    resumed = subprocess.run([*command, *limits], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert "[resume] 04-distill" in resumed.stderr
    assert [s["status"] for s in json.loads(resumed.stdout)["stages"]] == ["skipped"] * 3 + ["done"]
    manifest = json.loads((run_dir / "04-distill" / "nash.json").read_text())
    assert manifest["stage"] == "distill"


def _masked_copy(source: Path, destination: Path, *, state: str = "masked") -> Path:
    """`source` with a manifest saying `masked` (all the recipe check reads), or another state."""
    import shutil

    shutil.copytree(source, destination)
    stage = {"masked": "prune-encoder", "compact": "compact"}[state]
    (destination / "nash.json").write_text(json.dumps({"stage": stage, "state": state}))
    return destination


def _bad_recipe(case: str, base: dict, tmp_path: Path) -> dict:
    recipe = json.loads(json.dumps(base))
    stages = recipe["stages"]
    if case == "missing-teacher":
        recipe["teacher"] = str(tmp_path / "no-teacher")
    elif case == "teacher-not-a-checkpoint":
        (tmp_path / "notes").mkdir()
        recipe["teacher"] = str(tmp_path / "notes")
    elif case == "missing-train":
        recipe["data"]["train"] = str(tmp_path / "no-train.jsonl")
    elif case == "missing-eval":
        recipe["data"]["eval"] = str(tmp_path / "no-eval.jsonl")
    elif case == "latin1-train":
        (tmp_path / "latin1.jsonl").write_bytes('{"text": "caf\u00e9", "summary": "x"}\n'.encode("latin-1"))
        recipe["data"]["train"] = str(tmp_path / "latin1.jsonl")
    elif case == "folder-train":
        (tmp_path / "folder").mkdir()
        recipe["data"]["train"] = str(tmp_path / "folder")
    elif case == "masked-teacher":
        recipe["teacher"] = str(_masked_copy(Path(recipe["teacher"]), tmp_path / "masked-teacher"))
    elif case == "compact-teacher-then-prune":  # select-layers keeps it compact; prune-encoder reads dense only
        recipe["teacher"] = str(_masked_copy(Path(recipe["teacher"]), tmp_path / "compact-teacher", state="compact"))
    elif case == "distill-after-prune-without-compact":
        del stages["compact"]
    elif case == "export-after-prune-without-compact":
        recipe["stages"] = {"prune_encoder": stages["prune_encoder"], "export": {}}
    elif case == "prune-vocab-after-prune-without-compact":
        recipe["stages"] = {"prune_encoder": stages["prune_encoder"], "prune_vocab": {}}
    elif case == "compact-without-masks":
        del stages["prune_encoder"]
    return recipe


BAD_RECIPES = {
    "missing-teacher": ["teacher: checkpoint", "no-teacher does not exist"],
    "teacher-not-a-checkpoint": ["teacher:", "has no config.json"],
    "missing-train": ["data.train", "no-train.jsonl does not exist"],
    "missing-eval": ["data.eval", "no-eval.jsonl does not exist"],
    "latin1-train": ["data.train", "latin1.jsonl is not UTF-8 text"],
    "folder-train": ["data.train", "is a directory but not a saved dataset"],
    "masked-teacher": ["stages.select_layers would read a masked checkpoint", "nash compact"],
    "compact-teacher-then-prune": [
        "stages.prune_encoder would read the output of stages.select_layers, a compact checkpoint", "dense student"
    ],
    "distill-after-prune-without-compact": ["stages.distill would read a masked checkpoint", "add `compact: {}`"],
    "export-after-prune-without-compact": ["stages.export would read a masked checkpoint", "add `compact: {}`"],
    "prune-vocab-after-prune-without-compact": ["stages.prune_vocab would read a masked checkpoint", "add `compact: {}`"],
    "compact-without-masks": ["stages.compact would read", "has no masks"],
}


@pytest.mark.parametrize("case", BAD_RECIPES)
def test_every_input_is_checked_before_the_first_stage(case, tiny_recipe, tmp_path, cli, monkeypatch):
    """A recipe with a bad input fails `--dry-run` and `nash run` alike, in one line, before stage 1."""
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(_bad_recipe(case, yaml.safe_load(tiny_recipe.read_text()), tmp_path)))
    before = snapshot(tmp_path)
    assert_user_error(cli("run", recipe, "-o", tmp_path / "run", "--dry-run"), str(recipe), *BAD_RECIPES[case])
    assert_user_error(cli("run", recipe, "-o", tmp_path / "run"), *BAD_RECIPES[case])
    assert snapshot(tmp_path) == before, "a refused recipe wrote files"


def test_the_check_passes_good_and_hub_inputs(tiny_recipe, tmp_path, cli):
    # The fixture's recipe (local teacher and data) and a recipe of hub names both plan.
    assert cli("run", tiny_recipe, "-o", tmp_path / "run", "--dry-run").exit_code == 0
    hub = yaml.safe_load(tiny_recipe.read_text())
    hub.update(teacher="google-t5/t5-small", data={"train": "ucsbnlp/tweet_qa", "eval": "abisee/cnn_dailymail:3.0.0"})
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(hub))
    result = cli("run", path, "-o", tmp_path / "hub-run", "--dry-run")
    assert result.exit_code == 0, result.stderr


def test_an_export_stage_builds_its_vocabulary_map_from_the_recipe_data(tiny_recipe, tmp_path, cli):
    pytest.importorskip("ctranslate2")
    recipe = yaml.safe_load(tiny_recipe.read_text())
    train = recipe["data"]["train"]
    recipe["stages"] = {"select_layers": {"decoder_layers": 2}, "export": {"quantization": "int8", "vocab_map": True},
                        "bench": recipe["stages"]["bench"]}
    path = tmp_path / "vmap.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run_dir = tmp_path / "run"
    dry = cli("run", path, "-o", run_dir, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    (command,) = next(stage for stage in dry.json()["stages"] if stage["stage"] == "export")["commands"]
    assert f"--vocab-map {train}" in command and f"--eval-data {train}" in command
    result = cli("run", path, "-o", run_dir, "--json")
    assert result.exit_code == 0, result.stderr
    written = json.loads((run_dir / "02-export" / "nash.json").read_text())
    vocabulary_map = written["ctranslate2"]["vocabulary_map"]
    assert (run_dir / "02-export" / "vmap.txt").is_file() and vocabulary_map["data"] == train
    assert vocabulary_map["coverage"]["data"] == train
    # the recipe's switch is a boolean: a path there would be a second, unchecked source of data
    recipe["stages"]["export"]["vocab_map"] = "train.jsonl"
    path.write_text(yaml.safe_dump(recipe))
    assert_user_error(cli("run", path, "-o", tmp_path / "other", "--dry-run"), "stages.export.vocab_map is true or false",
                      "data.train")


# --------------------------------------------------------------------------- the run directory: new, empty, or nash's


@pytest.fixture
def layers_recipe(tiny_recipe, tmp_path) -> Path:
    """The fixture's recipe cut to select_layers (a run of seconds)."""
    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe["stages"] = {"select_layers": {"decoder_layers": 2}}
    path = tmp_path / "layers.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_run_never_writes_into_a_directory_nash_did_not_make(layers_recipe, tmp_path, cli, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    mine = "# my recipe, with my comments\n" + layers_recipe.read_text()
    (project / "recipe.yaml").write_text(mine)
    monkeypatch.chdir(project)
    before = snapshot(project)
    for extra in ([], ["--dry-run"]):
        result = cli("run", "recipe.yaml", "-o", ".", "--set", "select_layers.decoder_layers=1", *extra)
        assert_user_error(result, "holds files but no run.json", "choose a new or empty directory with -o")
    assert snapshot(project) == before and (project / "recipe.yaml").read_text() == mine
    # another tool's run.json beside it: refused, not a KeyError
    for foreign in ('{"experiments": []}', '{"stages": []}', '{"stages": {"select_layers": 3}}', "[1]"):
        (project / "run.json").write_text(foreign)
        assert_user_error(cli("run", "recipe.yaml", "-o", "."), "is not the run.json nash writes")
        assert (project / "recipe.yaml").read_text() == mine and (project / "run.json").read_text() == foreign
    assert not list(tmp_path.rglob("*.nash-lock"))


def test_a_nash_run_directory_is_rerun_from_its_own_recipe(layers_recipe, tmp_path, cli):
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # empty: nothing to lose
    assert cli("run", layers_recipe, "-o", run_dir).exit_code == 0
    assert json.loads((run_dir / "run.json").read_text())["stages"]["select_layers"]["status"] == "done"
    (run_dir / "notes.md").write_text("mine\n")  # a user's note in a nash run directory is left alone
    again = cli("run", run_dir / "recipe.yaml", "-o", run_dir, "--json")
    assert again.exit_code == 0, again.stderr
    assert [s["status"] for s in again.json()["stages"]] == ["skipped"]
    assert (run_dir / "notes.md").read_text() == "mine\n" and not list(tmp_path.rglob("*.nash-lock"))


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "runs/../../x", ".", "a\\b"])
def test_a_recipe_name_cannot_move_the_run_out_of_runs(name, layers_recipe, tmp_path, cli, monkeypatch):
    recipe = yaml.safe_load(layers_recipe.read_text())
    recipe["name"] = name
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    assert_user_error(cli("run", path, "--dry-run"), f"name {name!r} must be a plain directory name", "without '/'")
    assert_user_error(cli("run", path), "must be a plain directory name")
    assert snapshot(tmp_path) == before


def test_a_run_refused_by_the_lock_has_written_nothing(layers_recipe, tmp_path, cli):
    import fcntl
    import os

    from nash_cli import artifact

    run_dir = tmp_path / "run"
    assert cli("run", layers_recipe, "-o", run_dir).exit_code == 0
    recipe_before = (run_dir / "recipe.yaml").read_text()
    state_before = (run_dir / "run.json").read_text()
    held = []
    try:
        # the first run, still running: it holds the run directory and the stage it writes
        for path in (run_dir, run_dir / "01-select-layers"):
            handle = os.open(artifact.lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(handle, b"4242\n")
            held.append((handle, artifact.lock_path(path)))
        result = cli("run", layers_recipe, "-o", run_dir, "--set", "select_layers.decoder_layers=1")
        assert_user_error(result, "is being written by another nash process (pid 4242)")
    finally:
        for handle, lock in held:
            os.close(handle)
            lock.unlink()
    assert (run_dir / "recipe.yaml").read_text() == recipe_before
    assert (run_dir / "run.json").read_text() == state_before
    assert json.loads((run_dir / "01-select-layers" / "config.json").read_text())["num_decoder_layers"] == 2


def test_an_offline_bare_teacher_name_that_cannot_load_is_refused_before_the_first_stage(tiny_recipe, tmp_path, cli,
                                                                                          monkeypatch):
    """A bare name (`teacher: my-teacher`, a local directory mistyped) passed --dry-run offline and
    failed in the first stage; the hub names of org/name form still plan (the stage fetches them)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe["teacher"] = "my-teacher"
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(recipe))
    before = snapshot(tmp_path)
    assert_user_error(cli("run", path, "-o", tmp_path / "run", "--dry-run"), "teacher: my-teacher is not a local directory",
                      "./my-teacher")
    assert snapshot(tmp_path) == before
