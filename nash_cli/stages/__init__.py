"""The stages of nash, one module each: typed options, checks, and `run(options) -> result`.

Every stage module holds an `Options` dataclass that owns the stage's defaults and checks
(a docstring per field; `check()` raises `NashError` before any heavy work), a result type,
and `run(options, *, progress=None)`. The CLI (`nash_cli.cli`) maps flags onto the options and
prints the result; `nash run` (`nash_cli.pipeline`) builds the same options from a recipe and
calls the same `run`. Importing a stage module does not import torch.

| module            | command                |
|-------------------|------------------------|
| `select_layers`   | `nash select-layers`   |
| `prune_encoder`   | `nash prune-encoder`   |
| `compact`         | `nash compact`         |
| `distill`         | `nash distill`         |
| `prune_vocab`     | `nash prune-vocab`     |
| `export`          | `nash export`          |
| `bench`           | `nash bench`           |
| `eval`            | `nash eval`            |
| `plan`            | `nash plan`            |
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any


def arguments(options: Any) -> dict[str, Any]:
    """A stage's options as plain JSON values, as recorded in manifests and run states."""
    return {f.name: _plain(getattr(options, f.name)) for f in fields(options)}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
