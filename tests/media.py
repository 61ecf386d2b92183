"""Test media made with the bundled ffmpeg: encoded clips, RGB frames encoded as given, probes."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np

from tdnet_cli.video import VideoReader, ffmpeg_exe

H, W = 64, 128


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make_clip(
    path: Path,
    frames: int = 10,
    *,
    size: str = f"{W}x{H}",
    rate: str = "25",
    audio: bool = False,
    extra: tuple[str, ...] = (),
) -> Path:
    """A libx264 testsrc clip (optionally with an AAC sine track)."""
    args = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-c:a", "aac", "-shortest"]
    ffmpeg(*args, "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", *extra, str(path))
    return path


def encode_rgb(path: Path, frames: list[np.ndarray], *, rate: str = "25", codec: tuple[str, ...] = ()) -> Path:
    """Encode numpy RGB frames; the default codec is lossless RGB H.264."""
    h, w = frames[0].shape[:2]
    codec = codec or ("-c:v", "libx264rgb", "-qp", "0", "-pix_fmt", "rgb24")
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{w}x{h}",
        "-framerate",
        rate,
        "-i",
        "-",
        *codec,
        str(path),
    ]
    subprocess.run(cmd, input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), check=True)
    return path


def probe(path: Path) -> tuple[int, int, int, Fraction | None, bool]:
    """(frames, width, height, fps, has_audio) as ffmpeg decodes the file."""
    with VideoReader(str(path)) as r:
        n = sum(1 for _ in r)
        return n, r.info.width, r.info.height, r.info.fps, r.info.has_audio
