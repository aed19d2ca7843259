"""What `pip install nash-cli` brings: the dependencies in pyproject.toml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_ctranslate2_is_installed_by_default():
    """README command 1 (`pip install -e .` then `nash demo`) must reach the engine NASH's speedups
    are measured on: the demo's export stage and Table 1's CTranslate2 row need ctranslate2."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "ctranslate2" in _names(project["dependencies"])
    # the line printed where it is missing names this extra: it must still install
    assert "ctranslate2" in _names(project["optional-dependencies"]["ctranslate2"])
