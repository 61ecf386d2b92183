"""``tdnet eval``: Cityscapes mIoU / iIoU equal to the official evaluation's."""

from __future__ import annotations

import errno
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from tdnet_cli.cli.common import (
    CompileModeOpt,
    CompileOpt,
    DeviceOpt,
    InputSizeOpt,
    JsonOpt,
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
from tdnet_cli.errors import TdnetError, UsageError, WriteError, few

if TYPE_CHECKING:
    from tdnet_cli.inference import Predictor
    from tdnet_cli.pipeline.consistency_eval import ConsistencyReport
    from tdnet_cli.pipeline.evaluate import EvalReport


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


@handle_errors
def eval_command(
    ctx: typer.Context,
    root: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ROOT | INPUT",
            help="Cityscapes-layout folder (gtFine/, leftImg8bit_sequence/ or leftImg8bit/); with --consistency, "
            "the footage to score: video files, URLs, folders of frames or globs, as `tdnet segment` reads them.",
            show_default=False,
        ),
    ] = None,
    split: Annotated[str, typer.Option("--split", metavar="SPLIT", help="train, val or test.")] = "val",
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
        str | None, typer.Option("--cities", metavar="CITY,...", help="Comma-separated cities, e.g. frankfurt,lindau.")
    ] = None,
    flip: Annotated[bool, typer.Option("--flip", help="Average with the horizontally flipped stream.")] = False,
    save_predictions: Annotated[
        Path | None,
        typer.Option(
            "--save-predictions",
            metavar="DIR",
            help="Write label-id PNGs that cityscapesscripts reads.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    json_file: Annotated[
        Path | None,
        typer.Option(
            "--json-file",
            metavar="FILE",
            help="Write every figure to this JSON file (checked before the work starts; see --overwrite).",
            show_default=False,
        ),
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
        bool, typer.Option("--overwrite", help="Replace existing --json-file/--save-predictions output.")
    ] = False,
    no_tc: Annotated[
        bool,
        typer.Option(
            "--no-tc",
            help="eval ROOT: skip the temporal consistency (TC) of the predictions over each sample's frames, "
            "scored by default beside mIoU (OpenCV DIS 'ultrafast' flow at 512 px, in the reading thread).",
        ),
    ] = False,
    consistency: Annotated[
        bool,
        typer.Option(
            "--consistency",
            help="Score the temporal consistency of the model's labels on INPUT... (no labels needed): TC, the "
            "mIoU between each frame's labels and the next frame's warped back by optical flow, per class and "
            "overall, and the flicker rate (share of compared pixels whose label changes), per input and over all. "
            "Flow: OpenCV DIS, preset 'ultrafast', on frames shrunk to 512 px on the long side.",
        ),
    ] = False,
    compare_per_frame: Annotated[
        bool,
        typer.Option(
            "--compare-per-frame",
            help="With --consistency: score the model with and without TDNet's memory (--no-propagation) side by "
            "side, in one run, to show what the memory buys.",
        ),
    ] = False,
    compile: CompileOpt = False,
    compile_mode: CompileModeOpt = "default",
    quiet: QuietOpt = False,
) -> None:
    """Cityscapes mIoU / iIoU / pixel accuracy with TDNet's temporal protocol, or (--consistency)
    the temporal consistency of the labels on any footage.

    Each annotated frame is predicted by a fresh stream after the frames before it, at full
    ground-truth resolution; the numbers equal the official cityscapesscripts evaluation.
    With --consistency each INPUT is a stream of its own, scored pair by pair (a hard scene cut
    restarts the model's memory and the pairs).
    --json-file and --save-predictions never replace a file without --overwrite, and never an input."""
    _refuse_json_value(root or [], as_json=as_json, json_file=json_file)
    load = functools.partial(
        _predictor, weights=weights, model=model, device=device, precision=precision, input_size=input_size,
        compile=compile, compile_mode=compile_mode,
    )  # fmt: skip
    if consistency or compare_per_frame:
        _refuse_dataset_options(
            consistency=consistency, compare_per_frame=compare_per_frame, no_propagation=no_propagation,
            split=split != "val", warmup=warmup != 0, no_sequence=no_sequence, limit=limit is not None,
            cities=cities is not None, flip=flip, save_predictions=save_predictions is not None,
            skip_missing=skip_missing, all_paths=all_paths, no_tc=no_tc,
        )  # fmt: skip
        _consistency(
            root or [], compare=compare_per_frame, propagation=not no_propagation, load=load, as_json=as_json,
            json_file=json_file, weights=weights, overwrite=overwrite, quiet=quiet,
        )  # fmt: skip
        return
    from tdnet_cli.pipeline.evaluate import check_options, check_outputs, evaluate  # torch: not for --help

    root_dir = _one_root(ctx, root, as_json=as_json)
    # Options and outputs are checked before the model loads: a refusal costs nothing, creates nothing.
    city_list = check_options(
        split=split,
        warmup=warmup,
        limit=limit,
        cities=[c.strip() for c in cities.split(",") if c.strip()] if cities is not None else None,
    )
    check_outputs(
        root_dir, json_path=json_file, save_predictions=save_predictions, weights=weights, overwrite=overwrite
    )
    predictor = load()
    show = not (quiet or as_json)  # with --json, stdout holds the JSON document alone
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
            root_dir,
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
            consistency=not no_tc,
            progress=progress,
            warn=None if quiet else warn,
        )
    if show:
        render(report)  # before the JSON file: a failure to write it loses no figure
    elif not quiet:
        _warn_notes(report)
    _emit_json(report.to_dict(), stdout=as_json, path=json_file)


def _refuse_json_value(items: list[str], *, as_json: bool, json_file: Path | None) -> None:
    """eval's --json used to take a file name; it is now the flag every command has, so an old
    `--json FILE` leaves FILE among the inputs. Say so, rather than read it as a dataset or a video."""
    if json_file is not None and str(json_file) == "-":
        raise UsageError("--json-file names a file; '-' is not one", hint="pass --json to print the JSON on stdout")
    if not as_json:
        return
    stray = next((i for i in items if i == "-" or i.lower().endswith(".json")), None)
    if stray == "-":
        raise UsageError("--json takes no value: it prints the JSON on stdout", hint="drop the '-' after --json")
    if stray is not None:
        raise UsageError(
            f"--json takes no file name, so {stray} was read as an input",
            hint=f"to write the figures to a file, pass --json-file {stray}",
        )


def _one_root(ctx: typer.Context, items: list[str] | None, *, as_json: bool) -> Path:
    """The dataset folder of ``eval ROOT``: exactly one (several are footage for --consistency)."""
    if not items:
        try:  # typer >= 0.22 carries its own copy of click (as in app.py)
            from typer._click.exceptions import MissingParameter
        except ImportError:
            from click.exceptions import MissingParameter
        param = next(p for p in ctx.command.params if p.name == "root")
        raise MissingParameter(ctx=ctx, param=param)
    if len(items) > 1:
        hint = (
            "--json takes no value; to write the figures to a file, pass --json-file FILE"
            if as_json
            else "to score footage without labels, pass --consistency"
        )
        raise UsageError(f"eval takes one dataset folder, got {len(items)}: {few(items)}", hint=hint)
    return Path(items[0])


def _predictor(
    *,
    weights: str | None,
    model: str | None,
    device: str,
    precision: Precision,
    input_size: str | None,
    compile: bool,
    compile_mode: str,
) -> Predictor:
    """The model the options name (loaded after every option and output is checked)."""
    from tdnet_cli.inference import Predictor  # torch: loaded by the command, not by --help
    from tdnet_cli.sizes import parse_size

    return Predictor.create(
        weights=weights,
        model=model,
        device=device,
        precision=precision.value,
        input_size=parse_size(input_size),
        compile=compile_choice(compile, compile_mode),
    )


def _emit_json(data: dict, *, stdout: bool, path: Path | None) -> None:
    """--json prints the figures on stdout, then --json-file writes them (see _write_json)."""
    if not stdout and path is None:
        return
    text = json.dumps(data, indent=2)
    if stdout:
        print(text)
    if path is not None:
        _write_json(path, text, printed=stdout)


def _write_json(path: Path, text: str, *, printed: bool) -> None:
    """Write the results atomically; if that fails, print them on stdout (unless --json already
    did) so the work is not lost."""
    from tdnet_cli.fileio import write_text

    try:
        write_text(path, text + "\n")
    except (OSError, TdnetError) as exc:
        if not printed:
            print(text)
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        reason = "the disk is full" if full else getattr(exc, "strerror", None) or str(exc)
        raise WriteError(
            f"could not write --json-file {path}: {reason}", hint="the results are printed on stdout above"
        ) from None


def _warn_notes(report: EvalReport | ConsistencyReport) -> None:
    """The model's notices (demo model, random weights) as warning lines on stderr, as in segment;
    those already printed as warnings during the run are not repeated."""
    for note in report.notes:
        if note not in report.warnings:
            warn(note)


def render(report: EvalReport) -> None:
    _warn_notes(report)
    s, tc = report.scores, report.consistency
    table = Table(title=escape(f"{report.model} on {report.evaluated} frames"))
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("iIoU", justify="right")
    if tc is not None:
        table.add_column("TC", justify="right")
    for name, iou in zip(s.classes, s.iou):
        row = [name, _pct(iou), _pct(s.iiou.get(name)) if s.iiou and name in s.iiou else ""]
        table.add_row(*row, *([_pct(tc["per_class"].get(name))] if tc is not None else []))
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
    if tc is not None:
        flow = tc["flow"]
        console.print(
            f"[bold]TC {_pct(tc['tc'])}[/]  flicker {_pct(tc['flicker'])}  (over {tc['pairs']} pairs of consecutive "
            f"predicted frames; flow: OpenCV DIS {flow['preset']}, long side {flow['work_size']} px)",
            soft_wrap=True,
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


# -- eval --consistency ------------------------------------------------------------------------

_DATASET_OPTIONS = {
    "split": "--split",
    "warmup": "--warmup",
    "no_sequence": "--no-sequence",
    "limit": "--limit",
    "cities": "--cities",
    "flip": "--flip",
    "save_predictions": "--save-predictions",
    "skip_missing": "--skip-missing",
    "all_paths": "--all-paths",
    "no_tc": "--no-tc",
}
_MODE_NAMES = {"propagation": "with memory", "per_frame": "per frame"}


def _refuse_dataset_options(*, consistency: bool, compare_per_frame: bool, no_propagation: bool, **given: bool) -> None:
    """--consistency scores footage, not a dataset: refuse the options of a dataset's evaluation
    (``given``: option -> whether it was set) and contradicting ones, before anything loads."""
    if not consistency:
        raise UsageError("--compare-per-frame applies to --consistency", hint="add --consistency INPUT...")
    if no_propagation and compare_per_frame:
        raise UsageError("--compare-per-frame runs with and without propagation", hint="drop --no-propagation")
    used = [_DATASET_OPTIONS[name] for name, on in given.items() if on]
    if used:
        verb, it = ("applies", "it") if len(used) == 1 else ("apply", "them")
        raise UsageError(f"{few(used)} {verb} to eval ROOT, not to --consistency", hint=f"drop {it}")


def _consistency(
    items: list[str],
    *,
    compare: bool,
    propagation: bool,
    load: Callable[[], Predictor],
    as_json: bool,
    json_file: Path | None,
    weights: str | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """`eval --consistency INPUT...`: inputs and --json-file checked, then the model loaded and run with
    TDNet's memory (``propagation``), without, or both (``compare``)."""
    from tdnet_cli.pipeline import gather_inputs
    from tdnet_cli.pipeline.consistency_eval import check_inputs, check_json, consistency_eval

    inputs = gather_inputs(items, images="sequence")  # globs, repeats and images as `segment` reads them
    check_inputs(inputs.specs)
    if json_file is not None:
        check_json(json_file, inputs.specs, weights=weights, overwrite=overwrite)
    predictor = load()
    modes = ("propagation", "per_frame") if compare else ("propagation",) if propagation else ("per_frame",)
    show = not (quiet or as_json)
    with _InputBars(enabled=show and err_console.is_terminal) as bars:
        report = consistency_eval(
            inputs, predictor=predictor, modes=modes, progress=bars.update,
            warn=None if quiet else warn,
        )  # fmt: skip
    if show:
        render_consistency(report)  # before the JSON file: a failure to write it loses no figure
    elif not quiet:
        _warn_notes(report)
    _emit_json(report.to_dict(), stdout=as_json, path=json_file)


class _InputBars:
    """One transient bar per input on stderr, fed by consistency_eval's progress callback."""

    def __init__(self, *, enabled: bool) -> None:
        # No bar where stderr is not a terminal: rich would leave a blank line there, before any error line.
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            disable=not enabled,
        )
        self.tasks: dict[int, TaskID] = {}

    def __enter__(self) -> _InputBars:
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def update(self, spec: str, index: int, count: int, done: int, total: int | None) -> None:
        task = self.tasks.get(index)
        if task is None:
            label = spec if len(spec) <= 40 else "..." + spec[-37:]
            prefix = f"[{index + 1}/{count}] " if count > 1 else ""
            task = self.tasks[index] = self.bars.add_task(f"{prefix}{escape(label)}", total=total)
        if total is not None and done > total:  # a video's frame count is an estimate
            total = done
        self.bars.update(task, completed=done, total=total)


def render_consistency(report: ConsistencyReport) -> None:
    """The figures of ``eval --consistency`` as tables: per input (and over all), then per class."""
    _warn_notes(report)
    modes, overall = report.modes, report.overall()
    tag = {m: f" ({_MODE_NAMES[m]})" if len(modes) > 1 else "" for m in modes}
    title = f"temporal consistency of {report.model}" + ("" if "propagation" in modes else ", no propagation")
    table = Table(title=escape(title))
    table.add_column("input")
    table.add_column("frames", justify="right")
    table.add_column("pairs", justify="right")
    for m in modes:
        table.add_column(f"TC{tag[m]}", justify="right")
        table.add_column(f"flicker{tag[m]}", justify="right")
    rows = [(i.input, i.frames, i.results) for i in report.inputs]
    if len(rows) > 1:
        rows.append(("[bold]all[/]", report.frames, overall))
    for name, frames, results in rows:
        first = results[modes[0]]
        cells = [x for m in modes for x in (_pct(results[m].tc), _pct(results[m].flicker))]
        table.add_row(name if name.startswith("[bold]") else escape(name), str(frames), str(first.pairs), *cells)
    console.print(table)
    per_class = Table(title="TC per class (all inputs)")
    per_class.add_column("class")
    for m in modes:
        per_class.add_column(f"TC{tag[m]}", justify="right")
    for c, name in enumerate(report.classes):
        values = [overall[m].per_class[c] for m in modes]
        if not all(math.isnan(v) for v in values):  # classes seen in no frame are left out
            per_class.add_row(escape(name), *(_pct(v) for v in values))
    console.print(per_class)
    gain = ""
    if len(modes) > 1:
        diff = overall["propagation"].tc - overall["per_frame"].tc
        gain = "" if math.isnan(diff) else f"; TDNet's memory changes TC by {100 * diff:+.2f} points"
    console.print(
        f"[bold]TC {_pct(overall[modes[0]].tc)}[/]  flicker {_pct(overall[modes[0]].flicker)}{tag[modes[0]]}  "
        f"(flow: OpenCV DIS {report.preset}, long side {report.work_size} px; {report.fps:.2f} frames/s{gain})",
        soft_wrap=True,
    )
