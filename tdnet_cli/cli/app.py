"""The ``tdnet`` Typer application. Each command lives in its own module and registers itself."""

from __future__ import annotations

from typing import Annotated

import typer

from tdnet_cli import __version__

app = typer.Typer(
    name="tdnet",
    help="Fast video semantic segmentation with Temporally Distributed Networks (TDNet).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
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


# Command modules register themselves on `app` when imported (one line each).
from tdnet_cli.cli import bench as _bench  # noqa: E402,F401
from tdnet_cli.cli import eval as _eval  # noqa: E402,F401
from tdnet_cli.cli import inspect as _inspect  # noqa: E402,F401
from tdnet_cli.cli import models as _models  # noqa: E402,F401
from tdnet_cli.cli import segment as _segment  # noqa: E402,F401
from tdnet_cli.cli import synth as _synth  # noqa: E402,F401
from tdnet_cli.cli import train as _train  # noqa: E402,F401

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 the work started and something failed (a failed input, a write, a full disk); "
    "2 nothing was done (a bad option or a wrong file named); 130/143 interrupted by Ctrl-C/SIGTERM."
)
for _info in app.registered_commands:  # one statement of the rule, shown by every command's --help
    _info.epilog = EXIT_CODES_HELP


def main() -> None:
    app(prog_name="tdnet")
