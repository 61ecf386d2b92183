"""Whether ffmpeg's NVIDIA video engines work here: NVDEC decoding, NVENC encoding.

The bundled ffmpeg is built with both, but they need an NVIDIA driver and a GPU that has
the engine (data-centre GPUs such as the H100 have NVDEC but no NVENC). ffmpeg only
finds out when it opens the device, and then fails instead of falling back, so each is
tried once per process on a few tiny frames before a run relies on it.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from pathlib import Path

from tdnet_cli.errors import UsageError
from tdnet_cli.video.reader import ffmpeg_exe

__all__ = ["gpu_error", "gpu_line", "nvdec_problem", "nvenc_problem", "require_nvdec", "require_nvenc"]

_PROBE_TIMEOUT_S = 60  # a cold CUDA context can take seconds; a hang must not stall a run
_TEST_SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=256x128:rate=10", "-frames:v", "3"]


def _run(args: list[str]) -> str | None:
    """None if ffmpeg succeeds, else the line of its log that says why (:func:`gpu_error`)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"ffmpeg did not finish a 3-frame test in {_PROBE_TIMEOUT_S} s"
    if proc.returncode == 0:
        return None
    return gpu_error(proc.stderr.decode("utf-8", "replace")) or f"ffmpeg exited with status {proc.returncode}"


def gpu_line(lines: list[str]) -> str | None:
    """The first of ffmpeg's messages about CUDA, NVENC or NVDEC (e.g. "Cannot load
    libcuda.so.1": the lines after it are consequences), or None."""
    return next((line for line in lines if any(k in line.lower() for k in ("cuda", "nvenc", "nvdec", "cuvid"))), None)


def gpu_error(log: str) -> str:
    """The line of an ffmpeg error log that says why a GPU job failed (:func:`gpu_line`), else
    the last line; without ffmpeg's "[component @ 0x...]" prefix."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    cause = gpu_line(lines) or (lines[-1] if lines else "")
    return re.sub(r"^(\[[^\]]*@ 0x[0-9a-f]+\] ?)+", "", cause)


@functools.lru_cache(maxsize=8)
def nvenc_problem(gpu: int | None = None) -> str | None:
    """None if h264_nvenc can encode on ``gpu`` (None: the driver's choice), else why not."""
    return _run([*_TEST_SOURCE, "-c:v", "h264_nvenc", *(["-gpu", str(gpu)] if gpu is not None else []),
                 "-f", "null", "-"])


@functools.lru_cache(maxsize=8)
def nvdec_problem(gpu: int = 0) -> str | None:
    """None if ffmpeg can decode H.264 with ``-hwaccel cuda`` on ``gpu``, else why not."""
    with tempfile.TemporaryDirectory(prefix="tdnet-nvdec-") as tmp:
        clip = str(Path(tmp) / "probe.mp4")
        made = _run([*_TEST_SOURCE, "-c:v", "libx264", "-pix_fmt", "yuv420p", clip])
        if made is not None:
            return f"could not make a test clip: {made}"
        return _run(["-hwaccel", "cuda", "-hwaccel_device", str(gpu), "-i", clip, "-f", "null", "-"])


def require_nvenc(gpu: int | None = None) -> None:
    """A usage error naming the cause when NVENC cannot encode here."""
    problem = nvenc_problem(gpu)
    if problem is not None:
        raise UsageError(f"NVENC (--encoder nvenc) does not work here: {problem}",
                         hint="use --encoder x264, the CPU encoder")


def require_nvdec(gpu: int = 0) -> None:
    """A usage error naming the cause when NVDEC cannot decode here."""
    problem = nvdec_problem(gpu)
    if problem is not None:
        raise UsageError(f"NVDEC (--hw-decode) does not work here: {problem}", hint="drop --hw-decode")
