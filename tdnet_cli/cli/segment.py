"""``tdnet segment``: videos, URLs and frame folders in; overlays, colour maps and label PNGs out."""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperCommand

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
    fail,
    handle_errors,
    warn,
)
from tdnet_cli.cli.segment_report import RichProgress, summary
from tdnet_cli.errors import EXIT_USAGE, UsageError, few

if TYPE_CHECKING:
    from tdnet_cli.pipeline import InputSet


class SaveKind(str, Enum):
    overlay = "overlay"
    color = "color"
    labels = "labels"
    labelids = "labelids"


def option_like_file(command: TyperCommand, args: list[str]) -> str | None:
    """The first argument that names an existing file but would be read as an option
    (``-dash.mp4`` is ``-d ash.mp4``), or None. Values of options and what follows ``--``
    are not looked at."""
    names, takes_value = {"--help"}, set()
    for param in command.params:
        if param.param_type_name == "option":  # typer vendors its own click: no isinstance
            names.update(param.opts + param.secondary_opts)
            if not param.is_flag and not param.count:
                takes_value.update(param.opts)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg in takes_value:
            i += 2
            continue
        if arg.startswith("-") and arg != "-" and arg.split("=", 1)[0] not in names and os.path.lexists(arg):
            return arg
        i += 1
    return None


class SegmentCommand(TyperCommand):
    """Says how to pass an input whose name starts with '-' before click reads it as options."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        arg = option_like_file(self, args)
        if arg is not None:
            glued = arg[:2]
            names = {n for p in self.params if p.param_type_name == "option" for n in p.opts}
            how = (
                f"reads as the option {glued} {arg[2:]}"
                if glued in names and not arg.startswith("--")
                else "looks like an option"
            )
            fail(
                f"{arg} names a file but {how}: pass it as ./{arg}, or after -- (tdnet segment [OPTIONS] -- {arg})",
                EXIT_USAGE,
            )
            ctx.exit(EXIT_USAGE)
        return super().parse_args(ctx, args)


@handle_errors
def segment_command(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="INPUT",
            help="Video files (any container/codec ffmpeg reads), anything ffmpeg opens as a URL "
            "(rtsp://, http(s)://, ...), folders of frames (png/jpg, natural order), image files or globs. "
            "The image files of one folder (however named: a glob, a list, one by one) are ONE sequence, "
            "read in natural order with the model's memory carried from each to the next, and each gets "
            "its own outputs (a.png -> a.overlay.png, a.labels.png, ...); --each makes every image its own "
            "input. '-' is a video arriving on stdin (any container ffmpeg reads from a pipe: "
            "mpegts, matroska, nut, mp4 redirected from a file); /dev/videoN is a V4L2 camera; tcp://, udp://, "
            "rtsp://, rtmp://, srt:// streams are read once, as they come, with no bar (frames, fps and time "
            "instead). Input paths on stdin, one per line: --list -.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="Output of a single input (the first --save kind; others beside it). '-' streams the one "
            "--save kind to stdout (overlay or color: MPEG-TS, or --format matroska; labels: --format rawvideo), "
            "and nothing else goes there (messages on stderr; --json is refused); a udp://, tcp://, srt://, "
            "rtmp:// or rtsp:// URL streams to it through ffmpeg (no temporary name, no overwrite check: a "
            "stream is no file).",
            show_default=False,
        ),
    ] = None,
    stream_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="Container of a stream output (-o - or -o URL): mpegts (default; flv for rtmp://, rtsp for "
            "rtsp://), matroska (mkv), nut, flv; rawvideo sends label frames (--save labels or labelids) to "
            "stdout as 8-bit gray bytes, W*H per frame, in frame order.",
            show_default=False,
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir",
            "-d",
            metavar="DIR",
            help="Folder for all outputs (default: beside each input).",
            show_default=False,
        ),
    ] = None,
    save: Annotated[
        list[SaveKind],
        typer.Option(
            "--save",
            "-s",
            metavar="KIND",
            help="What to write (repeatable): overlay = H.264 mp4 of the frames blended "
            "with the class colours (input's fps, size and audio); color = the colour map (a lossless "
            "RGB H.264 mp4, so every pixel is a class colour; PNGs for a folder); labels = train-id PNGs "
            "(0..18, 255 ignore); labelids = Cityscapes label-id PNGs, the format the official evaluation "
            "reads. Image inputs get one PNG of each per image.",
        ),
    ] = [SaveKind.overlay],  # noqa: B006 - typer needs a literal default
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Colour weight in the overlay.")] = 0.5,
    legend: Annotated[
        bool,
        typer.Option(
            "--legend/--no-legend",
            help="Name the classes present in a box in the overlay's corner (--no-legend: the bare overlay).",
        ),
    ] = True,
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.fp32,
    input_size: InputSizeOpt = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace existing outputs. A PNG folder is replaced only if tdnet wrote "
            "everything in it (its hidden .tdnet-output.json lists each file); one holding anything "
            "else, or written by a tdnet before that list existed, is refused: see --into-folder. An "
            "input is never written over.",
        ),
    ] = False,
    into_folder: Annotated[
        bool,
        typer.Option(
            "--into-folder",
            help="Write PNG outputs into existing folders: PNGs of the same name are "
            "replaced, every other file and folder in them is left alone.",
        ),
    ] = False,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Leave existing outputs alone and write only the missing ones.")
    ] = False,
    each: Annotated[
        bool,
        typer.Option(
            "--each",
            help="Segment every image file on its own, with a fresh memory (unrelated photos), "
            "instead of the images of a folder as one sequence (frames of a video).",
        ),
    ] = False,
    cut_detect: Annotated[
        bool, typer.Option("--cut-detect/--no-cut-detect", help="Reset the model's memory at hard scene cuts.")
    ] = True,
    list_file: Annotated[
        str | None,
        typer.Option(
            "--list",
            metavar="FILE",
            help="Read input paths from FILE (one per line; '-' for stdin: a bare '-' input is a video on stdin).",
            show_default=False,
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            metavar="I/N",
            help="Take share I of N of the inputs (I/N, 0-based; inputs I, I+N, ...). Under "
            "torchrun RANK/WORLD_SIZE do this and each worker uses cuda:LOCAL_RANK.",
            show_default=False,
        ),
    ] = None,
    fps: Annotated[
        float | None,
        typer.Option("--fps", help="Frame rate of videos made from frame folders (default: 17).", show_default=False),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="Torch CPU threads in all (default: time all cores against three quarters "
            "(1 of 2) on the first input and keep the faster). A TDNet on the CPU runs two "
            "frames at once, each on half of them.",
            show_default=False,
        ),
    ] = None,
    x264_preset: Annotated[
        str,
        typer.Option(
            "--x264-preset",
            metavar="PRESET",
            help="Encoding speed of video outputs: ultrafast, superfast, veryfast, "
            "faster, fast, medium, slow, slower, veryslow (faster = bigger files, less CPU).",
        ),
    ] = "veryfast",
    crf: Annotated[int, typer.Option("--crf", help="Video output quality, 0-51 (lower = better, bigger).")] = 20,
    encoder: EncoderOpt = "x264",
    hw_decode: HwDecodeOpt = False,
    consistency: Annotated[
        bool,
        typer.Option(
            "--consistency",
            help="Also score the temporal consistency of the labels written: TC (the mIoU between each "
            "frame's labels and the next frame's warped back by optical flow; OpenCV DIS 'ultrafast', "
            "long side 512 px) and the flicker rate, per input and overall (see `tdnet eval --consistency`).",
        ),
    ] = False,
    realtime: Annotated[
        bool | None,
        typer.Option(
            "--realtime/--no-realtime",
            help="Keep up with the source: at most 2 frames queued, and a frame the model has no time for is "
            "dropped at the reader (TDNet's memory ages by the frames processed); the dropped frames and the "
            "latency from capture to write (p50/p95) are shown and in --json. Default: on for cameras and "
            "streams (/dev/videoN, tcp/udp/rtsp/rtmp/srt), off for files and '-' (a pipe waits for tdnet); a "
            "file with --realtime arrives at its own frame rate, as from a camera. With --no-realtime no frame "
            "is ever dropped.",
            show_default=False,
        ),
    ] = None,
    reconnect: Annotated[
        int,
        typer.Option(
            "--reconnect",
            metavar="N",
            min=0,
            help="When a camera or stream ends, open it again: up to N tries (0.2 s apart, doubling to 2 s), "
            "each time it ends; the model's memory is reset at the first frame after, as at a scene cut, and "
            "the outputs go on. 0: end with the stream.",
        ),
    ] = 0,
    compile: CompileOpt = False,
    compile_mode: CompileModeOpt = "default",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Segment videos, frame folders or images: overlay video, colour maps, label PNGs.

    Each video, URL or folder is its own stream; its outputs are named after it
    (NAME.overlay.mp4, NAME.color.mp4, NAME.labels/, NAME.labelids/). Image files are read as
    one sequence per folder, in natural order (one stream: TDNet's memory carries from each
    image to the next; a scene cut or a change of size resets it), unless --each; an image gets
    images out under its own name, beside it or under --out-dir (a.png -> a.overlay.png,
    a.color.png, a.labels.png, a.labelids.png). Outputs are written under a temporary name
    until complete. A bad input is reported and skipped; the exit code is 1 if any input failed.
    """
    # torch and the pipeline load here, when the command runs, not for `tdnet --help`
    from tdnet_cli.inference import Predictor
    from tdnet_cli.pipeline import (
        SegmentOptions,
        SegmentReport,
        device_for_rank,
        segment,
    )
    from tdnet_cli.sizes import parse_size
    from tdnet_cli.video import Encoding
    from tdnet_cli.video.stream_writer import is_stream_target

    if output is not None and out_dir is not None:
        raise UsageError(
            "-o/--output and -d/--out-dir exclude each other: -o names one input's output, -d the folder of all",
            hint="drop one of them",
        )
    stream = output if output is not None and is_stream_target(output) else None
    _check_stdout(stream, as_json=as_json)
    inputs = _gather(inputs or [], list_file, shard, each=each, quiet=quiet or as_json)
    # bad or contradicting options are refused here, before the model loads
    options = SegmentOptions(
        save=tuple(s.value for s in save), out_dir=out_dir, output=None if stream or output is None else Path(output),
        stream=stream, stream_format=stream_format, realtime=realtime, reconnect=reconnect, alpha=alpha, legend=legend,
        overwrite=overwrite, skip_existing=skip_existing, into_folder=into_folder, cut_detect=cut_detect,
        fps=fps, threads=threads, encoding=Encoding(x264_preset, crf, encoder), hw_decode=hw_decode,
        consistency=consistency, each_image=each,
    )  # fmt: skip
    if not inputs.specs:
        if as_json:
            print(json.dumps(SegmentReport(shard=inputs.shard).to_dict()))
        elif not quiet:
            why = "this shard got no inputs" if inputs.shard else "no inputs left"
            err_console.print(f"nothing to do: {why}", highlight=False)
        return

    predictor = Predictor.create(
        weights=weights,
        model=model,
        device=device_for_rank(device),
        precision=precision.value,
        input_size=parse_size(input_size),
        compile=compile_choice(compile, compile_mode),
    )
    hook = RichProgress(show_bars=not quiet and err_console.is_terminal, quiet=quiet)
    for note in predictor.notes:
        hook.warn(note)
    with hook:
        report = segment(inputs, predictor=predictor, options=options, progress=hook)
    if as_json:
        print(json.dumps(report.to_dict()))
    elif not quiet:
        shown = err_console if stream == "-" else console  # stdout carries the stream
        summary(report.results, report.seconds, shown)
        if report.consistency is not None:
            tc, flicker = report.consistency["tc"], report.consistency["flicker"]
            shown.print(
                f"temporal consistency: TC {'-' if tc is None else f'{100 * tc:.2f}'}, flicker "
                f"{'-' if flicker is None else f'{100 * flicker:.2f} %'} over {report.consistency['pairs']} frame pairs",
                highlight=False,
            )
    if report.failures:
        raise typer.Exit(1)


def _check_stdout(stream: str | None, *, as_json: bool) -> None:
    """With ``-o -`` stdout carries the video: refuse what would mix other bytes into it (--json)
    or send video to a terminal."""
    from tdnet_cli.video.stdio import stdout_is_terminal  # video IO loads cv2: not for --help

    if stream != "-":
        return
    if as_json:
        raise UsageError("--json prints on stdout, which -o - fills with the stream", hint="drop --json, or -o a file")
    if stdout_is_terminal():
        raise UsageError(
            "-o - writes video to stdout, which is a terminal", hint="redirect it: > out.ts, or | player -"
        )


def _gather(items: list[str], list_file: str | None, shard: str | None, *, each: bool, quiet: bool) -> InputSet:
    """The command's inputs: arguments and ``--list`` (``--list -``: paths on stdin), expanded,
    images grouped (one sequence per folder, or each its own with ``each``) and sharded
    (``--shard``, else torchrun's RANK/WORLD_SIZE) once. A bare ``-`` is a video on stdin."""
    from tdnet_cli.pipeline import gather_inputs, read_list, resolve_shard
    from tdnet_cli.pipeline.inputs import check_matched

    items = list(items)
    if list_file == "-" and "-" in items:
        raise UsageError(
            "stdin can carry the input list (--list -) or a video (-), not both", hint="put the list in a file"
        )
    if list_file:
        items.extend(read_list(list_file))
    if not items:
        raise UsageError("no inputs", hint="pass videos, folders, images, URLs or globs, or --list FILE")
    inputs = gather_inputs(items, shard=resolve_shard(shard), images="each" if each else "sequence")
    check_matched(inputs)  # a mistyped pattern is the first thing to say about it
    if inputs.skipped and not quiet:
        warn(
            f"left out {len(inputs.skipped)} of tdnet's own outputs that the patterns matched "
            f"({few(list(inputs.skipped))}); name them one by one to segment them"
        )
    return inputs
