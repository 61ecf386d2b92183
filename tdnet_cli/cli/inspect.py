"""``tdnet inspect``: what a weights file holds, before you run it."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tdnet_cli.cli.common import InputSizeOpt, JsonOpt, ModelOpt, console, handle_errors


@handle_errors
def inspect_command(
    weights: Annotated[
        str,
        typer.Argument(
            metavar="FILE", help="A checkpoint: ours (.pt) or a released state dict (.pkl); a file or an http(s) URL."
        ),
    ],
    model: ModelOpt = None,
    input_size: InputSizeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load a checkpoint and show its model, input size, classes and provenance."""
    # torch: loaded by the command, not by `tdnet --help`
    from tdnet_cli.models.checkpoint import describe, load_checkpoint
    from tdnet_cli.sizes import parse_size

    loaded = load_checkpoint(
        weights, preset=model, input_size=parse_size(input_size), source="the path given to inspect"
    )
    info = describe(loaded)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    # names from the command line and from the file are printed literally (brackets kept)
    table = Table(show_header=False, title=escape(weights))
    for key, value in info.items():
        if isinstance(value, (list, dict)):
            value = json.dumps(value) if key != "classes" else ", ".join(value)
        table.add_row(key, escape(str(value)))
    console.print(table)
