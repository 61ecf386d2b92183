"""Streaming frame sources: videos (anything ffmpeg opens, URLs included) and frame folders
(tdnet_cli/video/folder.py), opened by :func:`open_source`.

Both yield frames one at a time, so memory stays flat however long the input: uint8 RGB
``(H, W, 3)``, or for videos opened with ``yuv=True`` the decoder's own YUV 4:2:0 planes
(with RGB on demand). Videos are decoded by the ffmpeg binary shipped with imageio-ffmpeg
through a rawvideo pipe, resampled to a constant rate (see :class:`VideoReader`); frame
folders are read with OpenCV.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from tdnet_cli.errors import InputError
from tdnet_cli.video.color import YUV420
from tdnet_cli.video.ffmpeg import ffmpeg_exe, gpu_line
from tdnet_cli.video.folder import FrameFolderReader
from tdnet_cli.video.frames import (
    Frame,
    SourceInfo,
    is_camera,
    is_live,
    is_stdin,
    is_url,
)
from tdnet_cli.video.stdio import StdioLink, child_stdin, feed_child

__all__ = ["VideoReader", "open_source"]

# --------------------------------------------------------------------------- videos

_LEVEL_RE = re.compile(r"\[(panic|fatal|error|warning|info)\] ?(.*)$")
_SIZE_RE = re.compile(r", (\d{1,6})x(\d{1,6})[ ,\[]")
_FPS_RE = re.compile(r", ([\d.]+)(k?) (fps|tbr)\b")
# Above this, a stream's guessed rate is taken for a time base (1k, 90k) when its average
# rate is below it: the frame rate of real footage (slow motion included) stays under it.
MAX_FRAME_RATE = 240
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_CODEC_RE = re.compile(r"Video: (\w+)")
# the input's pixel format and its parenthesised details: "..., yuv420p(tv, bt709, progressive), 1920x1080"
_PIX_FMT_RE = re.compile(r"Video: .*?, ([a-z0-9_]+)(?:\(([^)]*)\))?[,\s]")


def _stream_rates(line: str) -> dict[str, Fraction]:
    """The rates ffmpeg prints on a stream line: {"fps": average rate, "tbr": guessed rate}."""
    rates: dict[str, Fraction] = {}
    for m in _FPS_RE.finditer(line):
        value = float(m.group(1)) * (1000 if m.group(2) else 1)
        if value > 0:
            rates.setdefault(m.group(3), _fps_fraction(str(value)))
    return rates


_STATS_RE = re.compile(r"frame=\s*(\d+)\b.*?time=(\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _measured_rate(uri: str, seconds: int = 10) -> Fraction | None:
    """The average frame rate of the first ``seconds`` of a video, from its packets' timestamps
    (no decoding: ffmpeg copies them to nowhere); None when that fails."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-i", uri,
           "-map", "0:v:0", "-t", str(seconds), "-c", "copy", "-f", "null", "-"]  # fmt: skip
    try:
        done = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=60, start_new_session=True
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    stats = _STATS_RE.findall(done.stderr.decode("utf-8", "replace"))
    if not stats:
        return None
    frames, h, m, sec = stats[-1]
    span = int(h) * 3600 + int(m) * 60 + float(sec)  # first to last frame
    if int(frames) < 2 or span <= 0:
        return None
    return _fps_fraction(f"{(int(frames) - 1) / span:.2f}")


def _fps_fraction(text: str) -> Fraction:
    """ffmpeg prints rates rounded to 2 decimals; restore NTSC rates (30000/1001) exactly."""
    value = float(text)
    for base in (15, 24, 30, 48, 50, 60, 120, 240):
        if abs(value - base * 1000 / 1001) < 0.006:
            return Fraction(base * 1000, 1001)
    return Fraction(value).limit_denominator(1001)


# stderr is read continuously: a full pipe would stall ffmpeg
def _drain_stderr(
    proc: subprocess.Popen,
    header: list[str],
    header_done: threading.Event,
    tail: deque[str],
    problems: list[str],
    stopped: threading.Event,
) -> None:
    try:
        _read_stderr(proc, header, header_done, tail, problems, stopped)
    except (OSError, ValueError):  # the stream was closed under us (close() or a restart)
        pass
    header_done.set()  # ended before an output stream was announced: the header is all there is


def _read_stderr(
    proc: subprocess.Popen,
    header: list[str],
    header_done: threading.Event,
    tail: deque[str],
    problems: list[str],
    stopped: threading.Event,
) -> None:
    """ffmpeg's messages into ``tail``; the header (until the output stream is announced)
    into ``header``; errors into ``problems``, unless they come after we stopped it."""
    in_output = False
    assert proc.stderr is not None
    for raw in iter(proc.stderr.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        tail.append(line)
        m = _LEVEL_RE.search(line)
        level, text = (m.group(1), m.group(2)) if m else ("info", line)
        if not header_done.is_set():
            header.append(text)
            if text.startswith("Output #0"):
                in_output = True
            elif in_output and "Video:" in text:
                header_done.set()
        if level in ("panic", "fatal", "error") and not stopped.is_set():
            problems.append(text.strip())


class VideoReader:
    """Decode a video (file path or URL) to RGB frames with an ffmpeg subprocess; with
    ``yuv=True`` to planar YUV 4:2:0 frames instead (see :class:`Frame`), which saves
    ffmpeg's colour conversion and half the pipe's bytes.

    The constructor starts ffmpeg and waits for its header (size, rate, streams), so a
    path ffmpeg cannot open fails here with :class:`InputError`. Iterate for frames.
    Decode errors that ffmpeg survives (a truncated or corrupt file) do not raise:
    the frames decoded so far are yielded and the errors collected in ``problems``.

    Frames come at the constant rate ``info.fps``, the way ``ffmpeg -fps_mode cfr`` gives
    them: a variable-frame-rate input (phones, screen recorders, concatenated parts) has its
    frames repeated or dropped by presentation time, so frame ``i`` is the picture shown at
    ``i / fps`` seconds (to within a frame: ffmpeg repeats the previous picture round(gap - 0.6)
    times) and a video written at ``fps`` stays in sync with the input's audio.
    A constant-rate input comes out frame for frame. The rate is ffmpeg's own guess (the
    stream's ``r_frame_rate``, exact); one above :data:`MAX_FRAME_RATE` with a lower average
    rate is a time base, not a rate, and the average is used instead (one or two more ffmpeg
    starts, for such files only).

    ``hw_decode=N`` decodes on CUDA GPU N (NVDEC, ``-hwaccel cuda``); frames still arrive
    in host memory, the same as software decoding gives. Check that NVDEC works first
    (:func:`tdnet_cli.video.hw.require_nvdec`): ffmpeg fails rather than fall back when
    it cannot open the GPU.

    Live sources (:func:`~tdnet_cli.video.frames.is_live`: ``-`` for a container on stdin,
    ``/dev/videoN``, tcp/udp/rtsp/rtmp/srt URLs) are read once: one decoder, never restarted
    (a restart would lose what it read, or find the sender gone), frames as ffmpeg gives them
    in YUV 4:2:0 whatever the source's format, and a frame count only where ffmpeg finds a
    duration (a file redirected to stdin; not a stream or a camera: ``info.frame_count`` None).
    """

    def __init__(self, uri: str, *, name_digits: int = 6, yuv: bool = False, hw_decode: int | None = None) -> None:
        self.uri = uri
        self.hw_decode = hw_decode
        self.live = is_live(uri)
        self._name_digits = name_digits
        self._start(yuv, None)
        if self.live:
            return
        rate = self._rate_override()
        if (yuv and not self._plain_yuv420) or rate is not None:
            # RGB, 4:2:2/4:4:4, 10-bit or full-range sources would lose detail in 8-bit
            # limited-range 4:2:0: decode those to RGB, as before (one more ffmpeg start);
            # likewise a time base taken for the frame rate: restart at a believable one.
            self.close()
            self._start(yuv and self._plain_yuv420, rate)

    def _rate_override(self) -> Fraction | None:
        """The rate to resample at instead of ffmpeg's guess, when that guess is a time base
        (a 1k or 90k "tbr" of a variable-rate file), else None: the stream's average rate, or
        where the header has no believable one (browser-recorded webm: "1k tbr"), the average
        of its first seconds measured from the packets."""
        fps = self.info.fps
        if fps is None or fps <= MAX_FRAME_RATE:
            return None
        avg = self._input_rates.get("fps")
        if avg is None or avg > MAX_FRAME_RATE:
            avg = _measured_rate(self.uri)
        # a measured average above the bound is real high-speed footage: keep ffmpeg's rate
        return avg if avg is not None and avg <= MAX_FRAME_RATE else None

    def _start(self, yuv: bool, rate: Fraction | None) -> None:
        """Start ffmpeg and read its header; ``rate``: resample at it (else at ffmpeg's guess)."""
        self.yuv = yuv
        self._rate = rate
        self._stop = threading.Event()  # set by close(): errors after it are ours, not the file's
        self._plain_yuv420 = False
        # Each decoder start has its own header, tail and problem lists and its own events,
        # handed to its stderr thread (which holds no reference to the reader, so an
        # unreachable reader is collected and stops its decoder): a restarted decoder's old
        # thread may still be finishing, and must not mark the new header as read (that once
        # made a test wait forever on a decoder nobody read from).
        header: list[str] = []
        header_done = threading.Event()
        tail: deque[str] = deque(maxlen=40)
        problems: list[str] = []
        self._header, self._header_done, self._tail, self.problems = header, header_done, tail, problems
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "level+info", "-nostats",
            *(["-hwaccel", "cuda", "-hwaccel_device", str(self.hw_decode)] if self.hw_decode is not None else []),
            *self._input_args(),
            # cfr: frames by presentation time at one rate (the writer's), repeated or dropped
            # where the input's rate varies, so the result keeps time with the input's audio
            "-map", "0:v:0", "-fps_mode", "cfr",
            *(["-r", f"{rate.numerator}/{rate.denominator}"] if rate is not None else []),
            "-f", "rawvideo", "-pix_fmt", "yuv420p" if yuv else "rgb24", "-",
        ]  # fmt: skip
        # A new session keeps Ctrl-C away from ffmpeg: we decide when it stops, so a killed
        # decoder can never look like a clean end of file.
        self._proc = subprocess.Popen(
            cmd,
            stdin=child_stdin() if is_stdin(self.uri) else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._feed = feed_child(self._proc) if is_stdin(self.uri) else StdioLink()
        self._stderr_thread = threading.Thread(
            target=_drain_stderr,
            args=(self._proc, header, header_done, tail, problems, self._stop),
            name="ffmpeg-stderr",
            daemon=True,
        )
        self._stderr_thread.start()
        try:
            while not header_done.wait(0.05):  # a short wait keeps Ctrl-C responsive
                pass
            self.info = self._parse_header()
        except BaseException:
            self.close()
            raise

    def _input_args(self) -> list[str]:
        """ffmpeg's input: ``fd:`` (its stdin: seekable when a file is redirected) for ``-``,
        the V4L2 device for a camera, else the path or URL as given."""
        if is_stdin(self.uri):
            return ["-i", "fd:"]
        if is_camera(self.uri):
            return ["-f", "v4l2", "-i", self.uri]
        return ["-i", self.uri]

    def _parse_header(self) -> SourceInfo:
        inputs = [t for t in self._header if "Video:" in t and "Stream #0:" in t]
        out_line = next((t for t in reversed(inputs) if "rawvideo (I420" in t or "rawvideo (RGB" in t), None)
        if out_line is None:  # ffmpeg ended (or is ending) without an output stream
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # still running: never wait on a decoder nobody reads
                pass
            self._stderr_thread.join(timeout=5)  # every message read, for the error below
            self.close()
            raise InputError(f"{self.uri}: {self._open_error()}")
        in_line = inputs[0]
        pix = _PIX_FMT_RE.search(in_line)
        self._plain_yuv420 = bool(pix) and pix.group(1) == "yuv420p" and not (pix.group(2) or "").startswith("pc")
        size = _SIZE_RE.search(out_line)
        if size is None:
            raise InputError(f"{self.uri}: cannot read the frame size from ffmpeg's header")
        width, height = int(size.group(1)), int(size.group(2))
        self._input_rates = _stream_rates(in_line)
        # the rate frames come out at: ours when given (exact), else the one ffmpeg announces
        # for its output stream (what -fps_mode cfr resamples to)
        fps = self._rate or _stream_rates(out_line).get("fps")
        if fps is None:  # not announced: the input's average rate, else its guessed one
            fps = self._input_rates.get("fps") or self._input_rates.get("tbr")
        duration = None
        for t in self._header:
            d = _DURATION_RE.search(t)
            if d:
                duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3))
                break
        frames = round(duration * float(fps)) if duration and fps else None
        has_audio = any("Stream #0:" in t and "Audio:" in t for t in self._header)
        codec = _CODEC_RE.search(in_line)
        return SourceInfo(
            uri=self.uri, kind="video", width=width, height=height, fps=fps, frame_count=frames,
            has_audio=has_audio, codec=codec.group(1) if codec else None,
            # ffmpeg prints the tagged matrix with the pixel format, e.g. "yuv420p(tv, bt709)"
            matrix=("bt709" if "bt709" in in_line else "bt601") if self.yuv else None, live=self.live,
        )  # fmt: skip

    def _open_error(self) -> str:
        """Turn ffmpeg's complaint about an input it could not open into one phrase."""
        text = " ".join(self.problems)
        cuda = gpu_line(self.problems) if self.hw_decode is not None else None
        if cuda is not None:
            return f"GPU decoding (NVDEC, -hwaccel cuda) could not start: {cuda}"
        if "misdetection possible" in " ".join(self._tail):  # ffmpeg guessed a format from noise
            return "not a video ffmpeg can read (invalid data)"
        if "matches no streams" in text:
            return "no video stream (an audio-only or empty file?)"
        if "moov atom not found" in text:
            return "truncated or unfinished mp4/mov (moov atom not found)"
        if any("Video:" in t for t in self._header):  # opened, but not one frame decoded
            first = self.problems[0] if self.problems else "no message"
            return f"no frame could be decoded (corrupt or truncated video?): {first}"
        for p in reversed(self.problems):
            m = re.search(r"Error opening input files?: (.*)$", p)
            if m:
                reason = m.group(1).strip()
                if "Invalid data" in reason:
                    return "not a video ffmpeg can read (invalid data)"
                return reason[0].lower() + reason[1:] if reason else "ffmpeg cannot open it"
        return self.problems[-1] if self.problems else "ffmpeg cannot open it"

    def __iter__(self) -> Iterator[Frame]:
        w, h = self.info.width, self.info.height
        nbytes = YUV420.nbytes(h, w) if self.yuv else w * h * 3
        stdout = self._proc.stdout
        assert stdout is not None
        index = 0
        while True:
            image = np.empty(nbytes if self.yuv else (h, w, 3), dtype=np.uint8)
            view = memoryview(image.reshape(-1))
            got = 0
            while got < nbytes:
                n = stdout.readinto(view[got:])
                if not n:
                    break
                got += n
            if got < nbytes:
                if got and not self._stop.is_set():
                    self.problems.append(f"stream ended inside frame {index}")
                break
            name = f"{index:0{self._name_digits}d}"
            if self.yuv:
                yield Frame(index, name, yuv=YUV420(image, h, w, self.info.matrix or "bt601"))
            else:
                yield Frame(index, name, image)
            index += 1
        rc = self._proc.wait()
        self._stderr_thread.join(timeout=5)
        if rc != 0 and not self._stop.is_set() and not self.problems:
            self.problems.append(f"ffmpeg exited with status {rc}")

    def close(self) -> None:
        """Stop decoding (safe to call twice, from any thread)."""
        if self._proc.poll() is None:
            self._stop.set()
            self._proc.kill()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except (OSError, ValueError):  # closing while another thread reads it
                    pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - kill did not take
            pass

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        # A reader nobody can reach any more (e.g. only its first frame was taken) stops its
        # decoder, which would otherwise block on a full pipe until the program ends.
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to tell
                self.close()


def open_source(
    spec: str | Path, *, yuv: bool = False, hw_decode: int | None = None
) -> VideoReader | FrameFolderReader:
    """Open an input: a URL or video file (via ffmpeg) or a folder of frames. ``yuv``: videos
    yield YUV 4:2:0 frames (folders always yield RGB). ``hw_decode``: see :class:`VideoReader`.

    Raises InputError for a missing path, an empty folder, or anything ffmpeg cannot open.
    """
    text = str(spec)
    if is_url(text) or is_live(text):
        return VideoReader(text, yuv=yuv, hw_decode=hw_decode)
    path = Path(text)
    if path.is_dir():
        return FrameFolderReader(path)
    if not path.exists():
        raise InputError(f"{text}: no such file or folder", hint=_flag_value_hint(text))
    if not path.is_file():
        raise InputError(f"{text}: not a file or folder")
    return VideoReader(text, yuv=yuv, hw_decode=hw_decode)


def _flag_value_hint(text: str) -> str | None:
    """`--legend true` reads "true" as an input: say that flags take no value."""
    if text.lower() in ("true", "false", "yes", "no", "on", "off"):
        return f"a flag takes no value: --legend, not --legend {text}"
    return None
