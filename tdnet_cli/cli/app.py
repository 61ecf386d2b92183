"""The ``tdnet`` Typer application: each command is a plain function in its own module, registered here."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

try:  # typer >= 0.22 carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # older typer runs on click itself
    from click import exceptions as click_errors

from tdnet_cli import __version__
from tdnet_cli.cli.common import fail
from tdnet_cli.cli.helptext import EXIT_CODES_HELP, Command, Group, HelpLabels, epilog
from tdnet_cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

app = typer.Typer(
    name="tdnet",
    help="Fast video semantic segmentation with Temporally Distributed Networks (TDNet).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=Group,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tdnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Fast video semantic segmentation with Temporally Distributed Networks (TDNet)."""


from tdnet_cli.cli.bench import bench_command
from tdnet_cli.cli.eval import eval_command
from tdnet_cli.cli.inspect import inspect_command
from tdnet_cli.cli.models import models_command
from tdnet_cli.cli.segment import SegmentCommand, segment_command
from tdnet_cli.cli.synth import synth_command
from tdnet_cli.cli.train import train_command


class _SegmentCommand(HelpLabels, SegmentCommand):
    """segment's own parsing, with the help labels every command has."""


# Every command, registered here (the command modules do not import this one); each --help
# ends with its examples and the one statement of the exit codes (helptext.py).
app.command("segment", cls=_SegmentCommand, epilog=epilog("segment"))(segment_command)
app.command("eval", cls=Command, epilog=epilog("eval"))(eval_command)
app.command("train", cls=Command, epilog=epilog("train"))(train_command)
app.command("bench", cls=Command, epilog=epilog("bench"))(bench_command)
app.command("synth", cls=Command, epilog=epilog("synth"))(synth_command)
app.command("models", cls=Command, epilog=epilog("models"))(models_command)
app.command("inspect", cls=Command, epilog=epilog("inspect"))(inspect_command)

__all__ = ["EXIT_CODES_HELP", "app", "main", "run"]


def _usage_line(exc: click_errors.UsageError) -> str:
    """A click usage error as one line: the problem, then where help is."""
    message = exc.format_message()
    if isinstance(exc, click_errors.NoSuchOption) and os.path.exists(exc.option_name):
        # a file whose name starts with '-' is read as an option
        name = exc.option_name
        message = f"{name} is read as an option (to pass the file, write ./{name} or put it after --)"
    command = exc.ctx.command_path if exc.ctx is not None else "tdnet"
    return f"{message} (see '{command} --help')"


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return the exit code. Usage errors found while parsing
    (unknown option, bad value) are one line on stderr, like every other error."""
    try:
        code = app(args=argv, prog_name="tdnet", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        exc.show()  # `tdnet` alone: the help
        return exc.exit_code
    except click_errors.UsageError as exc:
        fail(_usage_line(exc), EXIT_USAGE)
        return EXIT_USAGE
    except typer.Abort:
        fail("interrupted", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except click_errors.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
        return exc.exit_code
    return code if isinstance(code, int) else EXIT_OK


def main() -> None:
    sys.exit(run())
