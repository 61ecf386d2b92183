"""``tdnet eval``: Cityscapes mIoU / iIoU equal to the official evaluation's."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tdnet_cli.cli.common import (
    CompileModeOpt,
    CompileOpt,
    DeviceOpt,
    InputSizeOpt,
    ModelOpt,
    Precision,
    PrecisionOpt,
    QuietOpt,
    WeightsOpt,
    compile_choice,
    console,
    err_console,
    handle_errors,
    warn,
)
from tdnet_cli.errors import TdnetError, WriteError

if TYPE_CHECKING:
    from tdnet_cli.pipeline.evaluate import EvalReport


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


@handle_errors
def eval_command(
    root: Annotated[
        Path, typer.Argument(help="Cityscapes-layout folder (gtFine/, leftImg8bit_sequence/ or leftImg8bit/).")
    ],
    split: Annotated[str, typer.Option("--split", help="train, val or test.")] = "val",
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.fp32,
    input_size: InputSizeOpt = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Extra frames fed before the N-1 the memory needs.")] = 0,
    no_sequence: Annotated[
        bool,
        typer.Option(
            "--no-sequence",
            help="Repeat the annotated frame as its own history instead of reading leftImg8bit_sequence.",
        ),
    ] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N annotated frames.")] = None,
    cities: Annotated[
        str | None, typer.Option("--cities", help="Comma-separated cities, e.g. frankfurt,lindau.")
    ] = None,
    flip: Annotated[bool, typer.Option("--flip", help="Average with the horizontally flipped stream.")] = False,
    save_predictions: Annotated[
        Path | None,
        typer.Option(
            "--save-predictions", help="Write label-id PNGs that cityscapesscripts reads.", show_default=False
        ),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Write every figure to this JSON file ('-' for stdout).", show_default=False),
    ] = None,
    skip_missing: Annotated[
        bool, typer.Option("--skip-missing", help="Skip frames without images; report them.")
    ] = False,
    no_propagation: Annotated[
        bool,
        typer.Option(
            "--no-propagation", help="TDNet ablation: score each frame's own sub-features, without the memory."
        ),
    ] = False,
    all_paths: Annotated[
        bool,
        typer.Option(
            "--all-paths",
            help="TDNet: score each annotated frame once per path, as a video runs them all (N x the work).",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing --json/--save-predictions output.")
    ] = False,
    compile: CompileOpt = False,
    compile_mode: CompileModeOpt = "default",
    quiet: QuietOpt = False,
) -> None:
    """Cityscapes mIoU / iIoU / pixel accuracy with TDNet's temporal protocol.

    Each annotated frame is predicted by a fresh stream after the frames before it, at full
    ground-truth resolution; the numbers equal the official cityscapesscripts evaluation.
    --json and --save-predictions never replace a file without --overwrite, and never an input."""
    from tdnet_cli.inference import Predictor  # torch: loaded by the command, not by --help
    from tdnet_cli.pipeline.evaluate import check_options, check_outputs, evaluate
    from tdnet_cli.sizes import parse_size

    # Options and outputs are checked before the model loads: a refusal costs nothing, creates nothing.
    city_list = check_options(
        split=split,
        warmup=warmup,
        limit=limit,
        cities=[c.strip() for c in cities.split(",") if c.strip()] if cities is not None else None,
    )
    check_outputs(root, json_path=json_out, save_predictions=save_predictions, weights=weights, overwrite=overwrite)
    predictor = Predictor.create(
        weights=weights,
        model=model,
        device=device,
        precision=precision.value,
        input_size=parse_size(input_size),
        compile=compile_choice(compile, compile_mode),
    )
    show = not quiet and str(json_out) != "-"
    # No bar where stderr is not a terminal: rich would leave a blank line there, before any error line.
    with Progress(
        TextColumn("eval"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("mIoU {task.fields[miou]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not (show and err_console.is_terminal),
    ) as bar:
        task = bar.add_task("eval", total=None, miou="-")

        def progress(done: int, total: int, miou: float) -> None:
            bar.update(task, completed=done, total=total, miou=_pct(miou))

        report = evaluate(
            root,
            predictor=predictor,
            split=split,
            warmup=warmup,
            use_sequence=False if no_sequence else None,
            cities=city_list,
            limit=limit,
            flip=flip,
            save_predictions=save_predictions,
            overwrite=overwrite,
            skip_missing=skip_missing,
            propagation=not no_propagation,
            all_paths=all_paths,
            progress=progress,
            warn=None if quiet else warn,
        )
    if show:
        render(report)  # before the JSON file: a failure to write it loses no figure
    if json_out is not None:
        text = json.dumps(report.to_dict(), indent=2)
        if str(json_out) == "-":
            print(text)
        else:
            _write_json(json_out, text)


def _write_json(path: Path, text: str) -> None:
    """Write the results atomically; if that fails, print them on stdout so the work is not lost."""
    from tdnet_cli.fileio import write_text

    try:
        write_text(path, text + "\n")
    except (OSError, TdnetError) as exc:
        print(text)
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        reason = "the disk is full" if full else getattr(exc, "strerror", None) or str(exc)
        raise WriteError(
            f"could not write --json {path}: {reason}", hint="the results are printed on stdout above"
        ) from None


def render(report: EvalReport) -> None:
    for note in report.notes:
        if note not in report.warnings:  # those were printed as warning lines already
            err_console.print(f"[dim]note: {escape(note)}[/]", soft_wrap=True)
    s = report.scores
    table = Table(title=escape(f"{report.model} on {report.evaluated} frames"))
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("iIoU", justify="right")
    for name, iou in zip(s.classes, s.iou):
        table.add_row(name, _pct(iou), _pct(s.iiou.get(name)) if s.iiou and name in s.iiou else "")
    console.print(table)
    proto = (
        f"{report.frames_per_sample} frames per sample from leftImg8bit_sequence"
        if report.protocol == "sequence"
        else f"annotated frame repeated {report.frames_per_sample} times (no sequence)"
    )
    extra = (
        (", flip" if report.flip else "")
        + ("" if report.propagation else ", no propagation")
        + (f", each frame scored on all {report.paths_scored} paths" if report.paths_scored > 1 else "")
    )
    console.print(
        f"[bold]mIoU {_pct(s.miou)}[/]  iIoU {_pct(s.miiou)}  pixel acc {_pct(s.pixel_accuracy)}  "
        f"({proto}{extra}; {report.fps:.2f} frames/s)"
    )
    if report.path_miou:
        console.print("mIoU by path: " + " / ".join(_pct(m) for m in report.path_miou))
    if report.skipped:
        err_console.print(
            escape(
                f"skipped {len(report.skipped)}: "
                + ", ".join(f"{f} ({r})" for f, r in report.skipped[:3])
                + (" ..." if len(report.skipped) > 3 else "")
            ),
            soft_wrap=True,
        )
    if report.predictions_dir:
        console.print(f"predictions: {escape(report.predictions_dir)}", soft_wrap=True)
