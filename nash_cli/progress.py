"""Progress of long loops on stderr: a Rich bar on a terminal, plain log lines anywhere else.

A Rich bar redraws itself in place, which only a terminal shows; in CI, under `| tee` or in a
job scheduler's log it would stay invisible until the loop ends. So `Progress.for_stream` picks
by `sys.stderr.isatty()`:

- a terminal: `BarProgress`, a Rich bar (description, bar, M/N, rate, elapsed, ETA, status);
- anything else: `LogProgress`, one line every `every` units and one at the end, e.g.

      distill step 40/400 (10%) loss 2.3104 lr 2.9e-04 | 3.10 steps/s, elapsed 0:13, eta 1:56

- `disable=True`: a plain `Progress`, which counts and reports nothing.

Usage:

    with Progress.for_stream("distill", total=400, every=10) as progress:
        for step in range(400):
            ...
            progress.advance(status=f"loss {loss:.4f}")

Every reporter has the same small interface: `advance(n, status=...)`, `update(completed=...,
total=..., status=...)`, `close()`, and use as a context manager (which closes it). Reports
may also come without `with`: a bar starts drawing at the first report. Setting `completed`
through `update` (a resumed run starting at step k) restarts the rate and ETA measurement, so
they describe this invocation's speed.

This module is library code: the CLI's `nash_cli.cli._common.progress()` builds its bars here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress


class Progress:
    """Counts units of work towards a total; this base class reports nothing (progress off).

    Args:
        description: What is running, e.g. "distill" (the first word of every report).
        total: The number of units, or None while unknown (`update(total=...)` sets it later).
        completed: Units already done (a resumed run's starting step).
        unit: The name of one unit, e.g. "step" or "batch".
        clock: Seconds as a float, monotonic (tests pass a fake).
    """

    def __init__(
        self,
        description: str,
        total: int | None = None,
        *,
        completed: int = 0,
        unit: str = "step",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.description = description
        self.total = total
        self.completed = completed
        self.unit = unit
        self.status = ""
        self._clock = clock
        self._origin = (clock(), completed)

    @staticmethod
    def for_stream(
        description: str,
        total: int | None = None,
        *,
        every: int = 1,
        completed: int = 0,
        unit: str = "step",
        disable: bool = False,
        terminal: bool | None = None,
        transient: bool = False,
    ) -> Progress:
        """The reporter for stderr: a Rich bar if stderr is a terminal, else plain log lines.

        Args:
            description, total, completed, unit: As for `Progress`.
            every: Plain lines: print one every this many units (and at the end).
            disable: Report nothing.
            terminal: Force the choice (True: bar, False: lines); None asks `sys.stderr.isatty()`.
            transient: Bar: remove it from the screen when done.
        """
        if disable:
            return Progress(description, total, completed=completed, unit=unit)
        if terminal is None:
            isatty = getattr(sys.stderr, "isatty", None)
            terminal = bool(isatty and isatty())
        if terminal:
            return BarProgress(description, total, completed=completed, unit=unit, transient=transient)
        return LogProgress(description, total, every=every, completed=completed, unit=unit)

    # ----------------------------------------------------------------- reporting

    def advance(self, n: int = 1, *, status: str | None = None) -> None:
        """Records `n` more units done, and the status text to show with them."""
        before = self.completed
        self.completed += n
        if status is not None:
            self.status = status
        self._report(before)

    def update(self, *, completed: int | None = None, total: int | None = None, status: str | None = None) -> None:
        """Sets the position, the total or the status text. A new `completed` restarts the rate
        and ETA measurement from there (e.g. at the first step of a resumed run)."""
        if total is not None:
            self.total = total
        if status is not None:
            self.status = status
        if completed is not None:
            self.completed = completed
            self._origin = (self._clock(), completed)
        self._report(None)

    def close(self, *, ok: bool = True) -> None:
        """Ends the report; `ok=False` (the loop failed) skips a closing summary."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close(ok=kind is None)

    # ----------------------------------------------------------------- measurements

    @property
    def elapsed(self) -> float:
        """Seconds since the start (or since `completed` was last set)."""
        return self._clock() - self._origin[0]

    @property
    def rate(self) -> float | None:
        """Units per second since the start (or since `completed` was last set); None before any."""
        done, elapsed = self.completed - self._origin[1], self.elapsed
        return done / elapsed if done > 0 and elapsed > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds to the total at the current rate; None when the total or the rate is unknown."""
        rate = self.rate
        if self.total is None or rate is None:
            return None
        return max(0, self.total - self.completed) / rate

    def _report(self, before: int | None) -> None:
        """Called after each change; `before` is the count before an `advance`, None after `update`."""


class LogProgress(Progress):
    """Plain lines, for logs: one each time the count reaches a multiple of `every`, one when it
    reaches the total, and (on a clean close) one for a final count not yet reported.

    Args:
        every: Units between lines.
        stream: Where lines go (default: `sys.stderr` at the time of writing); flushed each time.
        Others: as for `Progress`.
    """

    def __init__(
        self,
        description: str,
        total: int | None = None,
        *,
        every: int = 1,
        completed: int = 0,
        unit: str = "step",
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(description, total, completed=completed, unit=unit, clock=clock)
        self.every = max(1, every)
        self.stream = stream
        self._printed: int | None = None

    def line(self) -> str:
        """The current report, e.g. `distill step 40/400 (10%) loss 2.31 | 3.10 steps/s, elapsed
        0:13, eta 1:56`."""
        where = f"{self.unit} {self.completed}"
        if self.total:
            where += f"/{self.total} ({100 * self.completed // self.total}%)"
        head = " ".join(part for part in (self.description, where, self.status) if part)
        rate, eta = self.rate, self.eta
        speed = "?" if rate is None else format_rate(rate, self.unit)
        timing = f"{speed}, elapsed {format_clock(self.elapsed)}"
        if self.total:
            timing += f", eta {'?' if eta is None else format_clock(eta)}"
        return f"{head} | {timing}"

    def _report(self, before: int | None) -> None:
        if before is None or self.completed == self._printed:
            return
        crossed = self.completed // self.every > before // self.every
        if crossed or (self.total is not None and self.completed >= self.total > before):
            self._print()

    def close(self, *, ok: bool = True) -> None:
        if ok and self.completed != self._printed and self.completed > self._origin[1]:
            self._print()

    def _print(self) -> None:
        stream = self.stream or sys.stderr
        stream.write(self.line() + "\n")
        stream.flush()
        self._printed = self.completed


class BarProgress(Progress):
    """A Rich bar on stderr (main use: a terminal). It starts at `__enter__` or the first report.

    Args:
        console: The Rich console to draw on (default: a new one on stderr, treated as a terminal).
        transient: Remove the bar when it closes.
        Others: as for `Progress`.
    """

    def __init__(
        self,
        description: str,
        total: int | None = None,
        *,
        completed: int = 0,
        unit: str = "step",
        console: Console | None = None,
        transient: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(description, total, completed=completed, unit=unit, clock=clock)
        self.console = console
        self.transient = transient
        self._bar: RichProgress | None = None
        self._task: Any = None

    def __enter__(self) -> BarProgress:
        self._start()
        return self

    def _start(self) -> None:
        if self._bar is not None:
            return
        from rich.console import Console

        console = self.console or Console(stderr=True, force_terminal=True)
        self._bar = rich_bar(console=console, transient=self.transient)
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=self.total, completed=self.completed, status=self.status)

    def _report(self, before: int | None) -> None:
        self._start()
        if before is None:  # a new position or total: restart Rich's speed estimate too
            self._bar.reset(self._task, total=self.total, completed=self.completed, status=self.status)
        else:
            self._bar.update(self._task, completed=self.completed, status=self.status)

    def close(self, *, ok: bool = True) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


# --------------------------------------------------------------------------- shared pieces


def rich_bar(*, console: Console | None = None, transient: bool = False, disable: bool = False) -> RichProgress:
    """A `rich.progress.Progress` with nash's columns: description, bar, M/N, rate, elapsed, ETA
    and the task's `status` field (give each task `status=""`)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            if speed is None:
                return Text("  ?/s", style="cyan")
            return Text(f"{speed:.2f}/s" if speed >= 0.1 else f"{1 / speed:.1f}s/it", style="cyan")

    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    return RichProgress(
        # descriptions and statuses carry paths and model names: text as written, not markup
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}", markup=False),
        console=console,
        transient=transient,
        disable=disable,
    )


def format_clock(seconds: float) -> str:
    """`0:13`, `12:05`, `1:02:03`: minutes and seconds, with hours when there are any."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def format_rate(rate: float, unit: str = "step") -> str:
    """`3.10 steps/s` (`batches/s`, ...), or `12.5 s/step` below 0.1 per second."""
    if rate >= 0.1:
        plural = unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")
        return f"{rate:.2f} {plural}/s"
    return f"{1 / rate:.1f} s/{unit}"


__all__ = ["BarProgress", "LogProgress", "Progress", "format_clock", "format_rate", "rich_bar"]
