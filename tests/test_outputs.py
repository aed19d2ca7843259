"""The promises of every output: `--force` replaces only nash's own outputs of the same kind, no
output touches an input, an unwritable path fails before the work, one process writes an output at
a time, a set of files is never left half-published, and every file gets the same mode."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import assert_user_error, assert_usual_modes, snapshot

from nash_cli import artifact
from nash_cli.errors import NashError

RECORDS = [
    {"text": "the quick brown fox jumps over the lazy dog .", "summary": "fox jumps"},
    {"text": "a cat sat on the mat and looked at the dog .", "summary": "cat on mat"},
]


@pytest.fixture
def teacher(make_checkpoint) -> Path:
    return make_checkpoint("t5")


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    return path


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if a command gets as far as reading a model or the data."""

    def refuse(*args, **kwargs):
        raise AssertionError("the output was checked after the work began")

    monkeypatch.setattr(artifact, "load_config", refuse)
    monkeypatch.setattr(artifact, "load_model", refuse)
    monkeypatch.setattr("nash_cli.data.load_examples", refuse)
    monkeypatch.setattr("nash_cli.data.examples.load_examples", refuse)  # what read_examples calls


def eval_args(checkpoint, data, out, *more):
    return ["eval", checkpoint, "--data", data, "--source-column", "text", "--target-column", "summary",
            "--max-new-tokens", "3", "--beams", "1", "-o", out, *more]


# --------------------------------------------------------------------------- outputs over inputs


def test_input_overlap_is_a_pure_relation():
    inputs = {"checkpoint": Path("/p/t5"), "data": Path("/p/data/val.jsonl")}
    assert artifact.input_overlap(Path("/p/t5"), inputs) == ("checkpoint", "is")
    assert artifact.input_overlap(Path("/p"), inputs) == ("checkpoint", "contains")
    assert artifact.input_overlap(Path("/p/t5/sub"), inputs) == ("checkpoint", "is inside")
    assert artifact.input_overlap(Path("/p/data/val.jsonl"), inputs) == ("data", "is")
    assert artifact.input_overlap(Path("/p/t5-student"), inputs) is None  # a shared prefix is not containment
    assert artifact.input_overlap(Path("/q"), {}) is None


def test_overlap_is_judged_on_resolved_paths(tmp_path, monkeypatch):
    (tmp_path / "t5").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "t5")
    monkeypatch.chdir(tmp_path / "t5")
    inputs = {"checkpoint": "../t5"}
    for output in (".", "../link", "../link/sub", "sub/../../t5", tmp_path):
        with pytest.raises(NashError, match="nash never writes over its inputs"):
            artifact.refuse_output_over_inputs([output], inputs)
    artifact.refuse_output_over_inputs(["../student"], inputs)
    artifact.refuse_output_over_inputs(["../student"], {"teacher": None, "data": "no/such/file", "hub": "t5-small"})


@pytest.mark.parametrize(
    "output, relation",
    [("t5", "is the checkpoint"), ("t5/sub", "is inside the checkpoint"), (".", "contains the checkpoint"),
     ("alias", "is the checkpoint")],
)
def test_select_layers_never_writes_over_its_input(output, relation, teacher, tmp_path, monkeypatch, cli):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(teacher, project / "t5")
    (project / "alias").symlink_to(project / "t5")
    monkeypatch.chdir(project)
    before = snapshot(project)
    assert_user_error(cli("select-layers", "./t5", "-k", "1", "-o", output, "--force"), relation, "choose an -o outside")
    assert snapshot(project) == before


def test_eval_and_bench_never_write_over_their_inputs(teacher, data, tmp_path, cli, no_loading):
    before = data.read_bytes()
    assert_user_error(cli(*eval_args(teacher, data, data, "--force")), "is the data")
    assert_user_error(cli(*eval_args(teacher, data, tmp_path / "m.json", "--generations", data, "--force")), "is the data")
    assert_user_error(cli(*eval_args(teacher, data, teacher / "metrics.json")), "is inside the checkpoint")
    assert_user_error(cli("bench", teacher, "-o", teacher / "bench.json"), "is inside the model")
    assert_user_error(cli("bench", teacher, "--baseline", teacher, "--data", data, "-o", data, "--force"), "is the data")
    assert data.read_bytes() == before
    assert not (teacher / "metrics.json").exists() and not (teacher / "bench.json").exists()


def test_report_never_asks_the_hub(run_dir, monkeypatch, cli):
    # The teacher "t5" is a hub name: its depth comes from the local cache or not at all. Before,
    # the report fetched its config, and offline waited about two minutes on retries.
    import huggingface_hub.constants
    import huggingface_hub.file_download as download

    asked = []

    def no_network(*args, **kwargs):
        asked.append(args)
        raise OSError("no network")

    monkeypatch.setattr(download, "get_hf_file_metadata", no_network)
    # As when huggingface_hub was imported before the tests' HF_HUB_OFFLINE: a real lookup.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    result = cli("report", run_dir)
    assert result.exit_code == 0, result.stderr
    assert (run_dir / "report.md").is_file() and asked == []


# --------------------------------------------------------------------------- what --force may replace


def test_force_never_replaces_a_project_directory(teacher, tmp_path, monkeypatch, cli):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "notes.md").write_text("mine\n")
    monkeypatch.chdir(project)
    before = snapshot(project)
    assert_user_error(cli("select-layers", teacher, "-k", "1", "-o", ".", "--force"), "has no nash.json", "--force will not")
    assert snapshot(project) == before and (project / "notes.md").read_text() == "mine\n"


def test_force_replaces_only_the_same_kind(teacher, tmp_path, cli):
    student = tmp_path / "student"
    assert cli("select-layers", teacher, "-k", "1", "-o", student).exit_code == 0
    assert cli("select-layers", teacher, "-k", "2", "-o", student, "--force").exit_code == 0  # checkpoint over checkpoint
    assert json.loads((student / "config.json").read_text())["num_decoder_layers"] == 2
    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / "nash.json").write_text(json.dumps({"format_version": 1, "stage": "export", "state": "compact"}))
    assert_user_error(cli("select-layers", teacher, "-k", "1", "-o", exported, "--force"), "is a nash export, not a checkpoint")
    assert os.listdir(exported) == ["nash.json"]
    with pytest.raises(NashError, match="is a nash checkpoint, not a export"):
        artifact.check_output(student, True, kind="export")
    plain = tmp_path / "plain"
    plain.mkdir()
    artifact.check_output(plain, True)  # empty: nothing to lose
    artifact.release_output(plain)
    (plain / "notes.md").write_text("mine\n")
    with pytest.raises(NashError, match="has no nash.json"):
        artifact.check_output(plain, True)
    (plain / "nash.json").write_text("not json")
    with pytest.raises(NashError, match="has no nash.json"):
        artifact.check_output(plain, True)
    assert not list(tmp_path.glob(".*nash-lock"))


def test_force_replaces_only_files_nash_wrote(teacher, data, tmp_path, cli):
    mine = tmp_path / "metrics.json"
    mine.write_text('{"my": "numbers"}\n')
    assert_user_error(cli(*eval_args(teacher, data, mine, "--force")), "is not a metrics file nash wrote")
    assert mine.read_text() == '{"my": "numbers"}\n'
    out = tmp_path / "run" / "metrics.json"
    assert cli(*eval_args(teacher, data, out)).exit_code == 0
    assert cli(*eval_args(teacher, data, out, "--force")).exit_code == 0  # its own files: replaced
    (out.parent / "generations.jsonl").write_text("my notes\n")
    assert_user_error(cli(*eval_args(teacher, data, out, "--force")), "is not a generations file nash wrote")
    assert (out.parent / "generations.jsonl").read_text() == "my notes\n"
    bench = tmp_path / "bench.json"
    bench.write_text("[]")
    assert_user_error(cli("bench", teacher, "-o", bench, "--force"), "is not a bench file nash wrote")


def test_nash_files_are_recognised_by_their_contents(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(artifact.json_text({"num_examples": 2, "scores": {}}))
    generations = tmp_path / "generations.jsonl"
    generations.write_text(artifact.jsonl_text([{"index": 0, "prediction": "x"}]))
    report = tmp_path / "report.md"
    report.write_text("# nash report: tiny\n")
    assert artifact.is_nash_file(metrics, "metrics") and not artifact.is_nash_file(metrics, "bench")
    assert artifact.is_nash_file(generations, "generations") and not artifact.is_nash_file(report, "generations")
    assert artifact.is_nash_file(report, "report") and not artifact.is_nash_file(metrics, "report")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure = plt.figure()
    figure.savefig(tmp_path / "theirs.png")
    figure.savefig(tmp_path / "ours.png", metadata={"Software": artifact.FIGURE_SOFTWARE})
    plt.close(figure)
    assert artifact.is_nash_file(tmp_path / "ours.png", "figure")
    assert not artifact.is_nash_file(tmp_path / "theirs.png", "figure")
    assert not artifact.is_nash_file(tmp_path / "missing.png", "figure")


# --------------------------------------------------------------------------- unwritable paths


def test_an_impossible_output_path_fails_before_the_work(teacher, data, tmp_path, cli, no_loading):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = snapshot(tmp_path)
    assert_user_error(cli("select-layers", teacher, "-k", "1", "-o", blocker / "student"), "is a file, not a directory")
    assert_user_error(cli("select-layers", teacher, "-k", "1", "-o", blocker / "a" / "b"), "is a file, not a directory")
    assert_user_error(cli(*eval_args(teacher, data, blocker / "metrics.json")), "is a file, not a directory")
    assert_user_error(cli("bench", teacher, "-o", blocker / "bench.json"), "is a file, not a directory")
    assert_user_error(cli("export", teacher, "-o", blocker / "ct2"), "is a file, not a directory")
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_fails_before_the_work(teacher, data, tmp_path, cli, no_loading):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert_user_error(cli("select-layers", teacher, "-k", "1", "-o", locked / "student"), "is not writable")
        assert_user_error(cli(*eval_args(teacher, data, locked / "sub" / "metrics.json")), "is not writable")
    finally:
        locked.chmod(0o755)
    assert os.listdir(locked) == []


# --------------------------------------------------------------------------- the lock


def hold_lock(output: Path, pid: int = 4242):
    """Takes `output`'s lock through another open file, as a second nash process would."""
    output.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(artifact.lock_path(output), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(handle, f"{pid}\n".encode())
    return handle


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(teacher, data, tmp_path, cli):
    student = tmp_path / "student"
    assert cli("select-layers", teacher, "-k", "1", "-o", student).exit_code == 0
    assert not artifact.lock_path(student).exists()  # given back and removed after the rename
    handle = hold_lock(student)
    try:
        assert_user_error(
            cli("select-layers", teacher, "-k", "1", "-o", student, "--force"),
            f"output {student} is being written by another nash process (pid 4242)",
        )
        metrics = tmp_path / "m" / "metrics.json"
        held = hold_lock(metrics, pid=77)
        try:
            assert_user_error(cli(*eval_args(teacher, data, metrics)), "another nash process (pid 77)")
        finally:
            os.close(held)
            artifact.lock_path(metrics).unlink()
    finally:
        os.close(handle)
    assert json.loads((student / "config.json").read_text())["num_decoder_layers"] == 1
    assert cli("select-layers", teacher, "-k", "2", "-o", student, "--force").exit_code == 0
    assert not list(tmp_path.rglob("*.nash-lock"))


def test_the_lock_is_taken_across_processes(tmp_path):
    import subprocess
    import sys

    output = tmp_path / "out"
    artifact.claim_output(output)
    try:
        code = (
            "import sys\nfrom nash_cli import artifact\nfrom nash_cli.errors import NashError\n"
            "try:\n    artifact.check_output(sys.argv[1], False)\nexcept NashError as e:\n    print(e)\n"
        )
        child = subprocess.run([sys.executable, "-c", code, str(output)], capture_output=True, text=True, check=False,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert f"another nash process (pid {os.getpid()})" in child.stdout, child.stderr
    finally:
        artifact.release_output(output)
    assert not artifact.lock_path(output).exists()
    artifact.check_output(output, False)  # free again
    artifact.release_output(output)


def test_a_refused_run_leaves_no_lock_and_no_parents(teacher, tmp_path, cli):
    out = tmp_path / "a" / "b" / "student"
    result = cli("select-layers", teacher, "--layers", "0,99", "-o", out)  # refused after the lock was taken
    assert result.exit_code == 2
    assert snapshot(tmp_path) == set()


# --------------------------------------------------------------------------- file sets


def test_a_set_interrupted_between_renames_is_finished_by_the_next_write(tmp_path, monkeypatch):
    first, second = tmp_path / "metrics.json", tmp_path / "generations.jsonl"
    artifact.write_files_atomic({first: "old 1\n", second: "old 2\n"})
    real_replace = os.replace

    def killed_before_the_second(source, target):
        if Path(target) == second:
            raise KeyboardInterrupt  # stands for a kill between the two renames
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", killed_before_the_second)
    with pytest.raises(KeyboardInterrupt):
        artifact.write_files_atomic({first: "new 1\n", second: "new 2\n"})
    monkeypatch.setattr(os, "replace", real_replace)
    assert first.read_text() == "new 1\n" and second.read_text() == "old 2\n"  # mixed, but journaled
    assert artifact.set_journal(first).is_file()
    assert artifact.finish_partial_set(first) == [second]
    assert first.read_text() == "new 1\n" and second.read_text() == "new 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generations.jsonl", "metrics.json"]
    # A failure before the journal (while writing) leaves the old set and no temporaries.
    with pytest.raises(TypeError):
        artifact.write_files_atomic({first: "newer\n", second: 3})
    assert first.read_text() == "new 1\n" and sorted(p.name for p in tmp_path.iterdir()) == ["generations.jsonl", "metrics.json"]


def test_eval_killed_between_its_two_renames(teacher, data, tmp_path, cli, monkeypatch):
    out = tmp_path / "run" / "metrics.json"
    generations = out.parent / "generations.jsonl"
    real_replace = os.replace

    def killed(source, target):
        if Path(target) == generations:
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", killed)
    from nash_cli.stages.eval import EvalOptions, run

    options = EvalOptions(checkpoint=str(teacher), data=str(data), source_column="text", target_column="summary",
                          max_new_tokens=3, beams=1, output=out)
    with pytest.raises(KeyboardInterrupt):
        run(options)
    monkeypatch.setattr(os, "replace", real_replace)
    assert out.is_file() and not generations.exists()
    # The rerun finishes the set first, then finds a complete earlier result: refused like any existing output.
    assert_user_error(cli(*eval_args(teacher, data, out)), "already exists", "--force")
    assert generations.is_file() and not artifact.set_journal(out).exists()
    lines = generations.read_text().splitlines()
    assert len(lines) == json.loads(out.read_text())["num_examples"] == len(RECORDS)
    assert sorted(p.name for p in out.parent.iterdir()) == ["generations.jsonl", "metrics.json"]
    assert cli(*eval_args(teacher, data, out, "--force")).exit_code == 0


# --------------------------------------------------------------------------- modes


def test_every_file_gets_the_usual_mode(teacher, data, tmp_path, cli):
    old = os.umask(0o027)  # not the common 0o022, so a hard-coded 0o644 would fail too
    try:
        student = tmp_path / "student"
        assert cli("select-layers", teacher, "-k", "1", "-o", student).exit_code == 0
        assert_usual_modes(student)
        metrics = tmp_path / "eval" / "metrics.json"
        assert cli(*eval_args(student, data, metrics)).exit_code == 0
        assert_usual_modes(metrics.parent)
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    "run_dir, fragment",
    [(".", "contains the teacher"), ("t5", "is the teacher"), ("t5/run", "is inside the teacher"),
     ("data", "contains the train data"), ("recipes", "contains the recipe")],
)
def test_a_run_directory_never_holds_or_sits_in_an_input(run_dir, fragment, teacher, data, tmp_path, monkeypatch, cli):
    import yaml

    project = tmp_path / "project"
    shutil.copytree(teacher, project / "t5")
    (project / "data").mkdir()
    shutil.copy(data, project / "data" / "train.jsonl")
    (project / "recipes").mkdir()
    recipe = {"name": "tiny", "teacher": "t5", "stages": {"select_layers": {"decoder_layers": 1}},
              "data": {"train": "data/train.jsonl", "source_column": "text", "target_column": "summary"}}
    (project / "recipes" / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    (project / "notes.txt").write_text("mine\n")
    monkeypatch.chdir(project)
    before = snapshot(project)
    assert_user_error(cli("run", "recipes/tiny.yaml", "-o", run_dir), fragment, "choose an -o outside")
    assert_user_error(cli("run", "recipes/tiny.yaml", "-o", run_dir, "--dry-run"), fragment)
    assert snapshot(project) == before
    assert cli("run", "recipes/tiny.yaml", "-o", "runs/tiny", "--dry-run").exit_code == 0
    assert_user_error(cli("run", "recipes/tiny.yaml", "-o", "notes.txt/run"), "is a file, not a directory")
    assert snapshot(project) == before


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """The least a run directory needs for `nash report`: run.json and one evaluated model."""
    run = tmp_path / "run"
    (run / "01-eval" / "teacher").mkdir(parents=True)
    (run / "run.json").write_text(artifact.json_text({"stages": {}}))
    metrics = {"model": "t5", "metrics": ["rouge"], "scores": {"rougeL": 0.5}, "num_examples": 1}
    (run / "01-eval" / "teacher" / "metrics.json").write_text(artifact.json_text(metrics))
    return run


def test_report_killed_between_its_renames(run_dir, monkeypatch, cli):
    from nash_cli.report import write_report

    real_replace = os.replace

    def killed(source, target):
        if Path(target).suffix == ".png":
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_report(run_dir)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (run_dir / "report.md").is_file() and not (run_dir / "quality_vs_speedup.png").exists()
    assert_user_error(cli("report", run_dir), "already exists", "--force")  # finished first, then refused
    assert (run_dir / "quality_vs_speedup.png").read_bytes()[:4] == b"\x89PNG"
    assert not artifact.set_journal(run_dir / "report.md").exists()
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
    assert cli("report", run_dir, "--force").exit_code == 0
    (run_dir / "report.md").write_text("my own notes\n")
    assert_user_error(cli("report", run_dir, "--force"), "not a report file nash wrote")
    assert (run_dir / "report.md").read_text() == "my own notes\n"


# --------------------------------------------------------------------------- what --force may replace: a manifest nash wrote, nash's entries


@pytest.mark.parametrize(
    "manifest",
    ["{}", '{"stage": "select-layers"}', '{"format_version": 1, "stage": "select-layers", "state": "banana"}',
     '{"format_version": "1", "stage": "select-layers", "state": "dense"}', "[]"],
)
def test_force_requires_a_manifest_nash_wrote(manifest, teacher, tmp_path, cli):
    thesis = tmp_path / "d"
    thesis.mkdir()
    (thesis / "nash.json").write_text(manifest)
    (thesis / "thesis.tex").write_text("years of work\n")
    before = snapshot(thesis)
    assert_user_error(cli("select-layers", teacher, "-k", "1", "-o", thesis, "--force"), "has no nash.json that nash wrote")
    assert snapshot(thesis) == before and (thesis / "thesis.tex").read_text() == "years of work\n"
    assert not list(tmp_path.glob(".*nash-lock"))


@pytest.mark.parametrize("added", ["README.md", "eval-results/", "notes.json"])
def test_force_never_removes_what_a_user_added_to_a_nash_output(added, teacher, tmp_path, cli):
    student = tmp_path / "student"
    assert cli("select-layers", teacher, "-k", "1", "-o", student).exit_code == 0
    listed = json.loads((student / "nash.json").read_text())[artifact.FILES_KEY]
    assert sorted(os.listdir(student)) == listed and "nash.json" in listed
    if added.endswith("/"):
        (student / added).mkdir()
        (student / added / "scores.json").write_text("{}")
    else:
        (student / added).write_text("mine\n")
    name = added.rstrip("/")
    assert_user_error(
        cli("select-layers", teacher, "-k", "2", "-o", student, "--force"),
        f"holds {name}, which nash did not write", "--force will not replace it",
    )
    assert (student / name).exists() and json.loads((student / "config.json").read_text())["num_decoder_layers"] == 1
    shutil.rmtree(student / name) if (student / name).is_dir() else (student / name).unlink()
    assert cli("select-layers", teacher, "-k", "2", "-o", student, "--force").exit_code == 0


def test_force_over_an_output_written_before_nash_listed_its_entries(teacher, tmp_path, cli):
    student = tmp_path / "student"
    assert cli("select-layers", teacher, "-k", "1", "-o", student).exit_code == 0
    manifest = json.loads((student / "nash.json").read_text())
    del manifest[artifact.FILES_KEY]  # as nash wrote it before
    (student / "nash.json").write_text(json.dumps(manifest))
    (student / "README.md").write_text("mine\n")
    assert_user_error(cli("select-layers", teacher, "-k", "2", "-o", student, "--force"), "holds README.md")
    (student / "README.md").unlink()
    assert cli("select-layers", teacher, "-k", "2", "-o", student, "--force").exit_code == 0


def _distill_args(teacher, data, out):
    return ["distill", teacher, "--teacher", teacher, "--data", data, "--source-column", "text",
            "--target-column", "summary", "-o", out, "--max-steps", "1", "--batch-size", "2"]


@pytest.mark.parametrize("flags", [["--force"], ["--resume"], []])
def test_a_partial_that_nash_did_not_write_is_neither_removed_nor_resumed(flags, teacher, data, tmp_path, cli, no_loading):
    out = tmp_path / "out"
    partial = tmp_path / "out.partial"
    partial.write_text("my file\n")
    assert_user_error(cli(*_distill_args(teacher, data, out), *flags), f"{partial} is a file", "nash will neither")
    assert partial.read_text() == "my file\n"
    partial.unlink()
    (partial / "figures").mkdir(parents=True)
    assert_user_error(cli(*_distill_args(teacher, data, out), *flags), "holds figures, which nash did not write")
    shutil.rmtree(partial / "figures")
    (partial / "run.json").write_text('{"experiment": 3}')
    assert_user_error(cli(*_distill_args(teacher, data, out), *flags), "has no run.json that nash wrote")
    assert (partial / "run.json").read_text() == '{"experiment": 3}'
    assert not out.exists() and not list(tmp_path.glob(".*nash-lock"))


# --------------------------------------------------------------------------- a full disk: one line, cleanup unchanged


def _disk_full(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


class _FullFile:
    """A file object on a full disk: every write fails as the system's does."""

    def __init__(self, handle, mode="r", *args, **kwargs):
        self._file = _REAL_FDOPEN(handle, mode, *args, **kwargs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def write(self, data):
        _disk_full()

    def __getattr__(self, name):
        return getattr(self._file, name)


_REAL_FDOPEN = os.fdopen


def assert_failed_write(result, *fragments: str) -> None:
    """A failure after the work: the progress printed so far, then one error line (exit 2, no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if ".tmp" in p.name or p.name.endswith(".nash-lock"))


@pytest.mark.parametrize("error", ["oserror", "safetensors"])
def test_a_full_disk_in_select_layers_is_one_line(error, teacher, tmp_path, cli, monkeypatch):
    import transformers.modeling_utils

    def full(*args, **kwargs):
        if error == "safetensors":  # what safetensors' Rust writer raises
            raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')
        _disk_full()

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    out = tmp_path / "student"
    assert_user_error(cli("select-layers", teacher, "-k", "1", "-o", out), f"the disk is full: writing {out} failed",
                      "free disk space")
    assert not out.exists() and _leftovers(tmp_path) == []


def test_a_full_disk_writing_eval_and_bench_files_is_one_line(teacher, data, tmp_path, cli, monkeypatch):
    monkeypatch.setattr(os, "fdopen", _FullFile)
    metrics = tmp_path / "eval" / "metrics.json"
    assert_failed_write(cli(*eval_args(teacher, data, metrics)), f"the disk is full: writing {metrics} failed")
    bench = tmp_path / "bench.json"
    args = ["bench", teacher, "--batch", "1", "--repeats", "1", "--warmup", "0", "--max-new-tokens", "2", "--num-batches", "1"]
    assert_failed_write(cli(*args, "-o", bench), f"the disk is full: writing {bench} failed", "free disk space")
    assert not metrics.exists() and not bench.exists() and _leftovers(tmp_path) == []


def test_a_full_disk_during_a_state_save_is_one_line(teacher, data, tmp_path, cli, monkeypatch):
    import nash_cli.train.state as state

    monkeypatch.setattr(state, "commit_dir", _disk_full)
    out = tmp_path / "out"
    result = cli(*_distill_args(teacher, data, out)[:-4], "--max-steps", "3", "--batch-size", "2", "--save-every", "1")
    assert_failed_write(result, f"the disk is full: writing {out}.partial failed", "free disk space, then rerun with --resume")
    assert not out.exists() and not (tmp_path / "out.partial").exists()  # no state was saved: nothing kept


def test_a_full_disk_during_export_is_one_line(make_checkpoint, tmp_path, cli, monkeypatch):
    ctranslate2 = pytest.importorskip("ctranslate2")

    monkeypatch.setattr(ctranslate2.specs.model_spec.ModelSpec, "save", _disk_full)
    out = tmp_path / "ct2"
    assert_failed_write(cli("export", make_checkpoint("t5"), "-o", out, "--no-verify"), f"the disk is full: writing {out} failed")
    assert not out.exists() and _leftovers(tmp_path) == []


def test_a_full_disk_before_the_first_byte_is_one_line(tmp_path, monkeypatch):
    import tempfile

    out = tmp_path / "a" / "out"
    monkeypatch.setattr(tempfile, "mkdtemp", _disk_full)  # the staging directory cannot be made
    with pytest.raises(artifact.DiskFullError, match=f"writing {out} failed"):
        with artifact.staged_output(out):
            raise AssertionError("not reached")
    monkeypatch.undo()
    monkeypatch.setattr(os, "open", _disk_full)  # nor the lock file
    with pytest.raises(artifact.DiskFullError, match="free disk space"):
        artifact.check_output(out, False)
    monkeypatch.undo()
    assert snapshot(tmp_path) == set()


def test_a_partial_left_before_its_run_record_is_nash_s(tmp_path):
    partial = tmp_path / "out.partial"
    (partial / ".run.json.abc123.tmp").mkdir(parents=True)  # killed while writing its first file
    artifact.check_partial(tmp_path / "out")
    (partial / "run.json").write_text('{"fingerprint": {}, "run": {}}')
    (partial / "latest").write_text("step-00000002")
    (partial / "step-00000002").mkdir()
    artifact.check_partial(tmp_path / "out")
