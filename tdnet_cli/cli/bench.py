"""``tdnet bench``: model-only speed (default) or the whole segment pipeline (--input)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tdnet_cli.cli.common import (
    CompileModeOpt,
    CompileOpt,
    DeviceOpt,
    EncoderOpt,
    HwDecodeOpt,
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
from tdnet_cli.errors import UsageError

if TYPE_CHECKING:
    from tdnet_cli.pipeline.bench import BenchReport, BenchResult, LatencyStats


@handle_errors
def bench_command(
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    input_size: InputSizeOpt = None,
    old_size: Annotated[str | None, typer.Option("--size", hidden=True, help="Deprecated: --input-size.")] = None,
    frames: Annotated[int, typer.Option("--frames", help="Measured frames.")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", help="Frames run first and not counted.")] = 5,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.fp32,
    streams: Annotated[int, typer.Option("--streams", "-b", help="Streams batched in lockstep.")] = 1,
    compile: CompileOpt = False,
    compile_mode: CompileModeOpt = "default",
    no_winograd: Annotated[
        bool,
        typer.Option(
            "--no-winograd",
            help="CPU fp32: run the wide 3x3 convs as direct convolutions (for comparison; "
            "Winograd products are the default there).",
        ),
    ] = False,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            metavar="NAME",
            help="Also time a preset (e.g. psp101) or 'reference' (same weights, plain fp32 "
            "path mirroring the authors' code) in the same run, and print the ratio.",
            show_default=False,
        ),
    ] = None,
    reference: Annotated[bool, typer.Option("--reference", help="Time the plain reference path itself.")] = False,
    no_ceiling: Annotated[bool, typer.Option("--no-ceiling", help="Skip timing the heaviest conv alone.")] = False,
    source: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            metavar="VIDEO",
            help="A video: also run the real segment pipeline on it, with a per-stage breakdown "
            "(decode, preprocess, model, postprocess, render, encode) beside the model-only fps.",
            show_default=False,
        ),
    ] = None,
    x264_preset: Annotated[
        str, typer.Option("--x264-preset", metavar="PRESET", help="With --input: the overlay's x264 preset.")
    ] = "veryfast",
    crf: Annotated[int, typer.Option("--crf", help="With --input: the overlay's x264 CRF.")] = 20,
    encoder: EncoderOpt = "x264",
    hw_decode: HwDecodeOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Speed of a model (or of the whole segment pipeline with --input), measured honestly.

    Model-only: latency mean/median/p95/max and fps over steady-state frames, the
    queue-filling frames apart, achieved GFLOP/s against the measured ceiling of the
    model's own heaviest conv, peak memory; --baseline runs a comparison in the same process."""
    # torch: loaded by the command, not by `tdnet --help`
    from tdnet_cli.pipeline.bench import run_bench
    from tdnet_cli.sizes import parse_size
    from tdnet_cli.video import Encoding

    size = _input_size(input_size, old_size, quiet=quiet)
    show = not (as_json or quiet)
    # No bar where stderr is not a terminal: rich would leave a blank line there, before any error line.
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not (show and err_console.is_terminal),
    ) as bar:
        task = bar.add_task("bench", total=None)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(task, description=escape(phase), completed=done, total=total)

        report = run_bench(
            weights=weights,
            model=model,
            size=parse_size(size),
            frames=frames,
            warmup=warmup,
            device=device,
            precision=precision.value,
            streams=streams,
            compile=compile_choice(compile, compile_mode),
            winograd=False if no_winograd else None,
            baseline=baseline,
            ceiling=not no_ceiling,
            reference=reference,
            source=source,
            encoding=Encoding(x264_preset, crf, encoder),
            hw_decode=hw_decode,
            progress=progress,
        )
    if as_json:
        if not quiet:  # on stderr as well: a script that keeps only the figures is told too
            for line in report.warnings:
                warn(line)
        print(json.dumps(report.to_dict(), indent=2))
        return
    if not quiet:
        render(report)


def _row(table: Table, label: str, r: BenchResult) -> None:
    s = r.steady
    path = f"{r.path}{' winograd' if r.winograd else ''}{' compiled' if r.compiled else ''}"
    table.add_row(
        label,
        escape(r.model),
        escape(f"{path} {r.precision}"),
        str(r.streams),
        f"{s.mean_ms:.1f}",
        f"{s.median_ms:.1f}",
        f"{s.p95_ms:.1f}",
        f"{s.max_ms:.1f}",
        f"{r.fps_total:.2f}",
        f"{r.achieved_gflops:.0f}",
    )


def _spread(label: str, s: LatencyStats) -> str:
    """The spread of the timed steps: how far the median can be trusted."""
    return (
        f"{label}spread of the {s.frames} timed steps, ms: min {s.min_ms:.1f}, p10 {s.p10_ms:.1f}, "
        f"median {s.median_ms:.1f}, p90 {s.p90_ms:.1f}, max {s.max_ms:.1f} (max/min {s.max_over_min:.2f})"
    )


def _ceiling_share(r: BenchResult, share: float) -> str:
    """What share of the ceiling the model reaches and, past 100%, why on the same line."""
    text = f"the whole model reaches {share:.0%} of it"
    if share <= 1.0:
        return text
    if r.winograd:
        return text + (
            " (over 100%: its Winograd convolutions do fewer multiplies than the direct-convolution FLOPs counted)"
        )
    return text + (
        " (over 100%: FLOPs are counted as direct convolutions, and the library may run some of the model's "
        "with fewer multiplies; or this one conv's timing was disturbed)"
    )


def _model_only_figure(r: BenchResult, e: dict) -> str:
    """Which of the two model-only figures end to end is compared with, named, with the other beside it."""
    ahead = r.encode_ahead["fps"] if r.encode_ahead and r.streams == 1 else None
    if e["model_only_figure"] == "encode_ahead":
        return (
            f"model-only encode-ahead {e['model_only_fps']:.2f} fps (the faster model-only figure; "
            f"one step at a time: {r.fps_per_stream:.2f} fps)"
        )
    figure = f"model-only one step at a time {e['model_only_fps']:.2f} fps" + (" per stream" if r.streams > 1 else "")
    return figure + (f" (the faster model-only figure; encode-ahead: {ahead:.2f} fps)" if ahead is not None else "")


def _input_size(input_size: str | None, old_size: str | None, *, quiet: bool) -> str | None:
    """--input-size, as every command names it; bench's old --size still works, with a warning."""
    if old_size is None:
        return input_size
    if input_size is not None:
        raise UsageError("--size is the old name of --input-size", hint="pass --input-size alone")
    if not quiet:
        warn("--size is deprecated in bench: use --input-size (as segment, eval and inspect do)")
    return old_size


def render(report: BenchReport) -> None:
    for note in report.notes:
        warn(note)  # the model's notices (demo model, random weights): warnings, as in segment
    env = report.env
    console.print(
        f"[bold]{escape(env['device_name'])}[/] ({escape(env['device'])}), torch {env['torch']}, "
        f"{env['threads']} threads, {env['precision']}, input {env['input_size'][0]}x{env['input_size'][1]}"
    )
    table = Table(title="model-only: ms per step (B streams per step), fps = frames/s over all streams")
    for col in ("", "model", "path", "B", "mean", "median", "p95", "max", "fps", "GFLOP/s"):
        table.add_column(col, justify="left" if col in ("", "model", "path") else "right")
    _row(table, "this", report.result)
    if report.baseline:
        _row(table, "baseline", report.baseline)
    console.print(table)
    for label, row in (("", report.result), ("baseline ", report.baseline)):
        if row is not None:
            console.print(_spread(label, row.steady), highlight=False)
    for line in report.warnings:
        warn(line)
    r = report.result
    if r.streams > 1:
        console.print(f"per stream: {r.fps_per_stream:.2f} fps; total {r.fps_total:.2f} fps over {r.streams} streams")
    if r.filling:
        console.print(
            f"queue filling (first {r.filling.frames} frames, not in the table): "
            f"mean {r.filling.mean_ms:.1f} ms; steady-state median {r.steady.median_ms:.1f} ms"
        )
    if r.encode_ahead:
        a = r.encode_ahead
        console.print(
            f"model-only, encode-ahead (as segment runs it): {a['fps']:.2f} fps, {a['workers']} frames at once "
            f"on {a['threads_per_worker']} thread(s) each"
        )
    console.print(
        f"cost: {r.gflops_per_frame:.1f} GFLOP per frame; peak RSS {r.peak_rss_mb:.0f} MB"
        + (f"; peak CUDA {r.peak_cuda_mb:.0f} MB" if r.peak_cuda_mb is not None else "")
    )
    if report.ceiling:
        c = report.ceiling
        console.print(
            f"ceiling: {c['gflops']:.0f} GFLOP/s on its heaviest conv alone ({escape(str(c['shape']))}, direct); "
            + _ceiling_share(r, r.achieved_gflops / c["gflops"])
        )
        if c.get("layer_gflops"):
            console.print(
                f"  the model runs that layer as Winograd products: {c['layer_gflops']:.0f} GFLOP/s in "
                "direct-convolution FLOPs (fewer multiplies), so the model can pass the ceiling"
            )
    if report.end_to_end:
        e = report.end_to_end
        ms = e["stage_ms_per_frame"]
        alone = ", ".join(f"{k} {ms[k]:.1f}" for k in ("decode", "render", "encode"))
        inside = ", ".join(f"{k} {ms[k]:.1f}" for k in ("preprocess", "model", "postprocess"))
        route = escape(f"{e['encoder']} {e['x264_preset']} crf {e['crf']}{', NVDEC' if e['hw_decode'] else ''}")
        console.print(
            f"end to end ({escape(str(e['input']))}, {e['size'][0]}x{e['size'][1]}, {e['frames']} frames, {route}): "
            f"[bold]{e['fps']:.2f} fps[/] = {e['fraction_of_model_only']:.0%} of {_model_only_figure(r, e)}"
        )
        if e["cpu_ms_per_frame"] is not None:
            cpu = ", ".join(f"{k} {v:.1f}" for k, v in e["cpu_ms_per_frame"].items())
            console.print(
                f"CPU in the pipeline, ms/frame: {cpu}; {e['cpu_outside_model_share']:.0%} of it outside "
                f"the model; {e['cores_busy']:.2f} cores busy"
            )
        console.print(f"stages alone, ms/frame: {alone}; inside the pipeline (wall, summed over threads): {inside}")
    if report.speedup is not None:
        console.print(f"[bold]speed-up vs baseline: {report.speedup:.2f}x[/] (median time per frame)")
