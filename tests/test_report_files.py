"""`nash report` on result files of the wrong shape (issue 22, item 15): one line naming the file."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import assert_user_error


def run_dir_with(tmp_path, bench) -> object:
    run_dir = tmp_path / "run"
    (run_dir / "05-eval" / "student").mkdir(parents=True)
    (run_dir / "04-bench").mkdir()
    (run_dir / "run.json").write_text(json.dumps({"stages": {}}))
    metrics = {"checkpoint": str(tmp_path / "student"), "scores": {"rouge1": 1.0}, "metrics": ["rouge"]}
    (run_dir / "05-eval" / "student" / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "04-bench" / "bench.json").write_text(json.dumps(bench))
    return run_dir


@pytest.mark.parametrize(
    "bench, fragment",
    [([1, 2], "holds a JSON list, not the JSON object nash writes"),
     ({"models": [{"name": "x"}]}, "is not the bench result nash writes"),
     ({"models": "x"}, "is not the bench result nash writes")],
)
def test_a_bench_file_of_the_wrong_shape_is_named(bench, fragment, tmp_path, cli):
    run_dir = run_dir_with(tmp_path, bench)
    result = cli("report", run_dir)
    assert_user_error(result, str(run_dir / "04-bench" / "bench.json"), fragment)
    assert not (run_dir / "report.md").exists()


def test_hub_warnings_are_quiet_while_loading():
    """huggingface_hub's "Retrying in 8s" warnings came before nash's one error line (item 19)."""
    import transformers  # noqa: F401  (its import sets the hub logger's level once)

    from nash_cli._hf import quiet_transformers

    hub = logging.getLogger("huggingface_hub.utils._http")
    level = logging.getLogger("huggingface_hub").level
    with quiet_transformers():
        assert not hub.isEnabledFor(logging.WARNING)
    assert logging.getLogger("huggingface_hub").level == level
