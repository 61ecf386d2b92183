"""Output writers that never leave a finished-looking file behind a crash.

Every writer works under a temporary name in the destination folder
(``.NAME.<pid>.partial.EXT`` for files, ``.NAME.<pid>.partial.d`` for PNG folders) and
renames it to the final name only in :meth:`close`. :meth:`abort` (called by the
context manager on any exception, Ctrl-C and SIGTERM included) deletes the temporary;
after a SIGKILL, :func:`tdnet_cli.fileio.remove_stale_partials` lets a later run remove it. An existing
final output is an :class:`OutputExistsError` unless ``overwrite=True``.

Here: the video writer (H.264 through ffmpeg) and the rules both writers share; PNG
sequences and their manifest are in :mod:`tdnet_cli.video.png_writer`.
"""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from tdnet_cli.errors import OutputExistsError, TdnetError, UsageError, WriteError
from tdnet_cli.fileio import commit_file, partial_path, write_error
from tdnet_cli.video.color import MATRICES, YUV420, rgb_to_i420
from tdnet_cli.video.ffmpeg import ffmpeg_exe, gpu_error

# ffmpeg's stream tags for each colour matrix we write
_COLOR_TAGS = {
    "bt601": ("-colorspace", "smpte170m"),
    "bt709": ("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"),
}

__all__ = [
    "VIDEO_SUFFIXES",
    "Encoding",
    "VideoWriter",
    "check_target",
    "encoded_size",
    "unlink_quietly",
]

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv")


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
ENCODERS = ("x264", "nvenc")
# NVENC's presets run from p1 (fastest) to p7 (best); x264's names map onto them in order
_NVENC_PRESETS = dict(zip(X264_PRESETS, ("p1", "p2", "p3", "p4", "p4", "p5", "p6", "p7", "p7")))


def check_encoding(preset: str, crf: int, encoder: str = "x264") -> None:
    """A usage error for an encoder, x264 preset or CRF that ffmpeg would reject mid-run."""
    if encoder not in ENCODERS:
        raise UsageError(f"unknown encoder {encoder!r}", hint=f"choose one of {', '.join(ENCODERS)}")
    if preset not in X264_PRESETS:
        raise UsageError(f"unknown x264 preset {preset!r}", hint=f"choose one of {', '.join(X264_PRESETS)}")
    if not 0 <= crf <= 51:
        raise UsageError(f"--crf {crf} is outside 0..51", hint="lower is better quality; 18-28 is usual")


@dataclass(frozen=True)
class Encoding:
    """How video outputs are encoded: H.264 by libx264 on the CPU, or by NVENC on an NVIDIA GPU.

    ``preset`` is an x264 preset name; NVENC takes the same names, mapped in order onto its
    p1 (fastest) .. p7 (best). ``crf`` is x264's constant rate factor, and NVENC's
    constant-quality target (``-cq``, same 0-51 scale; 0, lossless for x264, becomes 1, as
    NVENC reads 0 as "automatic"). ``gpu`` picks NVENC's GPU (None: the driver's choice).
    """

    preset: str = "veryfast"
    crf: int = 20
    encoder: str = "x264"
    gpu: int | None = None

    def check(self) -> Encoding:
        check_encoding(self.preset, self.crf, self.encoder)
        return self

    def ffmpeg_args(self) -> list[str]:
        """The encoder's ffmpeg output options."""
        if self.encoder == "nvenc":
            args = [
                "-c:v",
                "h264_nvenc",
                "-preset",
                _NVENC_PRESETS[self.preset],
                "-tune",
                "hq",
                "-rc",
                "vbr",
                "-cq",
                str(max(self.crf, 1)),
                "-b:v",
                "0",
            ]
            return args + (["-gpu", str(self.gpu)] if self.gpu is not None else [])
        return ["-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf)]


# ffmpeg reports a failed write with the system's own words (av_err2str is strerror)
_WRITE_FAILURES = tuple(
    os.strerror(e)
    for e in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG, errno.EACCES, errno.ENOENT)
)


def _disk_full(folder: Path) -> bool:
    """Almost no space left in ``folder``'s filesystem (after ffmpeg gave up there)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 256 << 10


def encoded_size(width: int, height: int) -> tuple[int, int]:
    """The size the H.264 stream gets: 4:2:0 chroma needs even sides, so odd ones grow by 1."""
    return width + (width & 1), height + (height & 1)


def check_target(final: Path, overwrite: bool) -> None:
    if final.exists() and not overwrite:
        raise OutputExistsError(f"{final} exists", hint="use --overwrite, or --skip-existing to keep it")
    parent = final.parent
    if not parent.is_dir():
        raise UsageError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {parent} is not writable", hint="choose a writable output folder")


def unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def end_input(proc: subprocess.Popen) -> int:
    """Close an encoder's stdin (its end of input) and wait for it: its exit status. A reader
    that went away already shows in that status and the log."""
    assert proc.stdin is not None
    try:
        proc.stdin.close()
    except BrokenPipeError:
        pass
    return proc.wait()


def stop_encoder(proc: subprocess.Popen) -> None:
    """Kill an ffmpeg encoder that still runs and close its stdin (a writer's abort)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass


class VideoWriter:
    """RGB frames -> H.264 (yuv420p) video, optionally with another file's audio.

    - ``fps`` is the constant output rate (pass the input's for the same timing).
    - ``preset``/``crf``: libx264's; or a whole :class:`Encoding` (e.g. NVENC) as ``encoding``.
    - Frames are converted to YUV 4:2:0 here with OpenCV (limited range, in ``matrix``:
      BT.601 by default, or BT.709, and tagged so players decode it right): cheaper than
      ffmpeg's single-threaded scaler, which capped 2048x1024 output near 60 fps, and half
      the bytes through the pipe. Frames already in YUV 4:2:0 (of ``matrix``) go straight
      to :meth:`write_prepared`.
    - Odd sizes: 4:2:0 cannot store them, so the last column/row is repeated once; the
      file is then ``encoded_size(w, h)``. Frames are given at their true size.
    - ``audio_from``: a path/URL whose audio streams are copied into the result (as they
      are when the container allows, else re-encoded to AAC; if both fail the video is
      kept without audio and ``warnings`` says so).
    - The container follows the suffix (.mp4/.mov/.m4v/.mkv).
    - ``lossless=True`` stores the RGB frames exactly (libx264rgb at ``-qp 0``, 4:4:4, any size,
      whatever the encoding says): what a colour map needs to map back to classes, at a small
      cost for its flat regions; some players (browsers) cannot play it.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: Fraction | float,
        *,
        audio_from: str | None = None,
        overwrite: bool = False,
        preset: str = "veryfast",
        crf: int = 20,
        matrix: str = "bt601",
        encoding: Encoding | None = None,
        lossless: bool = False,
    ) -> None:
        self.path = Path(path)
        cmd = self._encoder_cmd(width, height, fps, matrix=matrix, encoding=encoding or Encoding(preset, crf),
                                lossless=lossless)  # fmt: skip
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise UsageError(f"{self.path}: a video output needs one of {', '.join(VIDEO_SUFFIXES)}")
        check_target(self.path, overwrite)
        self.overwrite = overwrite
        self.audio_from = audio_from
        self._tmp = partial_path(self.path)
        # A file, not a pipe: no thread needed to drain it. Closed in close()/abort(), not a with block.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        if self.path.suffix.lower() != ".mkv":
            cmd += ["-movflags", "+faststart"]
        cmd.append(str(self._tmp))
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True
        )

    def _encoder_cmd(
        self, width: int, height: int, fps: Fraction | float, *, matrix: str, encoding: Encoding, lossless: bool
    ) -> list[str]:
        """Set up the frame geometry and return ffmpeg's command up to the output's name: raw
        frames on stdin, encoded by ``encoding`` (or losslessly)."""
        if matrix not in MATRICES:
            raise ValueError(f"unknown colour matrix {matrix!r}")
        self.matrix = matrix
        self.encoding = encoding.check()
        self.width, self.height = width, height
        self.warnings: list[str] = []
        self.frames = 0
        self._closed = False
        fps = Fraction(fps).limit_denominator(1_000_000)
        self.lossless = lossless
        self._enc_w, self._enc_h = (width, height) if lossless else encoded_size(width, height)
        rate = ["-framerate", f"{fps.numerator}/{fps.denominator}"]
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
        if lossless:  # RGB in, RGB stored: every pixel decodes to the colour written
            cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", *rate, "-i", "-",
                    "-c:v", "libx264rgb", "-preset", self.encoding.preset, "-qp", "0", "-pix_fmt", "rgb24"]  # fmt: skip
        else:
            cmd += [
                # the input is declared in the output's colour matrix: ffmpeg must not convert it
                "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{self._enc_w}x{self._enc_h}",
                *_COLOR_TAGS[matrix], "-color_range", "tv", *rate, "-i", "-",
                *self.encoding.ffmpeg_args(), "-pix_fmt", "yuv420p",
                *_COLOR_TAGS[matrix], "-color_range", "tv",
            ]  # fmt: skip
        return cmd

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        self.write_prepared(self.prepare(frame))

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """The encoder's input for an RGB frame (padded YUV 4:2:0, or the RGB itself when
        lossless). Thread-safe: callers may prepare frames in parallel and
        :meth:`write_prepared` them in order."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} != ({self.height}, {self.width}, 3) uint8")
        if self.lossless:
            return np.ascontiguousarray(frame)
        dh, dw = self._enc_h - self.height, self._enc_w - self.width
        if dh or dw:
            frame = cv2.copyMakeBorder(frame, 0, dh, 0, dw, cv2.BORDER_REPLICATE)
        if self.matrix == "bt601":
            return cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)  # OpenCV's matrix: BT.601, limited range
        return rgb_to_i420(frame, self.matrix)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one prepared frame (YUV 4:2:0 at the encoded size, or RGB when lossless)."""
        if self.lossless:
            return self._enc_h * self._enc_w * 3
        return YUV420.nbytes(self._enc_h, self._enc_w)

    def write_prepared(self, yuv: np.ndarray) -> None:
        """Append a frame made by :meth:`prepare`, or any buffer of its layout and size."""
        if yuv.size != self.frame_bytes:
            what = "RGB" if self.lossless else "YUV 4:2:0"
            raise ValueError(f"{yuv.size} bytes is not one {self._enc_w}x{self._enc_h} {what} frame")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(memoryview(yuv.reshape(-1)))
        except (BrokenPipeError, OSError):
            self._proc.wait()
            raise self._failed("the encoder stopped", "no message") from None
        self.frames += 1

    def _failed(self, what: str, default: str) -> TdnetError:
        """The encoder's failure: a WriteError naming the full disk when that was why."""
        log = self._log_text()
        if any(m in log for m in _WRITE_FAILURES[:2]) or _disk_full(self._tmp.parent):
            return write_error(self.path.parent, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        if any(m in log for m in _WRITE_FAILURES):
            return WriteError(f"{self.path}: {what}: {log}")
        return TdnetError(f"{self.path}: {what}: {log or default}")

    def _log_text(self) -> str:
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace")
        if self.encoding.encoder == "nvenc":
            return gpu_error(text)  # "Cannot load libcuda.so.1", not the muxer's complaint after it
        lines = text.strip().splitlines()
        return lines[-1] if lines else ""

    def close(self) -> Path:
        """Finish encoding, add audio, and move the file to its final name."""
        if self._closed:
            return self.path
        try:
            rc = end_input(self._proc)
            if rc != 0:
                raise self._failed("the encoder failed", f"status {rc}")
            if self.frames == 0:
                raise TdnetError(f"{self.path}: no frames to write")
            if self.audio_from:
                self._mux_audio()
            commit_file(self._tmp, self.path, self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._log.close()
        return self.path

    def _mux_audio(self) -> None:
        """Copy the source's audio next to the new video (copy first, AAC as the fallback)."""
        muxed = self._tmp.with_name(self._tmp.name.replace(".partial", ".partial-av"))
        codecs = ["copy", "aac"]
        if self.path.suffix.lower() == ".mkv":
            codecs = ["copy"]  # Matroska takes any audio codec
        last = ""
        for codec in codecs:
            cmd = [
                ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                "-i", str(self._tmp), "-i", str(self.audio_from),
                "-map", "0:v:0", "-map", "1:a?", "-c:v", "copy", "-c:a", codec,
            ]  # fmt: skip
            if self.path.suffix.lower() != ".mkv":
                cmd += ["-movflags", "+faststart"]
            cmd.append(str(muxed))
            proc = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False, start_new_session=True
            )
            if proc.returncode == 0:
                os.replace(muxed, self._tmp)
                return
            log = proc.stderr.decode("utf-8", "replace")
            # measured before the half-written copy is deleted: it is what filled the disk
            full = any(m in log for m in _WRITE_FAILURES[:2]) or _disk_full(muxed.parent)
            unlink_quietly(muxed)
            last = (log.strip().splitlines()[-1:] or [""])[0]
            if full:  # a failed write is a failed output, not a video without its audio
                raise WriteError(
                    f"disk full writing {self.path.parent} (adding the audio to {self.path.name})",
                    hint="free some space or write elsewhere",
                )
            if any(m in log for m in _WRITE_FAILURES):
                raise WriteError(f"{self.path}: adding the audio failed: {last}")
        # every codec refused (the container cannot hold this audio): the video is still whole
        self.warnings.append(f"{self.path.name}: audio not copied ({last or 'ffmpeg failed'}); video kept")

    def abort(self) -> None:
        """Stop the encoder and delete the temporary file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        stop_encoder(self._proc)
        unlink_quietly(self._tmp)
        unlink_quietly(self._tmp.with_name(self._tmp.name.replace(".partial", ".partial-av")))
        self._log.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
