"""Writers for outputs that are no files: a stream on stdout (``-o -``) or to a URL (``-o
udp://...``), muxed by ffmpeg, and raw label frames on stdout.

A stream has no temporary name, nothing to rename and nothing to overwrite: what is written
is sent at once. :meth:`abort` stops it where it is (the receiver sees the stream end).
"""

from __future__ import annotations

import errno
import subprocess
import sys
import tempfile
from fractions import Fraction
from urllib.parse import urlparse

import numpy as np

from tdnet_cli.errors import TdnetError, UsageError, WriteError
from tdnet_cli.video.stdio import StdioLink, child_stdout, drain_child
from tdnet_cli.video.writer import Encoding, VideoWriter, end_input, stop_encoder

__all__ = ["STREAM_FORMATS", "RawFrameWriter", "StreamWriter", "is_stream_target", "stream_format"]

# what --format takes, and ffmpeg's muxer for each (rawvideo: label frames as bytes, no muxer)
STREAM_FORMATS = {"mpegts": "mpegts", "matroska": "matroska", "mkv": "matroska", "nut": "nut", "flv": "flv",
                  "rtsp": "rtsp", "rawvideo": "rawvideo"}  # fmt: skip
# the muxer a URL's protocol needs when --format does not say
_SCHEME_FORMATS = {"rtmp": "flv", "rtmps": "flv", "rtsp": "rtsp", "rtsps": "rtsp"}
STREAM_SCHEMES = ("udp", "tcp", "rtp", "srt", "rist", "rtmp", "rtmps", "rtsp", "rtsps")


def is_stream_target(target: str) -> bool:
    """``-`` (stdout) or a URL of a protocol ffmpeg sends streams over (:data:`STREAM_SCHEMES`)."""
    return target == "-" or ("://" in target and urlparse(target).scheme.lower() in STREAM_SCHEMES)


def stream_format(target: str, fmt: str | None) -> str:
    """ffmpeg's muxer for ``target``: ``fmt`` (a --format value) when given, else by the URL's
    protocol (flv for rtmp, rtsp for rtsp), else MPEG-TS, which any reader can join mid-stream."""
    if fmt is not None:
        if fmt not in STREAM_FORMATS:
            raise UsageError(f"unknown --format {fmt!r}", hint=f"choose one of {', '.join(STREAM_FORMATS)}")
        return STREAM_FORMATS[fmt]
    return _SCHEME_FORMATS.get(urlparse(target).scheme.lower(), "mpegts") if target != "-" else "mpegts"


class StreamWriter(VideoWriter):
    """:class:`VideoWriter`'s encoding, muxed as ``fmt`` to stdout (``target`` ``-``) or to a URL.

    x264 runs with ``-tune zerolatency`` (no frames held back for B-frames or look-ahead), so
    each frame leaves as soon as it is encoded. No audio: the source is read once, as it comes.
    """

    def __init__(
        self,
        target: str,
        width: int,
        height: int,
        fps: Fraction | float,
        *,
        fmt: str = "mpegts",
        encoding: Encoding | None = None,
        matrix: str = "bt601",
        lossless: bool = False,
    ) -> None:
        self.target = target
        self.path = target  # type: ignore[assignment]  # what messages name
        self.audio_from = None
        cmd = self._encoder_cmd(width, height, fps, matrix=matrix, encoding=encoding or Encoding(), lossless=lossless)
        if self.encoding.encoder == "x264":
            cmd += ["-tune", "zerolatency"]
        cmd += ["-f", fmt, "pipe:1" if target == "-" else target]
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()/abort()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=child_stdout() if target == "-" else subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )
        self._out = drain_child(self._proc) if target == "-" else StdioLink()

    def _failed(self, what: str, default: str) -> TdnetError:
        log = self._log_text()
        where = "stdout" if self.target == "-" else self.target
        if self.target == "-" and ("Broken pipe" in log or not log):
            return WriteError(f"{where}: the reader went away ({what})")
        return WriteError(f"{where}: {what}: {log or default}")

    def close(self) -> str:  # type: ignore[override]
        """Finish the stream (the muxer writes its trailer); returns the target."""
        if self._closed:
            return self.target
        try:
            rc = end_input(self._proc)
            self._out.join()
            if rc != 0:
                raise self._failed("the encoder failed", f"status {rc}")
            if self.frames == 0:
                raise TdnetError(f"{self.target}: no frames to write")
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._log.close()
        return self.target

    def abort(self) -> None:
        """Stop the stream where it is (idempotent)."""
        if self._closed:
            return
        self._closed = True
        stop_encoder(self._proc)
        self._out.join(timeout=5)
        self._log.close()


class RawFrameWriter:
    """Label frames as raw bytes on stdout: 8-bit gray, one ``H*W`` frame after another, in
    frame order (``--save labels -o - --format rawvideo``), for another program to read."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.warnings: list[str] = []
        self.frames = 0
        self._out = getattr(sys.stdout, "buffer", sys.stdout)

    def write(self, name: str, labels: np.ndarray) -> None:
        if labels.shape != (self.height, self.width) or labels.dtype != np.uint8:
            raise ValueError(f"labels {labels.shape} {labels.dtype} != ({self.height}, {self.width}) uint8")
        try:
            self._out.write(memoryview(np.ascontiguousarray(labels).reshape(-1)))
        except OSError as exc:
            raise self._error(exc) from None
        self.frames += 1

    @staticmethod
    def _error(exc: OSError) -> WriteError:
        if isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE:
            return WriteError("stdout: the reader went away")
        return WriteError(f"stdout: {exc.strerror or exc}")

    def close(self) -> str:
        try:
            self._out.flush()
        except OSError as exc:
            raise self._error(exc) from None
        return "-"

    def abort(self) -> None:
        """Nothing to take back: what was written was read."""
