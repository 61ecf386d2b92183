"""Whether ffmpeg's NVIDIA video engines work here (NVDEC decoding, NVENC encoding), and where.

The bundled ffmpeg is built with both, but they need an NVIDIA driver and a GPU that has
the engine (data-centre GPUs such as the H100 have NVDEC but no NVENC). ffmpeg only
finds out when it opens the device, and then fails instead of falling back, so each is
tried once per process on a few tiny frames before a run relies on it.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from tdnet_cli.errors import UsageError
from tdnet_cli.video.ffmpeg import ffmpeg_exe, gpu_error
from tdnet_cli.video.writer import Encoding

__all__ = ["hardware_video", "nvdec_problem", "nvenc_problem", "require_nvdec", "require_nvenc"]

_PROBE_TIMEOUT_S = 60  # a cold CUDA context can take seconds; a hang must not stall a run
_TEST_SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=256x128:rate=10", "-frames:v", "3"]


def _run(args: list[str]) -> str | None:
    """None if ffmpeg succeeds, else the line of its log that says why (:func:`gpu_error`)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"ffmpeg did not finish a 3-frame test in {_PROBE_TIMEOUT_S} s"
    if proc.returncode == 0:
        return None
    return gpu_error(proc.stderr.decode("utf-8", "replace")) or f"ffmpeg exited with status {proc.returncode}"


@functools.lru_cache(maxsize=8)
def nvenc_problem(gpu: int | None = None) -> str | None:
    """None if h264_nvenc can encode on ``gpu`` (None: the driver's choice), else why not."""
    return _run(
        [*_TEST_SOURCE, "-c:v", "h264_nvenc", *(["-gpu", str(gpu)] if gpu is not None else []), "-f", "null", "-"]
    )


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
        raise UsageError(
            f"NVENC (--encoder nvenc) does not work here: {problem}", hint="use --encoder x264, the CPU encoder"
        )


def require_nvdec(gpu: int = 0) -> None:
    """A usage error naming the cause when NVDEC cannot decode here."""
    problem = nvdec_problem(gpu)
    if problem is not None:
        raise UsageError(f"NVDEC (--hw-decode) does not work here: {problem}", hint="drop --hw-decode")


def hardware_video(encoding: Encoding, *, hw_decode: bool, gpu: int | None) -> tuple[Encoding, int | None]:
    """Place NVENC/NVDEC on ``gpu`` (the model's; None when it runs on the CPU: NVENC where
    the driver chooses, NVDEC on GPU 0) and try them: ``(encoding with its GPU, the GPU to
    decode on or None)``, or a usage error naming why one cannot work here."""
    if encoding.encoder == "nvenc":
        encoding = replace(encoding, gpu=gpu)
        require_nvenc(gpu)
    decode_gpu = (gpu or 0) if hw_decode else None
    if decode_gpu is not None:
        require_nvdec(decode_gpu)
    return encoding, decode_gpu
