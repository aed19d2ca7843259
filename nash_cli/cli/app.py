"""The `nash` command: a Typer app whose subcommands live one per module in this package.

Nothing here imports torch or transformers, so `nash --help` stays instant; each command
imports the library inside its function body.
"""

from __future__ import annotations

import sys

import typer

from nash_cli import __version__
from nash_cli.cli import bench, compact, demo, distill, export, plan, prune_encoder, prune_vocab, report, run, select_layers
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
app.command("plan")(plan.command)
app.command("run")(run.command)
app.command("select-layers")(select_layers.command)
app.command("prune-encoder")(prune_encoder.command)
app.command("compact")(compact.command)
app.command("distill")(distill.command)
app.command("prune-vocab")(prune_vocab.command)
app.command("export")(export.command)
app.command("bench")(bench.command)
app.command("eval")(eval_.command)
app.command("report")(report.command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a user mistake prints one line to stderr and exits with code 2."""
    try:
        # Outside standalone mode typer returns, rather than raises, the code of a `typer.Exit`
        # raised inside a command, and turns Ctrl-C into Exit(130): pass the code on.
        code = app(args=argv, prog_name="nash", standalone_mode=False)
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
    except Exception as error:
        if not _is_usage_error(error):
            raise
        if type(error).__name__ == "NoArgsIsHelpError":  # `nash` or a command with no arguments: its help
            error.show()
        else:
            typer.echo(f"error: {usage_line(error, argv if argv is not None else sys.argv[1:])}", err=True)
        sys.exit(getattr(error, "exit_code", 2))
    if code == 130:
        typer.echo("Interrupted: no output was written.", err=True)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


def _is_usage_error(error: Exception) -> bool:
    # typer 0.29 raises its own copies of click's exceptions (typer._click), which are not
    # click.ClickException; both carry `format_message()` and an exit code (2 for usage errors).
    # click itself is no longer a dependency of typer (nltk and huggingface_hub bring it).
    from typer._click.exceptions import ClickException

    if isinstance(error, ClickException):
        return True
    try:
        import click
    except ImportError:
        return False
    return isinstance(error, click.ClickException)


def usage_line(error: Exception, argv: list[str]) -> str:
    """A usage error (unknown option or command, missing or malformed value) as one line.

    click prints a usage block, a hint and the error on separate lines; the house prints one line
    naming the problem and where the fix is documented, e.g.
    "no such option: --bogus (see nash eval --help)".

    Args:
        error: The usage error.
        argv: The command line, for errors raised before click knew the command.
    """
    message = " ".join(error.format_message().split()).rstrip(".")  # a choice list spans several lines
    message = message[:1].lower() + message[1:]
    context = getattr(error, "ctx", None)
    if context is not None:
        where = context.command_path
    else:
        command = next((word for word in argv if not word.startswith("-")), None)
        where = f"nash {command}" if command in _command_names() else "nash"
    return f"{message} (see {where} --help)"


def _command_names() -> set[str]:
    return {info.name for info in app.registered_commands}
