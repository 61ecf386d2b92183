"""The `segment` pipeline: inputs (videos, URLs, frame folders, images) -> overlays, colour
maps, label PNGs.

The orchestration only: check the whole run up front (:mod:`~tdnet_cli.pipeline.inputs`),
then per input open the source and the writers and run the stream
(:mod:`~tdnet_cli.pipeline.stream`: reader, model and writer threads overlap so the
end-to-end rate approaches the model's own). Each input is its own stream (fresh
predictor state); the image files of one folder are one input, a sequence, unless
``each_image``. A bad input is recorded as failed and the batch goes on. This module is
core code: progress is reported through a :class:`ProgressHook`, never printed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import torch

from tdnet_cli.consistency import ConsistencyMeter, merge
from tdnet_cli.errors import InputError, TdnetError, few, os_error_line
from tdnet_cli.pipeline.inputs import (
    ImageSequence,
    InputSet,
    Spec,
    check_outputs,
    claim_outputs,
    gather_inputs,
    is_video_output,
)
from tdnet_cli.pipeline.options import SegmentOptions
from tdnet_cli.pipeline.results import (
    InputResult,
    ProgressHook,
    SegmentReport,
    SilentProgress,
)
from tdnet_cli.pipeline.stream import (
    AHEAD_WORKERS,
    Realtime,
    StreamPredictor,
    StreamStats,
    ThreadTuner,
    model_gpu,
    run_stream,
    spare_workers,
)
from tdnet_cli.render import ConsistencyTap, Renderer
from tdnet_cli.video import (
    DEFAULT_FOLDER_FPS,
    CutDetector,
    Encoding,
    FrameSource,
    ImageSequenceReader,
    PngFilesWriter,
    PngSequenceWriter,
    SourceInfo,
    VideoWriter,
    is_live,
    is_stdin,
    open_source,
)
from tdnet_cli.video.hw import hardware_video
from tdnet_cli.video.reconnect import ReconnectingSource
from tdnet_cli.video.stream_writer import RawFrameWriter, StreamWriter, stream_format

__all__ = ["segment"]

# What fails one input and lets the batch go on: our own errors (a bad input, an output that
# exists, a full disk), the system's (IO), and a GPU out of memory on one large input.
# Anything else is a bug and propagates.
INPUT_FAILURES: tuple[type[BaseException], ...] = (TdnetError, OSError, torch.OutOfMemoryError)


class _Threads:
    """torch's CPU thread count over a run: given, or measured on the first long input by a
    :class:`ThreadTuner` and kept for the rest; restored at the end."""

    def __init__(self, predictor: StreamPredictor, threads: int | None) -> None:
        self.on_cpu = predictor.device.type == "cpu"
        # Encoding ahead runs AHEAD_WORKERS frames at once: the model's threads are shared out
        # between them, so `threads` (and the tuner's counts) are per frame in flight.
        self.workers = AHEAD_WORKERS if self.on_cpu and predictor.encodes_ahead else 1
        self.paths = max(1, predictor.num_paths)
        self.before = torch.get_num_threads()
        self.budget = max(1, (threads if threads is not None else self.before) // self.workers)
        self.chosen: int | None = None
        if self.on_cpu and (threads is not None or self.budget == 1):
            self.chosen = self.budget  # given, or nothing to choose between
            torch.set_num_threads(self.budget)

    def tuner(self) -> ThreadTuner | None:
        """A trial for the next input, while no count is chosen yet (CPU only)."""
        if not self.on_cpu or self.chosen is not None:
            return None
        return ThreadTuner(self.budget, window=max(4, self.paths), warmup=max(3, self.paths))

    def after_input(self, tuner: ThreadTuner | None) -> int | None:
        """Keep what ``tuner`` measured; the threads the input used (None on a GPU)."""
        used = torch.get_num_threads() * self.workers if self.on_cpu else None
        if tuner is not None and tuner.choice is not None:
            self.chosen = tuner.choice  # measured once; later inputs reuse it
            torch.set_num_threads(self.chosen)
        elif tuner is not None:
            torch.set_num_threads(self.budget)  # a short input did not finish the test
        return used

    def restore(self) -> None:
        torch.set_num_threads(self.before)


def segment(
    inputs: InputSet | Sequence[str | Path],
    *,
    predictor: StreamPredictor,
    options: SegmentOptions | None = None,
    progress: ProgressHook | None = None,
) -> SegmentReport:
    """Segment every input with ``predictor``, writing what ``options`` asks for (default:
    an overlay video beside each input).

    ``inputs``: an :class:`InputSet` (expanded, grouped and sharded, e.g. by the CLI), or
    paths, globs, URLs, frame folders and images, expanded here (the image files of one
    folder are one sequence unless ``options.each_image``). NVENC and NVDEC (``options.encoding``,
    ``options.hw_decode``) run on the predictor's GPU (GPU 0, or the driver's choice, for a
    CPU model) and are tried on a few frames first. An output that is an input is refused
    whatever the options.

    Raises TdnetError only for problems that concern every input (an NVENC that cannot
    run, an unwritable ``out_dir``, an output that is an input or a folder not ours to
    replace), before anything is written; a bad input is a failed :class:`InputResult`.
    """
    options = options if options is not None else SegmentOptions()
    hook = progress if progress is not None else SilentProgress()
    if not isinstance(inputs, InputSet):
        inputs = gather_inputs(inputs, images="each" if options.each_image else "sequence")
    encoding, decode_gpu = hardware_video(
        options.encoding, hw_decode=options.hw_decode, gpu=model_gpu(predictor.device)
    )
    check_outputs(inputs, options)
    threads = _Threads(predictor, options.threads)
    report = _new_report(predictor, inputs.shard)
    claimed: dict[Path, str] = {}
    meters: list[ConsistencyMeter] | None = [] if options.consistency else None
    started = time.perf_counter()
    try:
        for index, spec in enumerate(inputs.specs):
            result = InputResult(input=str(spec))
            if isinstance(spec, ImageSequence):
                result.images = list(spec.images)
            tuner = threads.tuner()
            t0 = time.perf_counter()
            try:
                _process(
                    spec,
                    index,
                    len(inputs.specs),
                    result,
                    predictor=predictor,
                    options=options,
                    hook=hook,
                    tuner=tuner,
                    claimed=claimed,
                    encoding=encoding,
                    decode_gpu=decode_gpu,
                    meters=meters,
                )
            except INPUT_FAILURES as exc:
                result.status = "failed"
                result.error = _one_line(exc)
            finally:
                result.seconds = time.perf_counter() - t0
            result.threads = threads.after_input(tuner)
            report.results.append(result)
            hook.finish_input(result)
    finally:
        report.seconds = time.perf_counter() - started
        threads.restore()
    if meters:
        report.consistency = merge(meters).to_dict(predictor.classes)
    return report


def _new_report(predictor: StreamPredictor, shard: tuple[int, int] | None) -> SegmentReport:
    """An empty report naming what runs: model, weights, device, precision, and the model's notes
    (demo model, random weights), which the CLI shows as warnings. Predictors other than
    :class:`~tdnet_cli.inference.Predictor` may lack any of these."""
    loaded = getattr(predictor, "loaded", None)
    path = getattr(loaded, "path", None)
    return SegmentReport(
        shard=shard,
        model=getattr(predictor, "name", None),
        weights=str(path) if path is not None else None,
        device=str(predictor.device),
        precision=getattr(predictor, "precision", None),
        notes=list(dict.fromkeys([*predictor.notes, *getattr(predictor, "warnings", [])])),
    )


def _one_line(exc: BaseException) -> str:
    """An input's failure as one line for the report."""
    if isinstance(exc, TdnetError):
        return str(exc)
    if isinstance(exc, OSError):
        return os_error_line(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _process(
    spec: Spec,
    index: int,
    count: int,
    result: InputResult,
    *,
    predictor: StreamPredictor,
    options: SegmentOptions,
    hook: ProgressHook,
    tuner: ThreadTuner | None,
    claimed: dict[Path, str],
    encoding: Encoding,
    decode_gpu: int | None,
    meters: list[ConsistencyMeter] | None = None,
) -> None:
    """One input, start to finish; raises on failure (the caller records it). With ``meters``
    (``--consistency``), the input's ConsistencyMeter is appended to it."""
    # a stream (stdout, a URL) is no file: nothing to claim, nothing that exists
    plans = claim_outputs(spec, options, claimed) if options.stream is None else {options.save[0]: options.stream}
    if not plans:
        result.status = "skipped"
        hook.start_input(str(spec), index, count, 0)
        return
    # videos as YUV 4:2:0 (see Renderer); frame folders and images are RGB
    source = _open_source(spec, options, decode_gpu)
    left_out = getattr(source, "left_out", [])
    if left_out:  # a frame folder that also holds the outputs of an images run
        result.warnings.append(
            f"{spec}: left out {len(left_out)} of tdnet's own outputs in the folder ({few(left_out)}); they are no frames"
        )
    try:
        info = source.info
        hook.start_input(str(spec), index, count, info.frame_count)
        if tuner is not None and info.frame_count is not None and info.frame_count < tuner.frames_needed + 8:
            tuner = None  # too short to measure; keep the current thread count
        workers = spare_workers()
        writers = _open_writers(plans, source, options, encoding=encoding, workers=workers)
        try:
            stats = _run(source, result, writers, predictor=predictor, options=options, hook=hook, tuner=tuner,
                         workers=workers, meters=meters)  # fmt: skip
            if stats.frames == 0:
                raise stats.interrupted or InputError(f"{spec}: no frames (an empty or unreadable video)")
            for w in writers.values():
                closed = w.close()
                result.outputs.extend(str(p) for p in (closed if isinstance(closed, list) else [closed]))
                result.warnings.extend(w.warnings)
            if stats.interrupted is not None:  # a live run stopped by the user: its outputs are whole
                raise stats.interrupted
        except BaseException:
            for w in writers.values():
                w.abort()  # no-op for any already committed (those stay listed: they are complete)
            raise
    finally:
        source.close()
    for message in result.warnings:
        hook.warn(message)
    if source.problems:
        # Truncated or corrupt: keep what decoded (the outputs are complete files of those
        # frames) but fail the input, so scripts notice.
        result.status = "failed"
        result.error = (
            f"{spec}: corrupt or truncated video, kept the {stats.frames} frames decoded ({source.problems[0]})"
        )


def _run(
    source: FrameSource,
    result: InputResult,
    writers: dict[str, Writer],
    *,
    predictor: StreamPredictor,
    options: SegmentOptions,
    hook: ProgressHook,
    tuner: ThreadTuner | None,
    workers: int,
    meters: list[ConsistencyMeter] | None,
) -> StreamStats:
    """One input's frames through the model into ``writers`` (left open); its figures into ``result``."""
    render = Renderer(writers, predictor.palette, predictor.classes, options.alpha, options.legend)
    if meters is not None:
        meters.append(ConsistencyMeter(len(predictor.classes)))
        render = ConsistencyTap(render, meters[-1], CutDetector() if options.cut_detect else None)
    realtime = _realtime(options, source.info)
    watch = getattr(hook, "watch_realtime", None)  # hooks may show drops and latency live
    if realtime is not None and callable(watch):
        watch(realtime)
    stats = run_stream(
        source, predictor, render, cut_detect=options.cut_detect, hook=hook, tuner=tuner, workers=workers,
        realtime=realtime, finish_on_interrupt=source.info.live,
    )  # fmt: skip
    if realtime is not None:
        result.dropped = realtime.dropped
        result.latency_ms = {f"p{q}": _ms(realtime.percentile(q)) for q in (50, 95)}
    if meters is not None:
        result.consistency = meters[-1].result().to_dict(predictor.classes)
        result.consistency["seconds"] = round(render.seconds, 3)
    result.frames, result.model_seconds, result.cuts = stats.frames, stats.model_seconds, stats.cuts
    result.reconnects = getattr(source, "reconnects", None)
    return stats


def _open_source(spec: Spec, options: SegmentOptions, decode_gpu: int | None) -> FrameSource:
    """The input's frames: videos as YUV 4:2:0 (see Renderer), frame folders and images RGB; a
    camera or stream with ``options.reconnect`` opened again when it ends."""
    if isinstance(spec, ImageSequence):
        return ImageSequenceReader(spec.images, uri=spec.label)
    if options.reconnect and is_live(spec) and not is_stdin(spec):
        return ReconnectingSource(
            lambda: open_source(spec, yuv=options.decode_yuv, hw_decode=decode_gpu), options.reconnect
        )  # type: ignore[arg-type]
    return open_source(spec, yuv=options.decode_yuv, hw_decode=decode_gpu)


def _realtime(options: SegmentOptions, info: SourceInfo) -> Realtime | None:
    """Real-time mode for this input, or None: as asked, else for cameras and streams only (not
    stdin: a pipe holds its writer back, so nothing is lost by waiting). A file or folder is
    paced at its own rate, so that it arrives as a live source would."""
    default = info.live and not is_stdin(info.uri)
    if not (options.realtime if options.realtime is not None else default):
        return None
    rate = info.fps if info.fps else Fraction(options.fps or DEFAULT_FOLDER_FPS)
    return Realtime(pace=None if info.live else float(rate))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


Writer = VideoWriter | PngSequenceWriter | PngFilesWriter | RawFrameWriter


def _stream_writer(kind: str, target: str, source: FrameSource, rate: Fraction, options: SegmentOptions,
                   encoding: Encoding) -> Writer:  # fmt: skip
    """The writer of a stream output (``-o -``, ``-o URL``): raw label frames or a muxed video."""
    info, fmt = source.info, stream_format(target, options.stream_format)
    if fmt == "rawvideo":
        return RawFrameWriter(info.width, info.height)
    return StreamWriter(target, info.width, info.height, rate, fmt=fmt, encoding=encoding,
                        matrix=info.matrix or "bt601", lossless=kind == "color")  # fmt: skip


def _open_writers(
    plans: dict[str, Path] | dict[str, dict[str, Path]] | dict[str, str],
    source: FrameSource,
    options: SegmentOptions,
    *,
    encoding: Encoding,
    workers: int,
) -> dict[str, Writer]:
    """A writer per planned output; none left open if one fails."""
    info = source.info
    rate = info.fps if info.fps else Fraction(options.fps or DEFAULT_FOLDER_FPS).limit_denominator(1001)
    writers: dict[str, Writer] = {}
    try:
        for kind, path in plans.items():
            if isinstance(path, str):
                writers[kind] = _stream_writer(kind, path, source, rate, options, encoding)
            elif isinstance(path, dict):  # an image sequence: a PNG per image, under its own name
                writers[kind] = PngFilesWriter(path, overwrite=options.overwrite)
            elif is_video_output(kind, path):
                # a live source was read once, as it came: its audio cannot be read again
                audio = info.uri if (kind == "overlay" and info.has_audio and not info.live) else None
                # YUV frames keep their own colour matrix (blended in place); RGB ones get BT.601
                writers[kind] = VideoWriter(
                    path,
                    info.width,
                    info.height,
                    rate,
                    audio_from=audio,
                    overwrite=options.overwrite,
                    encoding=encoding,
                    matrix=info.matrix or "bt601",
                    lossless=kind == "color",  # a colour map must decode to palette colours only
                )
            else:
                # the manifest lets a later --overwrite tell this folder from one holding other files
                writers[kind] = PngSequenceWriter(
                    path, overwrite=options.overwrite, workers=workers, manifest=True, into=options.into_folder
                )
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    return writers
