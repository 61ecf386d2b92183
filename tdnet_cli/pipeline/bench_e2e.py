"""`bench --source`: the real `segment` pipeline on a video, with where its time and cores go.

Split from :mod:`tdnet_cli.pipeline.bench` (model-only figures), which adds this
breakdown to its report when given a source.
"""

from __future__ import annotations

import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tdnet_cli.errors import UsageError
from tdnet_cli.inference import Predictor
from tdnet_cli.pipeline.options import SegmentOptions
from tdnet_cli.pipeline.segment import segment
from tdnet_cli.pipeline.stream import model_gpu
from tdnet_cli.render import Renderer
from tdnet_cli.video import DEFAULT_FOLDER_FPS, Encoding, VideoWriter, open_source
from tdnet_cli.video.hw import hardware_video

__all__ = ["CPU_GROUPS", "CpuSampler", "bench_end_to_end"]

ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


# Which part of the pipeline each of segment's threads does (see pipeline/stream.py).
CPU_GROUPS = ("model", "read + preprocess", "postprocess + render + write", "helper threads", "ffmpeg")


def _cpu_group(name: str | None) -> str | None:
    if name is None:
        return "helper threads"  # no Python name: torch's and OpenCV's own worker pools
    if name == "MainThread" or name.startswith("tdnet-encode"):
        return "model"  # the model loop, and the encode-ahead pool
    if name.startswith("tdnet-reader"):
        return "read + preprocess"
    if name.startswith(("tdnet-writer", "tdnet-render", "png")):
        return "postprocess + render + write"
    if name == "tdnet-cpu-sampler":
        return None
    return "helper threads"  # e.g. the decoder's stderr reader


class CpuSampler:
    """CPU seconds of this process's threads while a pipeline runs, grouped by what each
    thread does (:data:`CPU_GROUPS`), plus the ffmpeg processes that ended meanwhile.

    Linux only (thread clocks from /proc/self/task); elsewhere :meth:`groups` is None.
    Threads come and go during a run, so they are sampled every ``interval`` seconds and
    each one's last reading is kept: a thread's final few milliseconds may be missed.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._names: dict[int, str] = {}
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tdnet-cpu-sampler", daemon=True)
        self._children = 0.0
        self.available = os.path.isdir("/proc/self/task")

    def _read(self) -> dict[int, float]:
        out = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime
        return out

    def _sample(self) -> None:
        for t in threading.enumerate():
            if t.native_id is not None:
                self._names[t.native_id] = t.name
        self._last.update(self._read())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CpuSampler:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children = kids.ru_utime + kids.ru_stime
        if self.available:
            self._start = self._read()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children = kids.ru_utime + kids.ru_stime - self._children
        if self.available:
            self._stop.set()
            self._thread.join()
            self._sample()

    def groups(self) -> dict[str, float] | None:
        """CPU seconds per group (every group present, 0 if unused); None off Linux."""
        if not self.available:
            return None
        out = dict.fromkeys(CPU_GROUPS, 0.0)
        for tid, seconds in self._last.items():
            group = _cpu_group(self._names.get(tid))
            if group is not None:
                out[group] += seconds - self._start.get(tid, 0.0)
        out["ffmpeg"] = self._children
        return out


def _decode_pass(
    source: str, *, decode_yuv: bool, decode_gpu: int | None, render: Renderer | None, classes: int
) -> tuple[int, float, float]:
    """Decode ``source`` (and with ``render``, render and write a fixed label map onto each
    frame): (frames, seconds, seconds of which rendering)."""
    src = open_source(source, yuv=decode_yuv, hw_decode=decode_gpu)
    t0, n, t_render, labels = time.perf_counter(), 0, 0.0, None
    try:
        for frame in src:
            if render is not None:
                if labels is None:  # vertical bands of every class: a busy overlay
                    h, w = frame.size
                    bands = (np.arange(w) * classes // w).astype(np.uint8)
                    labels = np.ascontiguousarray(np.broadcast_to(bands, (h, w)))
                t1 = time.perf_counter()
                done = render.prepare(frame, labels)
                t_render += time.perf_counter() - t1
                render.emit(frame, labels, done)
            n += 1
    finally:
        src.close()
    if render is not None:
        for writer in render.writers.values():
            writer.close()
    return n, time.perf_counter() - t0, t_render


def bench_end_to_end(
    pred: Predictor,
    source: str,
    *,
    save: tuple[str, ...] = ("overlay",),
    encoding: Encoding = Encoding(),
    hw_decode: bool = False,
    progress: ProgressFn | None = None,
    decode_yuv: bool = True,
) -> dict:
    """The real `segment` pipeline on ``source``, with a per-stage breakdown.

    Three passes over the same input: decode alone; decode + render + encode alone (the
    overlay of a fixed label map colourised, blended and written, no model); then `segment`
    itself, whose predictor times its preprocess / model / postprocess stages (wall time
    inside the pipeline, summed over the threads that run them, so waits for a busy core
    count). Decode, render and encode costs come from the first two passes: what each costs
    on its own. The last pass also reads every thread's CPU clock (``cpu_ms_per_frame``,
    :class:`CpuSampler`): where the cores really went while the stages overlapped, and the
    share of it outside the model. ``encoding``/``hw_decode``: as `segment` takes them
    (NVENC, NVDEC). ``decode_yuv=False`` times the RGB route instead.
    """
    gpu_encoding, decode_gpu = hardware_video(encoding, hw_decode=hw_decode, gpu=model_gpu(pred.device))

    def decode_pass(render: Renderer | None = None) -> tuple[int, float, float]:
        return _decode_pass(
            source, decode_yuv=decode_yuv, decode_gpu=decode_gpu, render=render, classes=len(pred.classes)
        )

    with tempfile.TemporaryDirectory(prefix="tdnet-bench-") as tmp:
        n_dec, t_dec, _ = decode_pass()
        if progress:
            progress("decode", 1, 3)
        src = open_source(source, yuv=decode_yuv)
        info = src.info
        src.close()
        writer = VideoWriter(
            Path(tmp) / "encode.mp4",
            info.width,
            info.height,
            info.fps or DEFAULT_FOLDER_FPS,
            encoding=gpu_encoding,
            matrix=info.matrix or "bt601",
        )
        render = Renderer({"overlay": writer}, pred.palette, pred.classes, alpha=0.5, legend=False)
        _, t_dec_enc, t_render = decode_pass(render)
        if progress:
            progress("encode", 2, 3)
        pred.stage_seconds = {k: 0.0 for k in pred.stage_seconds}
        with CpuSampler() as cpu:
            options = SegmentOptions(
                save=tuple(save),
                out_dir=Path(tmp),
                overwrite=True,
                encoding=encoding,
                hw_decode=hw_decode,
                decode_yuv=decode_yuv,
            )
            report = segment([source], predictor=pred, options=options)
        if progress:
            progress("segment", 3, 3)
    result = report.results[0]
    if result.status != "ok":
        raise UsageError(f"segment failed on {source}: {result.error}")
    frames = result.frames
    stages = {
        "decode": t_dec,
        "render": t_render,
        "encode": max(t_dec_enc - t_dec - t_render, 0.0),
        **pred.stage_seconds,
    }
    per_frame_ms = {k: 1000.0 * v / max(frames, 1) for k, v in stages.items()}
    cpu_s = cpu.groups()
    cpu_ms = None if cpu_s is None else {k: 1000.0 * v / max(frames, 1) for k, v in cpu_s.items()}
    cpu_total = sum(cpu_s.values()) if cpu_s else 0.0
    return {
        "input": source,
        "size": [info.height, info.width],
        "frames": frames,
        "decoded_frames": n_dec,
        "save": list(save),
        "encoder": encoding.encoder,
        "x264_preset": encoding.preset,
        "crf": encoding.crf,
        "decode": "yuv420p" if decode_yuv else "rgb24",
        "hw_decode": hw_decode,
        "wall_s": result.seconds,
        "fps": frames / result.seconds if result.seconds else 0.0,
        "model_stage_fps": frames / stages["model"] if stages["model"] else 0.0,
        "stage_ms_per_frame": per_frame_ms,
        # CPU time in the pipeline, by thread (None off Linux): what the cores really spent
        "cpu_ms_per_frame": cpu_ms,
        "cpu_outside_model_share": 1.0 - cpu_s["model"] / cpu_total if cpu_total > 0 else None,
        "cores_busy": cpu_total / result.seconds if cpu_s and result.seconds else None,
        "threads": result.threads,
    }
