"""The ffmpeg binary and how to read its error log.

The one place that knows where ffmpeg lives, so the reader, the writer and the GPU probes
(:mod:`tdnet_cli.video.hw`) all depend on this module and never on each other.
"""

from __future__ import annotations

import re

__all__ = ["ffmpeg_exe", "gpu_error", "gpu_line"]


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (or IMAGEIO_FFMPEG_EXE)."""
    import imageio_ffmpeg  # imported lazily: it probes the filesystem on first use

    return imageio_ffmpeg.get_ffmpeg_exe()


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
