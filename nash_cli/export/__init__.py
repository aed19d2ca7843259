"""Export to serving engines: CTranslate2 (`nash export`), and running its models in bench / eval.

- `nash_cli.export.spec` turns a loaded nash model into a CTranslate2 model specification
  through `nash_cli.arch`'s anatomy (no Hugging Face names here); per-layer encoder heads are
  padded with zero heads, since CTranslate2 has one head count per stack.
- `nash_cli.export.runtime` runs an exported directory with the same inputs and generation
  settings as a transformers model (what `nash bench` and `nash eval` time and score).

ctranslate2 is an optional dependency (`pip install "nash-cli[ctranslate2]"`); this module
imports it only in `require_ctranslate2`, so importing nash never needs it.
"""

from __future__ import annotations

from typing import Any

from nash_cli.errors import NashError

#: The pip extra that brings ctranslate2.
EXTRA = "nash-cli[ctranslate2]"

#: Weight types `nash export --quantization` accepts (CTranslate2's names).
QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "float16", "bfloat16", "float32")


def available() -> bool:
    """Whether ctranslate2 can be imported (checked without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ctranslate2") is not None
    except (ImportError, ValueError):
        return False


def missing_message(purpose: str = "nash export") -> str:
    """The one line that says ctranslate2 is missing and how to get it."""
    return f'{purpose} needs CTranslate2, which is not installed; pip install "{EXTRA}"'


def require_ctranslate2(purpose: str = "nash export") -> Any:
    """Imports ctranslate2, or raises one NashError line naming the extra to install."""
    try:
        import ctranslate2
    except ImportError:
        raise NashError(missing_message(purpose)) from None
    return ctranslate2
