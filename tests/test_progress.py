"""`nash_cli.progress`: plain log lines off a terminal, a Rich bar on one, and the CLI's bars."""

from __future__ import annotations

import io
import sys

import pytest

from nash_cli.progress import BarProgress, LogProgress, Progress, format_clock, format_rate


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_n_steps_and_at_the_end():
    clock, out = Clock(), io.StringIO()
    with LogProgress("distill", 10, every=4, stream=out, clock=clock) as progress:
        for step in range(10):
            clock.now += 0.5
            progress.advance(status=f"loss {step:.4f} lr 3.0e-04")
    assert out.getvalue().splitlines() == [
        "distill step 4/10 (40%) loss 3.0000 lr 3.0e-04 | 2.00 steps/s, elapsed 0:02, eta 0:03",
        "distill step 8/10 (80%) loss 7.0000 lr 3.0e-04 | 2.00 steps/s, elapsed 0:04, eta 0:01",
        "distill step 10/10 (100%) loss 9.0000 lr 3.0e-04 | 2.00 steps/s, elapsed 0:05, eta 0:00",
    ]


def test_big_advances_resumes_and_unknown_totals():
    clock, out = Clock(), io.StringIO()
    progress = LogProgress("eval", 12, every=4, stream=out, unit="batch", clock=clock)
    for _ in range(4):  # 3, 6, 9, 12: a line whenever a multiple of 4 is passed, and at the end
        clock.now += 1
        progress.advance(3)
    progress.close()
    assert [line.split(" |")[0] for line in out.getvalue().splitlines()] == [
        "eval batch 6/12 (50%)", "eval batch 9/12 (75%)", "eval batch 12/12 (100%)",
    ]  # fmt: skip
    assert out.getvalue().splitlines()[0].endswith("| 3.00 batches/s, elapsed 0:02, eta 0:02")

    # A resumed run: the rate counts this invocation's steps only, from the new position.
    out = io.StringIO()
    progress = LogProgress("train", 20, every=5, stream=out, clock=clock)
    clock.now += 1000  # set-up time before the loop starts
    progress.update(total=20, completed=12)
    for _ in range(3):
        clock.now += 2
        progress.advance()
    assert out.getvalue() == "train step 15/20 (75%) | 0.50 steps/s, elapsed 0:06, eta 0:10\n"

    # No total: no percentage or ETA; closing reports the final count once, failing does not.
    out = io.StringIO()
    with LogProgress("bench", every=10, stream=out, clock=clock) as progress:
        for _ in range(3):
            clock.now += 30
            progress.advance()
    assert out.getvalue() == "bench step 3 | 30.0 s/step, elapsed 1:30\n"
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt), LogProgress("x", 10, every=4, stream=out, clock=clock) as progress:
        progress.advance()
        raise KeyboardInterrupt
    assert out.getvalue() == ""


def test_for_stream_picks_by_whether_stderr_is_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert type(Progress.for_stream("a", 3)) is LogProgress
    assert type(Progress.for_stream("a", 3, disable=True)) is Progress
    assert type(Progress.for_stream("a", 3, terminal=True)) is BarProgress
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert type(Progress.for_stream("a", 3)) is BarProgress
    assert type(Progress.for_stream("a", 3, terminal=False)) is LogProgress

    # The silent reporter still counts.
    silent = Progress("a", 3)
    silent.advance(2, status="s")
    assert (silent.completed, silent.status) == (2, "s")
    assert capsys.readouterr().err == ""


def test_the_bar_draws_no_plain_lines(capsys):
    with Progress.for_stream("demo", 3, every=1, terminal=True) as progress:
        for _ in range(3):
            progress.advance(status="loss 1.0000")
    err = capsys.readouterr().err
    assert "demo" in err and "3/3" in err and "loss 1.0000" in err
    assert "demo step" not in err and "steps/s," not in err


def test_the_bar_columns():
    from nash_cli.progress import rich_bar

    with rich_bar(transient=True, disable=True) as bar:
        task = bar.add_task("bench", total=2, status="")
        bar.update(task, advance=1, status="warm-up t5")
    assert len(bar.columns) == 8 and bar.tasks[0].completed == 1


def test_formats():
    assert format_clock(13) == "0:13" and format_clock(116.4) == "1:56" and format_clock(3723) == "1:02:03"
    assert format_rate(3.1) == "3.10 steps/s" and format_rate(0.05) == "20.0 s/step"
    assert format_rate(12.5, "batch") == "12.50 batches/s"
