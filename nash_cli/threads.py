"""CPU threads for the stages that compute: `--threads`, else `OMP_NUM_THREADS`, else torch's.

torch starts one intra-op thread per core. On a machine shared with other jobs that is the worst
choice: every step waits for its slowest thread, and with every core also busy elsewhere a step
slows many times over (docs/getting-started.md, "On a shared machine"). Each computing stage
(bench, eval, plan, export, distill, prune-encoder) therefore takes a `threads` option and calls
`use_threads` first thing in its `run`; left unset, `OMP_NUM_THREADS` decides, as it does for
OpenMP programs, so one variable sets a whole `nash run` or a batch of jobs.
"""

from __future__ import annotations

import os

from nash_cli.errors import NashError

#: The environment variable read when a stage's `threads` is not given.
ENVIRONMENT = "OMP_NUM_THREADS"


def requested_threads(threads: int | None) -> int | None:
    """The thread count asked for: `threads`, else `OMP_NUM_THREADS`, else None (torch's own).

    Args:
        threads: The stage's `threads` option (checked to be at least 1 by its `check()`).

    Raises:
        NashError: `OMP_NUM_THREADS` is set but not a positive integer.
    """
    if threads is not None:
        return threads
    value = os.environ.get(ENVIRONMENT, "").strip()
    if not value:
        return None
    first = value.split(",")[0].strip()  # OpenMP allows a list, one count per nesting level
    if not first.isdigit() or int(first) < 1:
        raise NashError(
            f"{ENVIRONMENT}={value!r} is not a number of threads; set it to a positive integer "
            f"(e.g. {ENVIRONMENT}=1) or unset it"
        )
    return int(first)


def use_threads(threads: int | None) -> int:
    """Sets torch's intra-op threads as `requested_threads` says, and returns the count in effect.

    CTranslate2 models loaded afterwards take the same count (`nash_cli.export.runtime`).

    Args:
        threads: The stage's `threads` option, or None.
    """
    import torch

    wanted = requested_threads(threads)
    if wanted is not None and wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)
    return torch.get_num_threads()
