"""Where the demo's recipe lives (inside the package, so `nash demo` works from any directory)."""

from __future__ import annotations

from pathlib import Path


def demo_recipe_path() -> Path:
    """The packaged `demo.yaml`."""
    return Path(__file__).resolve().parent.parent / "recipes" / "demo.yaml"
