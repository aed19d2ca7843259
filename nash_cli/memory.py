"""Peak memory of one pass of generation on the CPU: the process's resident set size, sampled.

Both generation engines (`nash_cli.generation.TransformersEngine`, `nash_cli.export.runtime.
CTranslate2Model`) report their memory pass through `cpu_rss_pass` on the CPU, so the figures of
the two are measured the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

#: Interval of the RSS sampler on CPU, in seconds.
RSS_INTERVAL_S = 0.002


class PeakRSS:
    """Samples this process's resident set size in a background thread while active."""

    def __init__(self, interval: float = RSS_INTERVAL_S):
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.before = self.peak = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> "PeakRSS":
        self.before = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def release_free_memory() -> None:
    """Hands memory freed by earlier work back to the OS (glibc only).

    Memory freed by an earlier model stays in the C allocator's heap and would be reused without
    raising the RSS; releasing it first makes the rise measured next this model's own.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_rss_pass(run_pass: Callable[[], None], weights_mib: float) -> dict[str, Any]:
    """Runs `run_pass` once with the process RSS sampled: the CPU memory figure of any engine.

    Args:
        run_pass: One pass of generation over the batches.
        weights_mib: The model's weights in MiB, reported beside the peak.

    Returns:
        `kind` ("cpu_rss"), `weights_mib`, `peak_mib` (the peak RSS) and `increase_mib` (the peak
        over the RSS before the pass).
    """
    release_free_memory()
    with PeakRSS() as rss:
        run_pass()
    return {
        "kind": "cpu_rss",
        "weights_mib": weights_mib,
        "peak_mib": rss.peak / 2**20,
        "increase_mib": (rss.peak - rss.before) / 2**20,
    }
