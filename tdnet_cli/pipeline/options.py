"""What a `segment` run writes and how: one frozen object, checked once, passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tdnet_cli.errors import UsageError
from tdnet_cli.video import Encoding
from tdnet_cli.video.stream_writer import is_stream_target, stream_format

__all__ = ["SAVE_KINDS", "SegmentOptions"]

SAVE_KINDS = ("overlay", "color", "labels", "labelids")


@dataclass(frozen=True)
class SegmentOptions:
    """Everything `segment` is told besides its inputs and predictor.

    ``save``: any of :data:`SAVE_KINDS` (repeats dropped, order kept). ``out_dir``: folder
    for all outputs (default: beside each input); ``output``: the first kind's path, for a
    single input (the others beside it, named after it). ``fps``: output rate for
    frame-folder inputs (default :data:`~tdnet_cli.video.DEFAULT_FOLDER_FPS`).
    ``threads``: torch CPU threads in all; None times three quarters of the default count
    against all of it on the first long input and keeps the faster (CPU only).
    ``encoding``: how video outputs are encoded (x264 or NVENC, see
    :class:`~tdnet_cli.video.Encoding`). ``hw_decode``: decode videos on the GPU (NVDEC).
    ``decode_yuv=False`` decodes videos to RGB instead of YUV 4:2:0 (the slower route;
    kept for comparisons). ``consistency`` also scores the temporal consistency (TC, flicker)
    of the labels written, per input and overall (:mod:`tdnet_cli.consistency`).
    ``each_image``: image files are inputs of their own (fresh memory each) instead of one
    sequence per folder (:func:`~tdnet_cli.pipeline.inputs.group_images`).

    ``overwrite`` replaces existing outputs, but a PNG folder only when every entry in it is
    a file an earlier run recorded writing there (its hidden ``.tdnet-output.json``); folders
    from before that record, or holding anything else, need ``into_folder``: our PNGs go into
    the existing folder, replacing same-named files and leaving every other entry alone.

    ``stream``: instead of files, send the one output (a single --save kind) of the one input as
    a stream: ``-`` to stdout, or to a udp/tcp/srt/rtmp/rtsp URL, muxed as ``stream_format``
    (:data:`~tdnet_cli.video.stream_writer.STREAM_FORMATS`; default MPEG-TS, flv for rtmp);
    ``rawvideo`` sends label frames (``labels`` or ``labelids``) to stdout as 8-bit gray bytes.

    ``realtime``: drop frames at the reader when the model is slower than the source, never
    queueing more than two (:class:`~tdnet_cli.pipeline.stream.Realtime`); a file's frames are
    then released at its own rate. None (the default): on for cameras and streams, off for
    files and stdin (a pipe holds its writer back); False: never a frame dropped.
    ``reconnect``: open a camera or stream again, up to this many tries, each time it ends,
    with the model's memory reset (:class:`~tdnet_cli.video.reconnect.ReconnectingSource`).

    Bad or contradicting values are a :class:`UsageError` when the object is made, so a
    front end finds them before it loads a model.
    """

    save: tuple[str, ...] = ("overlay",)
    out_dir: Path | None = None
    output: Path | None = None
    alpha: float = 0.5
    legend: bool = False
    overwrite: bool = False
    skip_existing: bool = False
    into_folder: bool = False
    cut_detect: bool = True
    fps: float | None = None
    threads: int | None = None
    encoding: Encoding = field(default_factory=Encoding)
    hw_decode: bool = False
    decode_yuv: bool = True
    consistency: bool = False
    each_image: bool = False
    stream: str | None = None
    stream_format: str | None = None
    realtime: bool | None = None
    reconnect: int = 0

    def __post_init__(self) -> None:
        # normalised once here (frozen: hence object.__setattr__), so every reader sees one form
        object.__setattr__(self, "save", tuple(dict.fromkeys(self.save)))
        for name in ("out_dir", "output"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        self._check()

    def _check(self) -> None:
        if not self.save:
            raise UsageError("nothing to save", hint=f"pass --save with one of {', '.join(SAVE_KINDS)}")
        bad = [k for k in self.save if k not in SAVE_KINDS]
        if bad:
            raise UsageError(f"unknown --save {bad[0]!r}", hint=f"choose from {', '.join(SAVE_KINDS)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"--alpha {self.alpha} is outside 0..1")
        if self.fps is not None and self.fps <= 0:
            raise UsageError(f"--fps {self.fps} must be positive")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads} must be at least 1")
        if self.reconnect < 0:
            raise UsageError(f"--reconnect {self.reconnect} must be 0 or more")
        if self.overwrite and self.skip_existing:
            raise UsageError("--overwrite and --skip-existing contradict each other")
        if self.into_folder and self.skip_existing:
            raise UsageError("--into-folder and --skip-existing contradict each other")
        self.encoding.check()
        self._check_stream()

    def _check_stream(self) -> None:
        if self.stream is None:
            if self.stream_format is not None:
                raise UsageError("--format is for streams", hint="use it with -o - (stdout) or -o URL")
            return
        if not is_stream_target(self.stream):
            raise UsageError(f"-o {self.stream}: not stdout (-) or a stream URL (udp, tcp, srt, rtmp, rtsp)")
        if self.output is not None or self.out_dir is not None:
            raise UsageError("a stream output excludes -o FILE and --out-dir")
        if len(self.save) != 1:
            raise UsageError(f"-o {self.stream} carries one stream", hint="pass a single --save kind")
        fmt, kind = stream_format(self.stream, self.stream_format), self.save[0]
        if fmt == "rawvideo":
            if kind not in ("labels", "labelids"):
                raise UsageError("--format rawvideo sends label frames", hint="use it with --save labels or labelids")
            if self.stream != "-":
                raise UsageError("--format rawvideo writes to stdout only", hint="use -o -")
        elif kind not in ("overlay", "color"):
            raise UsageError(
                f"--save {kind} gives PNGs, which make no stream", hint="add --format rawvideo for raw label frames"
            )
