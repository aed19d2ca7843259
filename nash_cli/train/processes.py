"""Processes: the accelerate `Accelerator` a run uses, and which process prints and writes."""

from __future__ import annotations

import os
from typing import Any

from nash_cli.errors import NashError


def make_accelerator(mixed_precision: str | None = None):
    """An Accelerator for this process: GPU when there is one, else CPU (gloo across processes)."""
    import torch
    from accelerate import Accelerator

    kwargs: dict[str, Any] = {"cpu": not torch.cuda.is_available()}
    if mixed_precision is not None:
        kwargs["mixed_precision"] = mixed_precision
    try:
        return Accelerator(**kwargs)
    except ValueError as error:  # e.g. fp16 requested on a CPU
        raise NashError(f"cannot train with --mixed-precision {mixed_precision}: {error}; use 'no' or 'bf16'") from None


def is_main_process() -> bool:
    """True on the process that prints and writes (rank 0), also before accelerate starts."""
    from accelerate import PartialState

    if PartialState._shared_state:
        return PartialState().is_main_process
    return int(os.environ.get("RANK", "0")) == 0
