"""Text nash prints is printed as written: square brackets in notes, paths and names are not Rich
markup (`[ctranslate2]` was once taken for a style tag and vanished)."""

from __future__ import annotations

import io

import pytest

from nash_cli.errors import NashError

BRACKETS = "out[bold]x[/bold][ctranslate2]"


def test_demo_without_ctranslate2_names_the_extra_in_full(cli, tmp_path, monkeypatch):
    import nash_cli.export
    import nash_cli.pipeline

    monkeypatch.setattr(nash_cli.export, "available", lambda: False)

    def stop(*args, **kwargs):  # the note is printed before the run starts: stop there
        raise NashError("stopped by the test")

    monkeypatch.setattr(nash_cli.pipeline, "prepare_run", stop)
    result = cli("demo", "-o", tmp_path / "demo")
    assert 'the demo skips its export stage (pip install "nash-cli[ctranslate2]")' in " ".join(result.stderr.split())


@pytest.mark.parametrize("name", ["stdout", "stderr"])
def test_the_consoles_print_brackets_as_written(name):
    from rich.table import Table

    from nash_cli.cli import _common

    console = getattr(_common, name)
    with console.capture() as captured:
        console.print(f"wrote {BRACKETS}")
        table = Table(title=f"export -> {BRACKETS}")
        table.add_column("path")
        table.add_row(BRACKETS)
        console.print(table)
        _common.print_notes([f"the student {BRACKETS} has no encoder heads"], console)
    text = captured.get()
    assert f"wrote {BRACKETS}" in text
    assert f"export->{BRACKETS}" in "".join(text.split())  # the title wraps at the table's width
    assert f"│ {BRACKETS} │" in text
    assert f"note: the student {BRACKETS} has no encoder heads" in text


def test_a_stage_result_prints_a_path_with_brackets_as_written(make_checkpoint, tmp_path, cli):
    teacher = make_checkpoint("t5", encoder_layers=2, decoder_layers=4)
    output = tmp_path / BRACKETS
    result = cli("select-layers", teacher, "--decoder-layers", "2", "-o", output)
    assert result.exit_code == 0, result.stderr
    assert str(output) in "".join(result.stdout.split())  # the title may wrap; the text is whole


def test_progress_status_prints_brackets_as_written():
    from rich.console import Console

    from nash_cli.progress import BarProgress

    console = Console(file=io.StringIO(), force_terminal=True, width=200, record=True)
    with BarProgress("bench", total=2, console=console) as progress:
        progress.advance(status=f"timed {BRACKETS}")
    assert f"timed {BRACKETS}" in console.export_text()
