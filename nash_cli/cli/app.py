"""The `nash` command: a Typer app whose subcommands live one per module in this package.

Nothing here imports torch or transformers, so `nash --help` stays instant; each command
imports the library inside its function body.
"""

from __future__ import annotations

import sys

import typer

from nash_cli import __version__
from nash_cli.cli import bench, compact, demo, distill, export, plan, prune_encoder, report, run, select_layers
from nash_cli.cli import eval as eval_
from nash_cli.errors import NashError

app = typer.Typer(
    name="nash",
    help="Make encoder-decoder models faster at generation: a narrow encoder and a shallow decoder (NASH).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nash {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """NASH: a narrow encoder and a shallow decoder for T5, FLAN-T5, T5-efficient and BART."""


app.command("demo")(demo.command)
app.command("run")(run.command)
app.command("select-layers")(select_layers.command)
app.command("prune-encoder")(prune_encoder.command)
app.command("compact")(compact.command)
app.command("distill")(distill.command)
app.command("export")(export.command)
app.command("bench")(bench.command)
app.command("eval")(eval_.command)
app.command("report")(report.command)
app.command("plan")(plan.command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a user mistake prints one line to stderr and exits with code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except NashError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("Interrupted: no output was written.", err=True)
        sys.exit(130)
    except Exception as error:  # click's usage errors carry their own exit code (2)
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
