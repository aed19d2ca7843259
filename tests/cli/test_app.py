"""The `nash` entry point: usage mistakes end in one line and exit 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import assert_user_error, snapshot

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["eval", "ckpt", "--data", "d.jsonl", "--bogus"], ["no such option: --bogus", "nash eval --help"]),
        (["select-layers", "ckpt", "-k", "2"], ["missing option '--output'", "nash select-layers --help"]),
        (["select-layers", "ckpt", "-k", "two", "-o", "out"], ["'-k'", "valid integer"]),
        (["bogus"], ["no such command 'bogus'", "nash --help"]),
        (["eval", "ckpt", "--data", "d.jsonl", "--limit", "0"], ["'--limit'", "greater than or equal to 1"]),
        (["eval", "ckpt", "--data", "d.jsonl", "--metric"], ["'--metric' requires an argument", "nash eval --help"]),
        (["eval"], ["missing argument 'checkpoint'"]),
        (["bench", "ckpt", "--batch", "-1.5"], ["'--batch'"]),
    ],
    ids=["unknown-option", "missing-output", "k-two", "unknown-command", "limit-0", "option-without-value", "no-checkpoint", "float-batch"],
)
def test_usage_mistakes_are_one_line_and_exit_2(cli, tmp_path, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)
    result = cli(*args)
    assert_user_error(result, *fragments)
    assert snapshot(tmp_path) == set()


def test_no_arguments_prints_the_help_and_exits_2(cli):
    result = cli()
    assert result.exit_code == 2
    assert "select-layers" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_help_and_version_still_exit_0(cli):
    assert cli("--help").exit_code == 0
    version = cli("--version")
    assert version.exit_code == 0 and version.stdout.startswith("nash ")


def test_usage_error_through_the_console_entry_point_has_no_traceback(tmp_path):
    # The real process: python -m nash_cli, as `nash` and `accelerate launch -m nash_cli` run it.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "nash_cli", "select-layers", "ckpt", "-k", "two", "-o", "out"],
        check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: "), done.stderr
    assert snapshot(tmp_path) == set()


COMMANDS = ["demo", "run", "select-layers", "prune-encoder", "compact", "distill", "export", "bench", "eval", "report"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_a_mistyped_flag_in_one_line(cli, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    result = cli(command, "--jsn")
    assert_user_error(result, "no such option: --jsn", f"(see nash {command} --help)")
    assert snapshot(tmp_path) == set()


def test_ctrl_c_inside_a_command_exits_130(cli, make_checkpoint, tmp_path, monkeypatch):
    # typer returns (does not raise) Exit(130) for a KeyboardInterrupt outside standalone mode;
    # main must still exit 130, not 0, so a shell pipeline sees the interruption.
    import nash_cli.stages.compact as compact

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compact, "run", interrupted)
    result = cli("compact", make_checkpoint("t5"), "-o", tmp_path / "out")
    assert result.exit_code == 130
    assert "Interrupted" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
