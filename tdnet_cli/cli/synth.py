"""``tdnet synth``: write synthetic street scenes in the Cityscapes layout."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tdnet_cli.cli.common import JsonOpt, QuietOpt, console, err_console, handle_errors
from tdnet_cli.data import layout
from tdnet_cli.errors import UsageError
from tdnet_cli.sizes import parse_hw


@handle_errors
def synth_command(
    out_dir: Annotated[
        Path,
        typer.Argument(metavar="OUT", help="Dataset folder (created if needed); a second run adds the other split."),
    ],
    sequences: Annotated[
        int, typer.Option("--sequences", "-n", min=1, help="Number of snippets (of --frames frames each).")
    ] = 10,
    split: Annotated[str, typer.Option("--split", metavar="SPLIT", help="train or val.")] = "train",
    size: Annotated[str, typer.Option("--size", metavar="HxW", help="Frame size HxW, e.g. 512x1024.")] = "1024x2048",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Same seed, same bytes.")] = 0,
    frames: Annotated[
        int,
        typer.Option(
            "--frames",
            min=layout.ANNOTATED_INDEX + 1,
            help=f"Frames per snippet; frame {layout.ANNOTATED_INDEX + 1} is the annotated one.",
        ),
    ] = layout.SNIPPET_LENGTH,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Write over the split if it is already there (same-named files replaced)."),
    ] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Generate driving snippets with exact labels in the Cityscapes layout.

    Writes leftImg8bit_sequence/, leftImg8bit/ and gtFine/ of one --split, for `tdnet eval` and `tdnet train`.
    Run it again with the other --split to add that split to the same folder."""
    if split not in ("train", "val"):
        raise UsageError(f"bad --split {split!r}", hint="use train or val")
    from tdnet_cli.data.synth import generate_dataset  # numpy, OpenCV: loaded by the command, not by --help

    hw = parse_hw(size)
    # No bar where stderr is not a terminal: rich would leave a blank line there, before any error line.
    show = not quiet and not json_out and err_console.is_terminal
    generate = functools.partial(
        generate_dataset, out_dir, sequences=sequences, split=split, size=hw, seed=seed,
        frames_per_sequence=frames, overwrite=overwrite,
    )  # fmt: skip
    if not show:
        result = generate()
    else:
        progress = Progress(
            TextColumn("[bold]synth[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("frames  {task.fields[fps]:>5.1f} fps"),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        )
        with progress:
            task = progress.add_task("synth", total=sequences * frames, fps=0.0)

            def report(done: int, total: int) -> None:
                t = progress.tasks[0].elapsed or 0.0
                progress.update(task, completed=done, fps=done / t if t > 0 else 0.0)

            result = generate(progress=report)
    if json_out:
        typer.echo(json.dumps(result.to_dict()))
    elif not quiet:
        d = result.to_dict()
        console.print(
            f"wrote {d['sequences']} snippets ({d['frames']} frames, {d['annotated']} annotated) of "
            f"{hw[0]}x{hw[1]} to {result.out_dir} ({split}: {', '.join(d['cities'])}) "
            f"in {d['seconds']:.1f} s, {d['fps']:.1f} frames/s",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
