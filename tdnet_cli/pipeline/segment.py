"""The `segment` pipeline: inputs (videos, URLs, frame folders) -> overlays, colour maps, label PNGs.

Per input, three stages overlap so the end-to-end rate approaches the model's own:

    reader thread  --q(4)-->  model loop (caller's thread)  --q(4)-->  writer thread
    decode, cut test,         predictor.logits                         upsample + argmax,
    model input                                                        colourise, blend, encode/PNG

(A predictor with only ``segment`` — no ``prepare``/``logits``/``to_labels`` — runs all
three model stages in the model loop.)

Queues are bounded, so memory stays flat however long the video. Each input is its own
stream (fresh predictor state), and a detected hard cut resets it mid-stream. A bad
input is recorded as failed and the batch goes on. This module is core code: progress
is reported through :class:`ProgressHook`, never printed.
"""

from __future__ import annotations

import errno
import glob
import os
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlparse

import cv2
import numpy as np
import torch

from tdnet_cli.data.cityscapes import IGNORE_INDEX, palette_lut, train_id_to_label_id
from tdnet_cli.errors import InputError, OutputExistsError, TdnetError, UsageError
from tdnet_cli.progress import ProgressHook
from tdnet_cli.video import (
    VIDEO_SUFFIXES,
    Encoding,
    Frame,
    FrameSource,
    PngSequenceWriter,
    VideoWriter,
    is_url,
    natural_key,
    open_source,
)
from tdnet_cli.video.color import YUV420, rgb_to_i420, rgb_to_yuv
from tdnet_cli.video.hw import require_nvdec, require_nvenc
from tdnet_cli.video.writer import (
    is_partial_name,
    refuse_foreign,
    remove_stale_partials,
)

__all__ = [
    "SAVE_KINDS",
    "DEFAULT_FOLDER_FPS",
    "segment",
    "SegmentReport",
    "InputResult",
    "ProgressHook",
    "CutDetector",
    "Renderer",
    "expand_inputs",
    "is_tool_output",
    "read_list",
    "parse_shard",
    "resolve_shard",
    "select_shard",
    "device_for_rank",
    "hardware_video",
    "plan_outputs",
]

SAVE_KINDS = ("overlay", "color", "labels", "labelids")
DEFAULT_FOLDER_FPS = 17.0  # Cityscapes sequences were recorded at 17 Hz
QUEUE_SIZE = 4
ENCODE_WORKERS = 2  # frames encoded at once on the CPU (see _run_stream)


# --------------------------------------------------------------------------- results


@dataclass
class InputResult:
    """What happened to one input."""

    input: str
    status: str = "ok"  # "ok", "failed" or "skipped"
    frames: int = 0
    seconds: float = 0.0  # wall time for this input, open to last rename
    model_seconds: float = 0.0  # time inside predictor.segment
    cuts: int = 0  # scene cuts that reset the stream
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    threads: int | None = None  # torch CPU threads used (None on GPU)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def model_fps(self) -> float:
        return self.frames / self.model_seconds if self.model_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input, "status": self.status, "frames": self.frames,
            "seconds": round(self.seconds, 3), "fps": round(self.fps, 2), "model_fps": round(self.model_fps, 2),
            "cuts": self.cuts, "outputs": self.outputs, "error": self.error, "warnings": self.warnings,
            "threads": self.threads,
        }  # fmt: skip


@dataclass
class SegmentReport:
    """All inputs of one `segment` call."""

    results: list[InputResult] = field(default_factory=list)
    seconds: float = 0.0
    shard: tuple[int, int] | None = None

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.results)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def outputs(self) -> list[str]:
        return [o for r in self.results for o in r.outputs]

    @property
    def failures(self) -> list[InputResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "inputs": len(self.results),
            "succeeded": sum(r.status == "ok" for r in self.results),
            "failed": len(self.failures),
            "skipped": sum(r.status == "skipped" for r in self.results),
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "shard": list(self.shard) if self.shard else None,
            "outputs": self.outputs,
            "results": [r.to_dict() for r in self.results],
        }


# --------------------------------------------------------------------------- inputs and sharding


def read_list(path: str | Path) -> list[str]:
    """Input specs from a file, one per line (``-`` reads stdin); blank lines and ``#`` comments skipped."""
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read input list {path}: {exc.strerror or exc}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def is_tool_output(path: str | Path) -> bool:
    """Whether ``path`` is named like something ``segment`` writes: ``*.overlay.mp4``,
    ``*.color.mp4`` (any video suffix), ``*.color/``, ``*.labels/``, ``*.labelids/``, or one
    of our hidden temporaries."""
    path = Path(path)
    name = path.name.lower()
    if is_partial_name(path.name) is not None:
        return True
    if path.is_dir():
        return name.endswith((".color", ".labels", ".labelids"))
    return name.endswith(tuple(f".{kind}{suffix}" for kind in ("overlay", "color") for suffix in VIDEO_SUFFIXES))


def expand_inputs(items: Iterable[str | Path], skipped: list[str] | None = None) -> list[str]:
    """Expand globs (natural order), keep URLs and plain paths as given, drop repeats.

    A pattern that matches nothing is kept, so that it is reported as a failed input. What a
    pattern matches that this tool wrote (:func:`is_tool_output`) is left out, so that a
    second run over ``dir/*.mp4`` does not segment its own overlays; those are appended to
    ``skipped``. A path named one by one is always kept.
    """
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        text = str(item)
        if not is_url(text) and not os.path.exists(text) and glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True), key=natural_key)
            ours = [m for m in matches if is_tool_output(m)]
            if skipped is not None:
                skipped.extend(ours)
            expanded = [m for m in matches if m not in ours] if matches else [text]
        else:
            expanded = [text]
        for spec in expanded:
            if spec not in seen:
                seen.add(spec)
                out.append(spec)
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0-based i) -> (i, n)."""
    hint = "write it as INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4"
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UsageError(f"bad shard {text!r}", hint=hint) from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"bad shard {text!r}", hint=hint)
    return i, n


def resolve_shard(text: str | None, env: Mapping[str, str] = os.environ) -> tuple[int, int] | None:
    """``--shard`` if given, else torchrun's RANK/WORLD_SIZE when the world has several workers."""
    if text:
        return parse_shard(text)
    if "RANK" in env and "WORLD_SIZE" in env:
        try:
            rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        except ValueError:
            raise UsageError(f"bad RANK/WORLD_SIZE {env['RANK']!r}/{env['WORLD_SIZE']!r} in the environment") from None
        if world > 1:
            if not 0 <= rank < world:
                raise UsageError(f"RANK {rank} is outside WORLD_SIZE {world}")
            return rank, world
    return None


def select_shard(items: Sequence[str], shard: tuple[int, int] | None) -> list[str]:
    """Worker i of n takes items i, i+n, i+2n, ...: balanced and needs no coordination."""
    if shard is None:
        return list(items)
    i, n = shard
    return list(items[i::n])


def device_for_rank(device: str, env: Mapping[str, str] = os.environ) -> str:
    """Under torchrun, ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` so each worker gets its own GPU."""
    if "LOCAL_RANK" not in env or device not in ("auto", "cuda"):
        return device
    if device == "auto" and not torch.cuda.is_available():
        return device
    return f"cuda:{int(env['LOCAL_RANK'])}"


# --------------------------------------------------------------------------- output naming


def _input_name(spec: str) -> str:
    if is_url(spec):
        last = Path(urlparse(spec).path).stem
        return last or urlparse(spec).netloc.replace(":", "_") or "stream"
    path = Path(spec)
    if path.is_dir():
        return path.resolve().name or "frames"
    return path.stem or path.name


def plan_outputs(
    spec: str,
    save: Sequence[str],
    *,
    out_dir: str | Path | None = None,
    output: str | Path | None = None,
) -> dict[str, Path]:
    """Where each requested output of ``spec`` goes.

    ``NAME.overlay.mp4``, ``NAME.color.mp4`` (a ``NAME.color/`` PNG folder for frame-folder
    inputs), ``NAME.labels/`` and ``NAME.labelids/``, beside the input (URLs: the current
    folder) or under ``out_dir``. With ``output`` the first kind goes exactly there and the
    others beside it, named after it.
    """
    folder_input = not is_url(spec) and Path(spec).is_dir()
    if output is not None:
        output = Path(output)
        base = output.with_suffix("") if output.suffix.lower() in VIDEO_SUFFIXES else output
    else:
        if out_dir is not None:
            where = Path(out_dir)
        elif is_url(spec):
            where = Path.cwd()
        else:
            where = Path(spec).resolve().parent if folder_input else Path(spec).parent
        base = where / _input_name(spec)
    plans: dict[str, Path] = {}
    for i, kind in enumerate(save):
        is_video = kind == "overlay" or (kind == "color" and not folder_input)
        if output is not None and i == 0:
            path = output
            if is_video and path.suffix.lower() not in VIDEO_SUFFIXES:
                raise UsageError(f"-o {path}: the {kind} video needs a {'/'.join(VIDEO_SUFFIXES)} name")
            if not is_video and path.suffix.lower() in VIDEO_SUFFIXES:
                raise UsageError(f"-o {path}: {kind} is a folder of PNGs, not a video", hint="give a folder name")
        else:
            path = base.with_name(f"{base.name}.{kind}" + (".mp4" if is_video else ""))
        plans[kind] = path
    return plans


# --------------------------------------------------------------------------- scene cuts


class CutDetector:
    """Hard-cut test on a 64x32 grey thumbnail: mean absolute difference plus a histogram check.

    A cut is a large pixel change (``diff`` on a 0..255 scale) that also moves the grey
    histogram (L1 distance of 16-bin normalised histograms, 0..2), so fast camera motion
    (pixels move, histogram stays) is not a cut; or a very large change (``strong_diff``)
    on its own. Costs well under a millisecond per 2048x1024 frame.
    """

    def __init__(self, diff: float = 25.0, hist: float = 0.35, strong_diff: float = 50.0) -> None:
        self.diff, self.hist, self.strong_diff = diff, hist, strong_diff
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self._prev = None

    def __call__(self, image: np.ndarray | Frame) -> bool:
        """Feed the next frame (a Frame, or RGB pixels); True when it starts a new shot."""
        if isinstance(image, Frame):
            if image.yuv is not None:  # the luma plane is the grey image (limited range: stretch it)
                small = self._thumbnail(image.yuv.y)
                return self._feed(cv2.convertScaleAbs(small, alpha=255 / 219, beta=-16 * 255 / 219))
            image = image.image
        return self._feed(cv2.cvtColor(self._thumbnail(image), cv2.COLOR_RGB2GRAY))

    @staticmethod
    def _thumbnail(image: np.ndarray) -> np.ndarray:
        # strided subsampling first: INTER_AREA over a whole 2048x1024 frame cost ~2-5 ms
        step = max(1, min(image.shape[0] // 64, image.shape[1] // 128))
        return cv2.resize(np.ascontiguousarray(image[::step, ::step]), (64, 32), interpolation=cv2.INTER_AREA)

    def _feed(self, grey: np.ndarray) -> bool:
        hist = cv2.calcHist([grey], [0], None, [16], [0, 256]).ravel()
        hist /= max(float(hist.sum()), 1.0)
        prev, self._prev = self._prev, (grey, hist)
        if prev is None:
            return False
        mad = float(cv2.absdiff(grey, prev[0]).mean())
        hdist = float(np.abs(hist - prev[1]).sum())
        return mad > self.strong_diff or (mad > self.diff and hdist > self.hist)


# --------------------------------------------------------------------------- rendering (writer thread)


def _font_rows(height: int) -> tuple[int, float]:
    row = max(10, height // 36)
    return row, row / 28.0


class Renderer:
    """Turns (frame, labels) into every requested output, in the writer thread.

    Split in two so the pure computation (:meth:`prepare`: colourise, blend, YUV
    conversion) can run on several threads where cores are spare, while :meth:`emit`
    hands the results to the writers in frame order.

    Video outputs are made in YUV 4:2:0, the encoder's own format: the overlay of a YUV
    frame is blended on its planes (the palette converted once to the writer's colour
    matrix; chroma takes the label of each 2x2 block's top-left pixel), and the colour map
    is three table lookups. Only RGB frames (folders, odd sizes) take the RGB route.
    """

    def __init__(
        self,
        writers: dict[str, VideoWriter | PngSequenceWriter],
        palette: Sequence[tuple[int, int, int]],
        classes: Sequence[str],
        alpha: float,
        legend: bool,
    ) -> None:
        self.writers = writers
        self.lut = palette_lut(palette)
        # one single-channel table per colour plane: cv2.LUT + cv2.merge is ~15x numpy fancy indexing
        self.lut_r, self.lut_g, self.lut_b = (np.ascontiguousarray(self.lut[:, c]) for c in range(3))
        self._yuv_luts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.palette = [tuple(int(v) for v in c) for c in palette]
        self.classes = list(classes)
        self.alpha = alpha
        self.legend = legend

    def __call__(self, frame: Frame, labels: np.ndarray) -> None:
        self.emit(frame, labels, self.prepare(frame, labels))

    def prepare(self, frame: Frame, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Compute every output image of one frame (no IO; safe to run concurrently)."""
        w = self.writers
        done: dict[str, np.ndarray] = {}
        overlay, color = w.get("overlay"), w.get("color")
        if isinstance(overlay, VideoWriter):
            yuv = frame.yuv
            if yuv is not None and yuv.matrix == overlay.matrix and self._planar(overlay):
                done["overlay"] = self._overlay_yuv(yuv, labels, overlay.matrix)
            else:
                done["overlay"] = overlay.prepare(self._overlay_rgb(frame.image, labels))
        if isinstance(color, VideoWriter):
            if self._planar(color):
                done["color"] = self._labels_yuv(labels, color.matrix)
            else:
                done["color"] = color.prepare(self._colorize(labels))
        elif isinstance(color, PngSequenceWriter):
            done["color"] = cv2.merge((cv2.LUT(labels, self.lut_b), cv2.LUT(labels, self.lut_g),
                                       cv2.LUT(labels, self.lut_r)))  # BGR: what PNG writing takes
        if "labelids" in w:
            done["labelids"] = train_id_to_label_id(labels)
        return done

    def emit(self, frame: Frame, labels: np.ndarray, done: dict[str, np.ndarray]) -> None:
        """Hand one frame's outputs to the writers (call in frame order)."""
        for kind, writer in self.writers.items():
            if isinstance(writer, VideoWriter):
                writer.write_prepared(done[kind])
            else:
                writer.write(frame.name, labels if kind == "labels" else done[kind])

    # -- RGB -------------------------------------------------------------------------
    def _colorize(self, labels: np.ndarray) -> np.ndarray:
        return cv2.merge((cv2.LUT(labels, self.lut_r), cv2.LUT(labels, self.lut_g), cv2.LUT(labels, self.lut_b)))

    def _overlay_rgb(self, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = cv2.addWeighted(image, 1.0 - self.alpha, self._colorize(labels), self.alpha, 0.0)
        ignore = cv2.compare(labels, IGNORE_INDEX, cv2.CMP_EQ)
        if cv2.countNonZero(ignore):
            cv2.copyTo(image, ignore, out)  # ignored pixels show the frame unblended
        if self.legend:
            self._draw_legend(out, labels)
        return out

    # -- YUV 4:2:0 -------------------------------------------------------------------
    @staticmethod
    def _planar(writer: VideoWriter) -> bool:
        """Whether frames for ``writer`` can be made in YUV directly (4:2:0 needs even sides)."""
        return not (writer.width & 1 or writer.height & 1)

    def _luts_for(self, matrix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if matrix not in self._yuv_luts:  # a dict write of a finished value: safe across render threads
            yuv = rgb_to_yuv(self.lut, matrix)
            self._yuv_luts[matrix] = tuple(np.ascontiguousarray(yuv[:, c]) for c in range(3))
        return self._yuv_luts[matrix]

    def _labels_yuv(self, labels: np.ndarray, matrix: str) -> np.ndarray:
        ly, lu, lv = self._luts_for(matrix)
        out = YUV420.empty(*labels.shape, matrix)
        sub = np.ascontiguousarray(labels[::2, ::2])
        cv2.LUT(labels, ly, dst=out.y)
        cv2.LUT(sub, lu, dst=out.u)
        cv2.LUT(sub, lv, dst=out.v)
        return out.data

    def _overlay_yuv(self, frame: YUV420, labels: np.ndarray, matrix: str) -> np.ndarray:
        a = self.alpha
        ly, lu, lv = self._luts_for(matrix)
        out = YUV420.empty(*labels.shape, matrix)
        sub = np.ascontiguousarray(labels[::2, ::2])
        cv2.addWeighted(frame.y, 1.0 - a, cv2.LUT(labels, ly), a, 0.0, dst=out.y)
        cv2.addWeighted(frame.u, 1.0 - a, cv2.LUT(sub, lu), a, 0.0, dst=out.u)
        cv2.addWeighted(frame.v, 1.0 - a, cv2.LUT(sub, lv), a, 0.0, dst=out.v)
        ignore = cv2.compare(labels, IGNORE_INDEX, cv2.CMP_EQ)
        if cv2.countNonZero(ignore):  # ignored pixels show the frame unblended
            cv2.copyTo(frame.y, ignore, out.y)
            ignore_sub = np.ascontiguousarray(ignore[::2, ::2])
            cv2.copyTo(frame.u, ignore_sub, out.u)
            cv2.copyTo(frame.v, ignore_sub, out.v)
        if self.legend:
            self._draw_legend_yuv(out, labels)
        return out.data

    # -- legend ----------------------------------------------------------------------
    def _legend_layout(self, labels: np.ndarray, image_height: int):
        """(classes present, row height, font scale, padding, box width, box height), or None."""
        counts = cv2.calcHist([labels], [0], None, [256], [0, 256]).ravel()
        present = [i for i in range(min(len(self.classes), len(self.palette))) if counts[i] > 0]
        if not present:
            return None
        row, scale = _font_rows(image_height)
        pad = max(2, row // 4)
        width = pad * 3 + row + max(cv2.getTextSize(self.classes[i], cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
                                    for i in present)
        height = pad + len(present) * (row + pad)
        return present, row, scale, pad, width, height

    def _draw_legend(self, image: np.ndarray, labels: np.ndarray, layout=None) -> None:
        """Swatch + name of each class present in this frame, top-left, on a dimmed box."""
        layout = layout or self._legend_layout(labels, image.shape[0])
        if layout is None:
            return
        present, row, scale, pad, width, height = layout
        box = image[:height, :width]
        box[:] = (box.astype(np.uint16) * 2 // 5).astype(np.uint8)  # dim the background for legibility
        for k, i in enumerate(present):
            y = pad + k * (row + pad)
            cv2.rectangle(image, (pad, y), (pad + row - 1, y + row - 1), self.palette[i], thickness=-1)
            cv2.putText(image, self.classes[i], (2 * pad + row, y + row - max(1, row // 6)),
                        cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)

    def _draw_legend_yuv(self, frame: YUV420, labels: np.ndarray) -> None:
        """The legend on YUV planes: its corner is converted to RGB, drawn on, and converted back."""
        layout = self._legend_layout(labels, frame.height)
        if layout is None:
            return
        bh, bw = min(frame.height, layout[5] + (layout[5] & 1)), min(frame.width, layout[4] + (layout[4] & 1))
        corner = (frame.y[:bh, :bw], frame.u[: bh // 2, : bw // 2], frame.v[: bh // 2, : bw // 2])
        rgb = YUV420.from_planes(*corner, frame.matrix).to_rgb()
        self._draw_legend(rgb, labels, layout)
        drawn = YUV420(rgb_to_i420(rgb, frame.matrix).reshape(-1), bh, bw, frame.matrix)
        for plane, new in zip(corner, (drawn.y, drawn.u, drawn.v)):
            plane[:] = new


# --------------------------------------------------------------------------- CPU thread tuning


class _ThreadTuner:
    """Pick torch's CPU thread count by timing the whole pipeline, not the model alone.

    With few cores, decode/encode/colourise compete with the model: leaving a quarter of
    the cores to ffmpeg and the writer (one of two: PERF_NOTES measured 12.5 -> 20 fps)
    can beat all threads for a light model, and lose for a heavy one; on a busy shared
    machine all threads can be ten times slower. So: time a window of frames with the
    smaller count, then with all (stopping early if clearly worse), and keep the faster;
    the smaller count goes first because its worst case costs least.
    """

    def __init__(self, many: int, window: int, warmup: int) -> None:
        self.many, self.window, self.warmup, self.settle = many, window, warmup, 2
        self.few = max(1, many - max(1, many // 4))
        self.count = 0
        self.last: float | None = None
        self.times: dict[str, list[float]] = {"few": [], "many": []}
        self.choice: int | None = None

    @property
    def frames_needed(self) -> int:
        return self.warmup + 2 * self.window + self.settle

    @property
    def current(self) -> int:
        """The count the trial wants now (for threads that must apply it themselves)."""
        if self.choice is not None:
            return self.choice
        return self.many if self.count >= self.warmup + self.window else self.few

    def start(self) -> None:
        torch.set_num_threads(self.few)

    def tick(self) -> None:
        """Call once per frame, after the frame was handed to the writer."""
        if self.choice is not None:
            return
        now = time.perf_counter()
        dt, self.last = (None if self.last is None else now - self.last), now
        self.count += 1
        first_end = self.warmup + self.window
        if self.count <= self.warmup or dt is None:
            return
        if self.count <= first_end:
            self.times["few"].append(dt)
            if self.count == first_end:
                torch.set_num_threads(self.many)
            return
        base = float(np.median(self.times["few"]))
        # Oversubscribed cores can make all threads 10-20x slower (seen on a shared 2-core
        # machine): one such frame ends the trial at once, even while settling.
        disastrous = dt > 4 * base
        if self.count <= first_end + self.settle and not disastrous:
            return  # let the queues settle at the new speed
        many = self.times["many"]
        many.append(dt)
        clearly_worse = disastrous or (len(many) >= 2 and float(np.median(many)) > 1.5 * base)
        if len(many) >= self.window or clearly_worse:
            # ties go to fewer threads: they leave headroom for decode and encode
            self.choice = self.many if float(np.median(many)) < 0.95 * base else self.few
            torch.set_num_threads(self.choice)


# --------------------------------------------------------------------------- the per-input stream

_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Blocking put that gives up when ``stop`` is set (so no thread waits forever)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _read_loop(source: FrameSource, q: queue.Queue, stop: threading.Event, cuts: CutDetector | None,
               prepare: Callable[[Frame, bool], Any] | None = None) -> None:
    """Decode, test for cuts and (with ``prepare(frame, is_cut)``) start the model's input,
    ahead of the model."""
    try:
        for frame in source:
            is_cut = cuts(frame) if cuts is not None else False
            if not _put(q, (frame, is_cut, prepare(frame, is_cut) if prepare is not None else None), stop):
                return
        _put(q, _END, stop)
    except BaseException as exc:  # handed to the model loop, which raises it there
        _put(q, _Failed(exc), stop)


def _write_loop(
    q: queue.Queue, render: Renderer, abort: threading.Event, failed: list[BaseException], workers: int = 0,
    to_labels: Callable[[Frame, Any], np.ndarray] | None = None,
) -> None:
    """Render and write frames in order; with ``workers``, render up to that many frames at once.
    ``to_labels`` turns what the model loop queued (logits) into the frame's labels first."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="tdnet-render") if workers > 1 else None
    pending: deque[tuple[Frame, np.ndarray, Future]] = deque()
    try:
        while True:
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                if abort.is_set():
                    return
                continue
            if abort.is_set():
                return
            end = item is _END
            if failed:
                if end:
                    return
                continue  # keep draining so the model loop never blocks on a full queue
            try:
                if not end and to_labels is not None:
                    item = (item[0], to_labels(*item))
                if pool is None:
                    if not end:
                        render(*item)
                else:
                    if not end:
                        pending.append((item[0], item[1], pool.submit(render.prepare, *item)))
                    while pending and (end or len(pending) >= workers):
                        frame, labels, fut = pending.popleft()
                        render.emit(frame, labels, fut.result())
            except BaseException as exc:
                failed.append(exc)
            if end:
                return
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _StreamStats:
    frames: int = 0
    model_seconds: float = 0.0
    cuts: int = 0


def _run_stream(
    source: FrameSource,
    predictor: Any,
    render: Renderer,
    *,
    cut_detect: bool,
    hook: ProgressHook,
    tuner: _ThreadTuner | None,
    queue_size: int = QUEUE_SIZE,
) -> _StreamStats:
    """Reader thread -> model loop (here) -> writer thread, for one input."""
    stats = _StreamStats()
    state = predictor.new_stream(batch=1)
    model_size = getattr(predictor, "input_size", None)
    # A predictor that splits logits from labels gets its upsample + argmax run in the writer
    # thread, beside the next frame's model step, instead of after it in this loop.
    split = all(callable(getattr(predictor, name, None)) for name in ("prepare", "logits", "to_labels"))

    def model_input(frame: Frame) -> np.ndarray:
        # a YUV frame gives the model its small RGB input straight from the planes
        return frame.rgb(model_size) if frame.yuv is not None and model_size is not None else frame.image

    # Encoding ahead: the state-free bulk of each TDNet step (Predictor.encode) runs on a small
    # pool, several frames at once, while this loop applies the memory in frame order
    # (Predictor.finish). On 2 cores a td4-mini step is ~30 ms encode + ~6 ms finish on one
    # thread, and one thread per frame beats two threads on one frame (docs/benchmarks.md).
    ahead = split and bool(getattr(predictor, "encodes_ahead", False))
    encoder = ThreadPoolExecutor(ENCODE_WORKERS, thread_name_prefix="tdnet-encode") if ahead else None
    since_reset = 0  # frames since the last reset, as the reader sees them: gives each frame's path

    pool_threads = threading.local()

    def encode(x: torch.Tensor, path: int):
        # torch.set_num_threads reaches only the calling thread once that thread has run
        # an op (measured: a pool thread kept 2 after the main thread set 1), so pool
        # threads follow the tuner's trial themselves.
        if tuner is not None and getattr(pool_threads, "n", None) != tuner.current:
            pool_threads.n = tuner.current
            torch.set_num_threads(pool_threads.n)
        return predictor.encode(x, path)

    def prepare(frame: Frame, is_cut: bool) -> torch.Tensor | Future:
        nonlocal since_reset
        x = predictor.prepare(model_input(frame)[None])
        if encoder is None:
            return x
        if is_cut:  # the model loop resets the stream at this frame, so its path is 0
            since_reset = 0
        path, since_reset = since_reset % predictor.num_paths, since_reset + 1
        return encoder.submit(encode, x, path)

    def to_labels(frame: Frame, logits: torch.Tensor) -> np.ndarray:
        labels = predictor.to_labels(logits, frame.size)[0]
        _check_labels(labels, frame)
        return labels

    q_in: queue.Queue = queue.Queue(queue_size)
    q_out: queue.Queue = queue.Queue(queue_size)
    stop, abort = threading.Event(), threading.Event()
    write_failed: list[BaseException] = []
    reader = threading.Thread(
        target=_read_loop, args=(source, q_in, stop, CutDetector() if cut_detect else None, prepare if split else None),
        name="tdnet-reader", daemon=True,
    )  # fmt: skip
    writer = threading.Thread(target=_write_loop, name="tdnet-writer", daemon=True,
                              args=(q_out, render, abort, write_failed, _spare_workers(), to_labels if split else None))
    if tuner is not None:
        tuner.start()
    reader.start()
    writer.start()
    clean = False
    try:
        while True:
            try:
                item = q_in.get(timeout=0.1)
            except queue.Empty:
                if write_failed:
                    raise write_failed[0]
                continue
            if item is _END:
                break
            if isinstance(item, _Failed):
                raise item.exc
            frame, is_cut, x = item
            if is_cut and stats.frames:
                predictor.reset(state)  # TDNet's memory must not carry over a hard cut
                stats.cuts += 1
            t0 = time.perf_counter()
            if isinstance(x, Future):
                result = predictor.finish(x.result(), state)
            elif split:
                result = predictor.logits(x, state)
            else:
                result = predictor.segment(model_input(frame), state, size=frame.size)
                _check_labels(result, frame)
            stats.model_seconds += time.perf_counter() - t0
            _put(q_out, (frame, result), abort)  # the writer keeps draining even after a failure
            if write_failed:
                raise write_failed[0]
            stats.frames += 1
            hook.advance(1)
            if tuner is not None:
                tuner.tick()
        _put(q_out, _END, abort)
        writer.join()
        if write_failed:
            raise write_failed[0]
        clean = True
    finally:
        stop.set()
        if not clean:
            abort.set()
            source.close()  # kills the decoder, so the reader thread wakes up and leaves
        reader.join(timeout=10)
        writer.join(timeout=10)
        if encoder is not None:
            encoder.shutdown(wait=True, cancel_futures=True)
    return stats


def _check_labels(labels: np.ndarray, frame: Frame) -> None:
    if labels.shape != frame.size or labels.dtype != np.uint8:
        raise TdnetError(f"the predictor returned {labels.dtype} {labels.shape} labels for a {frame.size} frame")


# --------------------------------------------------------------------------- the public entry point


def _open_writers(
    plans: dict[str, Path], source: FrameSource, *, fps: float | None, overwrite: bool,
    encoding: Encoding = Encoding(), into: bool = False,
) -> dict[str, VideoWriter | PngSequenceWriter]:
    info = source.info
    rate = info.fps if info.fps else Fraction(fps or DEFAULT_FOLDER_FPS).limit_denominator(1001)
    writers: dict[str, VideoWriter | PngSequenceWriter] = {}
    try:
        for kind, path in plans.items():
            if _is_video(kind, path):
                audio = info.uri if (kind == "overlay" and info.has_audio) else None
                # YUV frames keep their own colour matrix (blended in place); RGB ones get BT.601
                writers[kind] = VideoWriter(path, info.width, info.height, rate, audio_from=audio, overwrite=overwrite,
                                            encoding=encoding, matrix=info.matrix or "bt601")
            else:
                # the manifest lets a later --overwrite tell this folder from one holding other files
                writers[kind] = PngSequenceWriter(path, overwrite=overwrite, workers=_spare_workers(), manifest=True,
                                                  into=into)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    return writers


def _spare_workers() -> int:
    """Extra threads for rendering and for each PNG output: none on small machines, where
    the cores belong to the model; up to 4 where there are many (GPU hosts)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(4, cores // 4)


def _check_out_dir(out_dir: Path, option: str = "--out-dir") -> None:
    """``out_dir`` exists (made if needed) and is writable; ``option`` is what the user passed."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {out_dir} (of {option}): {exc.strerror or exc}",
                         hint=f"choose a writable {option}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {out_dir} (of {option}) is not writable", hint=f"choose a writable {option}")


def _is_video(kind: str, path: Path) -> bool:
    return kind in ("overlay", "color") and path.suffix.lower() in VIDEO_SUFFIXES


def _check_plans(
    specs: Sequence[str], save: Sequence[str], *, out_dir: str | Path | None, output: str | Path | None,
    overwrite: bool, into_folder: bool,
) -> dict[Path, set[str]]:
    """Refuse, before anything is written, an output that is an input (same path, a symlink or
    hard link to it, the input frame folder, or a PNG folder holding an input: a usage error
    with or without --overwrite), and an --overwrite that would replace what tdnet did not
    write. Returns the folders the outputs go to, with the output names in each."""
    inputs: dict[tuple[int, int], str] = {}
    parents: dict[Path, str] = {}
    for spec in specs:
        if is_url(spec):
            continue
        try:
            st = os.stat(spec)
        except OSError:
            continue  # a missing input fails on its own
        inputs[(st.st_dev, st.st_ino)] = spec
        parents[Path(spec).resolve().parent] = spec
    folders: dict[Path, set[str]] = {}
    for spec in specs:
        for kind, path in plan_outputs(spec, save, out_dir=out_dir, output=output).items():
            folders.setdefault(path.parent, set()).add(path.name)
            try:
                st = os.stat(path)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) in inputs:
                raise UsageError(f"the {kind} output {path} is the input {inputs[(st.st_dev, st.st_ino)]}",
                                 hint="choose another output: an input is never written over")
            if _is_video(kind, path):
                if overwrite and path.is_dir():
                    raise OutputExistsError(f"{path} is a folder, not a video: --overwrite replaces only files",
                                            hint="choose another output name")
                continue
            holder = parents.get(path.resolve())
            if holder is not None:
                raise UsageError(f"the {kind} folder {path} holds the input {holder}",
                                 hint="write the PNGs to a folder of their own")
            if overwrite and not into_folder and path.is_dir():
                refuse_foreign(path)
    return folders


def segment(
    inputs: Sequence[str | Path],
    *,
    predictor: Any,
    save: Sequence[str] = ("overlay",),
    out_dir: str | Path | None = None,
    output: str | Path | None = None,
    alpha: float = 0.5,
    legend: bool = False,
    overwrite: bool = False,
    skip_existing: bool = False,
    into_folder: bool = False,
    cut_detect: bool = True,
    shard: tuple[int, int] | str | None = None,
    progress: ProgressHook | None = None,
    fps: float | None = None,
    threads: int | None = None,
    x264_preset: str = "veryfast",
    crf: int = 20,
    encoder: str = "x264",
    hw_decode: bool = False,
    decode_yuv: bool = True,
) -> SegmentReport:
    """Segment every input (paths, globs, URLs, frame folders) with ``predictor``.

    ``save``: any of :data:`SAVE_KINDS`. ``fps``: output rate for frame-folder inputs
    (default 17). ``threads``: torch CPU threads in all; None times three quarters of the
    default count (1 of 2) against all of it on the first long input and keeps the faster
    (CPU only). A CPU TDNet encodes two frames at once, each with half of them. ``shard``: ``(i, n)`` or
    ``"i/n"`` takes inputs ``i::n`` after glob expansion. ``x264_preset``/``crf``: how video
    outputs are encoded (faster presets trade file size for CPU time); ``encoder="nvenc"``
    encodes them on the GPU instead (see :class:`Encoding`). ``hw_decode``: decode videos on
    the GPU (NVDEC; the model's GPU, else GPU 0). Both are tried on a few frames first, and
    a usage error says why when they cannot work here. ``decode_yuv=False`` decodes videos
    to RGB instead of YUV 4:2:0 (the slower route; kept for comparisons).

    ``overwrite`` replaces existing outputs, but a PNG folder only when every entry in it is
    a file an earlier run recorded writing there (its hidden ``.tdnet-output.json``); folders
    from before that record, or holding anything else, need ``into_folder``: our PNGs go into
    the existing folder, replacing same-named files and leaving every other entry alone. An
    output that is an input is refused whatever the options.

    Raises TdnetError only for problems that concern every input (bad options, an
    unwritable ``out_dir``, an output that is an input or a folder not ours to replace),
    before anything is written; a bad input is a failed :class:`InputResult`.
    """
    hook = progress or ProgressHook()
    save = list(dict.fromkeys(save))  # drop repeats, keep order
    if not save:
        raise UsageError("nothing to save", hint=f"pass --save with one of {', '.join(SAVE_KINDS)}")
    bad = [k for k in save if k not in SAVE_KINDS]
    if bad:
        raise UsageError(f"unknown --save {bad[0]!r}", hint=f"choose from {', '.join(SAVE_KINDS)}")
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha {alpha} is outside 0..1")
    if fps is not None and fps <= 0:
        raise UsageError(f"--fps {fps} must be positive")
    if overwrite and skip_existing:
        raise UsageError("--overwrite and --skip-existing contradict each other")
    if into_folder and skip_existing:
        raise UsageError("--into-folder and --skip-existing contradict each other")
    encoding, decode_gpu = hardware_video(predictor, Encoding(x264_preset, crf, encoder).check(), hw_decode)
    if isinstance(shard, str):
        shard = parse_shard(shard)
    specs = select_shard(expand_inputs(inputs), shard)
    if output is not None and len(specs) > 1:
        raise UsageError("-o names the output of a single input", hint="use --out-dir for several inputs")
    if out_dir is not None:
        _check_out_dir(Path(out_dir))
    if output is not None:
        if specs:
            plan_outputs(specs[0], save, output=output)  # a bad -o is a usage error, not a failed input
        _check_out_dir(Path(output).parent, "-o")
    folders = _check_plans(specs, save, out_dir=out_dir, output=output, overwrite=overwrite, into_folder=into_folder)
    for folder, names in sorted(folders.items()):
        remove_stale_partials(folder, ours=names)  # left by a run killed with SIGKILL: its process is gone

    on_cpu = getattr(getattr(predictor, "device", None), "type", "cpu") == "cpu"
    # Encoding ahead runs ENCODE_WORKERS frames at once: the model's threads are shared out
    # between them, so `threads` (and the tuner's counts) are per frame in flight.
    workers = ENCODE_WORKERS if on_cpu and getattr(predictor, "encodes_ahead", False) else 1
    threads_before = torch.get_num_threads()
    budget = max(1, (threads if threads is not None else threads_before) // workers)
    chosen_threads: int | None = None
    if on_cpu and (threads is not None or budget == 1):
        chosen_threads = budget  # given, or nothing to choose between
        torch.set_num_threads(budget)

    report = SegmentReport(shard=shard)
    claimed: dict[Path, str] = {}
    started = time.perf_counter()
    try:
        for index, spec in enumerate(specs):
            result = InputResult(input=spec)
            t0 = time.perf_counter()
            try:
                tuner = None
                if on_cpu and chosen_threads is None:
                    paths = max(1, int(getattr(predictor, "num_paths", 1)))
                    tuner = _ThreadTuner(budget, window=max(4, paths), warmup=max(3, paths))
                _process(spec, index, len(specs), result, predictor=predictor, save=save, out_dir=out_dir,
                         output=output, alpha=alpha, legend=legend, overwrite=overwrite, into_folder=into_folder,
                         skip_existing=skip_existing, cut_detect=cut_detect, fps=fps, hook=hook, tuner=tuner,
                         claimed=claimed, encoding=encoding, decode_yuv=decode_yuv, hw_decode=decode_gpu)
                if tuner is not None and tuner.choice is not None:
                    chosen_threads = tuner.choice  # measured once; later inputs reuse it
                    torch.set_num_threads(chosen_threads)
            except (TdnetError, OSError, RuntimeError) as exc:
                result.status = "failed"
                result.error = _one_line(exc)
            finally:
                result.seconds = time.perf_counter() - t0
            if on_cpu:
                result.threads = torch.get_num_threads() * workers
            if tuner is not None and tuner.choice is None and chosen_threads is None:
                torch.set_num_threads(budget)  # a short input did not finish the test
            report.results.append(result)
            hook.finish_input(result)
    finally:
        report.seconds = time.perf_counter() - started
        torch.set_num_threads(threads_before)
    return report


def hardware_video(predictor: Any, encoding: Encoding, hw_decode: bool) -> tuple[Encoding, int | None]:
    """Place NVENC/NVDEC on the predictor's GPU (GPU 0, or the driver's choice, when it runs on
    the CPU) and try them: ``(encoding with its GPU, the GPU to decode on or None)``, or a
    usage error naming why one cannot work here."""
    device = getattr(predictor, "device", None)
    gpu = None
    if isinstance(device, torch.device) and device.type == "cuda":
        gpu = device.index if device.index is not None else torch.cuda.current_device()
    if encoding.encoder == "nvenc":
        encoding = replace(encoding, gpu=gpu)
        require_nvenc(gpu)
    decode_gpu = (gpu or 0) if hw_decode else None
    if decode_gpu is not None:
        require_nvdec(decode_gpu)
    return encoding, decode_gpu


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, TdnetError):
        return str(exc)
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"disk full writing {exc.filename or 'an output'} ({exc.strerror}); free some space or write elsewhere"
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _process(
    spec: str,
    index: int,
    count: int,
    result: InputResult,
    *,
    predictor: Any,
    save: Sequence[str],
    out_dir: str | Path | None,
    output: str | Path | None,
    alpha: float,
    legend: bool,
    overwrite: bool,
    skip_existing: bool,
    cut_detect: bool,
    fps: float | None,
    hook: ProgressHook,
    into_folder: bool = False,
    tuner: _ThreadTuner | None,
    claimed: dict[Path, str],
    encoding: Encoding = Encoding(),
    decode_yuv: bool = True,
    hw_decode: int | None = None,
) -> None:
    """One input, start to finish; raises on failure (the caller records it)."""
    plans = plan_outputs(spec, save, out_dir=out_dir, output=output)
    for kind, path in list(plans.items()):
        other = claimed.get(path.resolve())
        if other is not None:
            raise OutputExistsError(f"{path} is also the output of {other}",
                                    hint="inputs with the same name need -o or separate runs")
        if path.exists() or path.is_symlink():
            if skip_existing:
                del plans[kind]
            elif not (overwrite or (into_folder and not _is_video(kind, path))):
                raise OutputExistsError(f"{path} exists", hint="use --overwrite, or --skip-existing to keep it")
    for path in plans.values():
        claimed[path.resolve()] = spec
    if not plans:
        result.status = "skipped"
        hook.start_input(spec, index, count, 0)
        return
    if output is None and out_dir is None and not is_url(spec):
        parent = next(iter(plans.values())).parent
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"{spec}: cannot write beside the input ({parent} is not writable)",
                             hint="use --out-dir")

    source = open_source(spec, yuv=decode_yuv, hw_decode=hw_decode)  # videos as YUV 4:2:0: see Renderer
    try:
        info = source.info
        hook.start_input(spec, index, count, info.frame_count)
        if tuner is not None and info.frame_count is not None and info.frame_count < tuner.frames_needed + 8:
            tuner = None  # too short to measure; keep the current thread count
        writers = _open_writers(plans, source, fps=fps, overwrite=overwrite, encoding=encoding, into=into_folder)
        try:
            render = Renderer(writers, predictor.palette, predictor.classes, alpha, legend)
            stats = _run_stream(source, predictor, render, cut_detect=cut_detect, hook=hook, tuner=tuner)
            result.frames, result.model_seconds, result.cuts = stats.frames, stats.model_seconds, stats.cuts
            if stats.frames == 0:
                raise InputError(f"{spec}: no frames (an empty or unreadable video)")
            for w in writers.values():
                result.outputs.append(str(w.close()))
                result.warnings.extend(w.warnings)
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
        result.error = (f"{spec}: corrupt or truncated video, kept the {stats.frames} frames decoded "
                        f"({source.problems[0]})")
