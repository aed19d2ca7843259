"""Shared fixtures: tiny T5 / BART checkpoints built from a config, with a toy tokenizer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

#: A small corpus for the toy tokenizer and toy data sets.
CORPUS = [
    "the quick brown fox jumps over the lazy dog .",
    "a cat sat on the mat and looked at the dog .",
    "summarize : the meeting is moved to friday at noon .",
    "question : where is the meeting ? context : the meeting is in room four .",
    "bob will bring the slides and alice will bring coffee .",
    "one two three four five six seven eight nine ten .",
]

FAMILIES = ("t5", "t5-gated", "bart")


@pytest.fixture(scope="session")
def tokenizer():
    from nash_cli.toy import train_word_tokenizer

    return train_word_tokenizer(CORPUS, vocab_size=96)


def write_checkpoint(path: Path, model, tokenizer) -> Path:
    """Saves `model` and `tokenizer` as a plain Hugging Face checkpoint directory."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory, tokenizer):
    """Returns a factory: `make_checkpoint(family, **tiny_config_kwargs) -> Path` (cached)."""
    from nash_cli.toy import tiny_model

    cache: dict[str, Path] = {}

    def make(family: str = "t5", **kwargs) -> Path:
        key = json.dumps([family, sorted(kwargs.items())])
        if key not in cache:
            kwargs.setdefault("vocab_size", len(tokenizer))
            model = tiny_model(family, **kwargs)
            path = tmp_path_factory.mktemp(f"ckpt-{family}")
            cache[key] = write_checkpoint(path, model, tokenizer)
        return cache[key]

    return make


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


def no_wordnet(reason: str) -> None:
    """Skips a test that needs WordNet; fails it where the machine promised WordNet.

    `.ci/run` installs WordNet and sets NASH_REQUIRE_WORDNET=1, so on CI a missing WordNet is a
    failure, not a silently skipped METEOR check.
    """
    if os.environ.get("NASH_REQUIRE_WORDNET") == "1":
        pytest.fail(f"NASH_REQUIRE_WORDNET=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def shared_dir() -> Path:
    """`../shared` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two threads
    # per process can make a step ten times slower; one thread keeps the suite's time steady.
    # Restored after each test, since `--threads` in a CLI test changes the process-wide setting.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Tests never reach a hub; make any accidental attempt fail fast instead of hanging.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", os.environ.get("TRANSFORMERS_VERBOSITY", "error"))


class CliResult:
    """What one in-process `nash ...` call printed and returned."""

    def __init__(self, exit_code: int, stdout: str, stderr: str):
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def cli(capsys):
    """Runs `nash ARGS...` in-process: `cli("select-layers", str(path), ...) -> CliResult`."""
    from nash_cli.cli.app import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_user_error(result: CliResult, *fragments: str) -> None:
    """A user mistake: exit 2, one line on stderr starting with 'error:', no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def write_masked(path: Path, source: Path) -> Path:
    """A masked checkpoint as prune-encoder writes it: `source`'s weights and a masks file
    (head 0 of layer 0 and every other FFN unit masked)."""
    import torch

    from nash_cli import artifact
    from nash_cli.masking import MASKS_FILE, encoder_shape, write_mask_file

    model = artifact.load_model(str(source))
    shape = encoder_shape(model)
    heads = torch.ones(shape.num_layers, shape.num_heads)
    heads[0, 0] = 0
    ffn = torch.ones(shape.num_layers, shape.d_ff)
    ffn[:, ::2] = 0

    def masks(directory: Path) -> None:
        write_mask_file(
            directory / MASKS_FILE, heads_log_alpha=heads * 8 - 4, ffn_log_alpha=ffn * 8 - 4, heads_mask=heads, ffn_mask=ffn
        )

    return artifact.save_checkpoint(
        model, path, source=source, stage="prune-encoder", arguments={}, state="masked", extra_files={MASKS_FILE: masks}
    )


def make_unreadable(path: Path, monkeypatch, *, method: str) -> None:
    """Makes `path` unreadable: mode 0, and where that does not stop this process (root reads
    anything), `Path.<method>` refusing it as the system refuses a user."""
    path.chmod(0)
    if os.access(path, os.R_OK):
        real = getattr(Path, method)

        def refuse(self, *args, **kwargs):
            if self.name == path.name:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, method, refuse)


def snapshot(directory: Path) -> set[str]:
    """Every path under `directory` (for "nothing was written" checks)."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def latest_step(partial: Path) -> int | None:
    """The step of the newest complete state in a run's `<output>.partial/`, or None."""
    try:
        name = (Path(partial) / "latest").read_text().strip()
    except OSError:
        return None
    return int(name.rsplit("-", 1)[1]) if name.startswith("step-") else None


def kill_when(
    command: Sequence[str],
    ready: Callable[[], bool],
    *,
    env: dict[str, str],
    cwd: Path,
    timeout: float = 240.0,
) -> subprocess.CompletedProcess:
    """Starts `command`, SIGKILLs it from outside as soon as `ready()` holds, and returns what it
    printed (returncode -9). Fails the test if the process ends by itself first, or if `ready()`
    stays false for `timeout` seconds. Output goes to files, so a chatty process never blocks."""
    import pytest

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(list(map(str, command)), stdout=out, stderr=err, env=env, cwd=cwd, text=True)
        deadline = time.monotonic() + timeout
        try:
            while not ready():
                if process.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            else:
                process.send_signal(signal.SIGKILL)
            if process.poll() is None and time.monotonic() > deadline:
                process.kill()
                process.wait(timeout=60)
                err.seek(0)
                pytest.fail(f"not ready after {timeout:.0f} s: {' '.join(map(str, command))}\n{err.read()[-3000:]}")
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())
    if result.returncode != -signal.SIGKILL:
        pytest.fail(f"the run ended by itself (exit {result.returncode}) before it could be killed:\n{result.stderr[-3000:]}")
    return result


def assert_usual_modes(root: Path) -> None:
    """Every file under `root` has mode `0o666 & ~umask` and every directory `0o777 & ~umask`."""
    umask = os.umask(0)
    os.umask(umask)
    modes = {str(p.relative_to(root)) or ".": p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}
    expected = {name: (0o777 if (root / name).is_dir() else 0o666) & ~umask for name in modes}
    assert modes == expected, {name: oct(mode) for name, mode in modes.items() if mode != expected[name]}
