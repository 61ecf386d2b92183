"""One input's stream through the model: reader thread -> model loop -> writer thread.

    reader thread  --q(4)-->  model loop (caller's thread)  --q(4)-->  writer thread
    decode, cut test,         predictor.logits                         to_labels (upsample +
    predictor.prepare         (or .finish of a frame                   argmax), render, encode
    (and .encode ahead)       encoded ahead)                           video / write PNGs

Queues are bounded, so memory stays flat however long the video. A detected hard cut
resets the predictor's stream. In real-time mode (:class:`Realtime`) the queues hold
:data:`REALTIME_QUEUE` frames and the reader drops a frame rather than wait for room: the
dropped frames are simply not part of the stream (TDNet's path schedule and memory age by
the frames processed), and each written frame's latency from capture is measured. :class:`StreamPredictor` is all the pipeline needs of a
predictor; :class:`ThreadTuner` picks the CPU thread count while the stream runs.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from tdnet_cli.pipeline.results import ProgressHook
from tdnet_cli.render import Renderer
from tdnet_cli.video import CutDetector, Frame, FrameSource

__all__ = [
    "AHEAD_WORKERS",
    "QUEUE_SIZE",
    "REALTIME_QUEUE",
    "Realtime",
    "StreamPredictor",
    "StreamStats",
    "ThreadTuner",
    "model_gpu",
    "run_stream",
    "spare_workers",
]

QUEUE_SIZE = 4
REALTIME_QUEUE = 2  # frames in each queue in real-time mode: the latency a full pipeline adds
AHEAD_WORKERS = 2  # frames a CPU TDNet encodes at once when it encodes ahead (see _Ahead)


@runtime_checkable
class StreamPredictor(Protocol):
    """What the pipeline needs of a predictor (:class:`tdnet_cli.inference.Predictor` is one).

    A stream (from :meth:`new_stream`) and an encoded frame (from :meth:`encode`) are
    opaque here: the pipeline only hands them back. :meth:`prepare` and :meth:`to_labels`
    keep no state, so they run on the reader and writer threads; :meth:`logits` and
    :meth:`finish` advance the stream, in frame order, on the model loop.
    """

    device: torch.device
    notes: list[str]  # said to the user before the run (e.g. "random weights")

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def num_paths(self) -> int: ...

    @property
    def classes(self) -> Sequence[str]: ...

    @property
    def palette(self) -> Sequence[tuple[int, int, int]]: ...

    @property
    def encodes_ahead(self) -> bool:
        """Whether :meth:`encode` may run for later frames on other threads."""
        ...

    def new_stream(self, batch: int = 1) -> Any: ...

    def reset(self, stream: Any) -> None:
        """Forget the stream's memory (a scene cut)."""

    def prepare(self, frames: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB at the model's input size -> the model's input."""
        ...

    def logits(self, x: torch.Tensor, stream: Any) -> torch.Tensor:
        """Advance ``stream`` by one prepared batch; its logits."""
        ...

    def encode(self, x: torch.Tensor, path: int) -> Any:
        """The state-free part of a step for path ``path`` (only when :attr:`encodes_ahead`)."""
        ...

    def finish(self, encoded: Any, stream: Any) -> torch.Tensor:
        """Apply ``stream``'s memory to a frame made by :meth:`encode`; its logits."""
        ...

    def to_labels(self, logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """(B, H, W) uint8 train ids at ``size`` (H, W)."""
        ...


def model_gpu(device: torch.device) -> int | None:
    """The GPU index a model on ``device`` runs on, or None on the CPU."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def spare_workers() -> int:
    """Extra threads for rendering and for each PNG output: none on small machines, where
    the cores belong to the model; up to 4 where there are many (GPU hosts)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(4, cores // 4)


# --------------------------------------------------------------------------- CPU thread tuning


class ThreadTuner:
    """Pick torch's CPU thread count by timing the whole pipeline, not the model alone.

    With few cores, decode/encode/colourise compete with the model: leaving a quarter of
    the cores to ffmpeg and the writer (one of two: measured 12.5 -> 20 fps)
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


# --------------------------------------------------------------------------- the three threads

_END = object()


@dataclass
class Realtime:
    """Real-time mode of one stream: drop at the reader when the model is behind; ``pace``
    (frames per second) releases a file's frames at its own rate, as a live source would."""

    pace: float | None = None
    dropped: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds from capture to written, per frame

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q)) if self.latencies else None

    def wait_for(self, index: int, start: float, stop: threading.Event) -> None:
        """Hold frame ``index`` until its time in a paced file (at once for a live source)."""
        if self.pace:
            delay = start + index / self.pace - time.perf_counter()
            if delay > 0:
                stop.wait(delay)


class _Failed:
    """An exception of the reader thread, handed to the model loop to raise there."""

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


def _read_loop(
    source: FrameSource,
    q: queue.Queue,
    stop: threading.Event,
    cuts: CutDetector | None,
    prepare: Callable[[Frame, bool], Any],
    realtime: Realtime | None = None,
) -> None:
    """Decode, test for cuts (a change of frame size is one) and start the model's input
    (``prepare(frame, is_cut)``), ahead of the model. With ``realtime`` a frame that finds the
    queue full is dropped before it is prepared (a cut in it moves to the next frame kept)."""
    try:
        size, cut_pending, start = None, False, time.perf_counter()
        connection = getattr(source, "reconnects", 0)
        for index, frame in enumerate(source):
            if realtime is not None:
                realtime.wait_for(index, start, stop)
            captured = time.perf_counter()
            is_cut = cuts(frame) if cuts is not None else False
            # images of another size (a sequence of image files) are another shot whatever cut detection says
            is_cut = cut_pending or is_cut or (size is not None and frame.size != size)
            if getattr(source, "reconnects", 0) != connection:  # a stream opened again: its memory is stale
                connection, is_cut = source.reconnects, True
            size = frame.size
            if realtime is not None and q.full():  # only this thread puts: room now stays room
                realtime.dropped += 1
                cut_pending = is_cut
                continue
            cut_pending = False
            if not _put(q, (frame, is_cut, prepare(frame, is_cut), captured), stop):
                return
        _put(q, _END, stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the model loop, which raises it there
        _put(q, _Failed(exc), stop)


def _write_loop(
    q: queue.Queue,
    render: Renderer,
    abort: threading.Event,
    failed: list[BaseException],
    to_labels: Callable[[Frame, torch.Tensor], np.ndarray],
    workers: int = 0,
    latencies: list[float] | None = None,
) -> None:
    """Turn what the model loop queued into labels, then render and write frames in order;
    with ``workers``, render up to that many frames at once. The first failure goes to
    ``failed``; the queue is drained on, so the model loop never blocks on it."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="tdnet-render") if workers > 1 else None
    pending: deque[tuple[Frame, np.ndarray, Future, float]] = deque()
    try:
        while True:
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                if abort.is_set():
                    return
                continue
            end = item is _END
            if abort.is_set() or (failed and end):
                return
            if failed:
                continue
            try:
                if not end:
                    frame, logits, captured = item
                    labels = to_labels(frame, logits)
                    if pool is None:
                        render(frame, labels)
                        _written(latencies, captured)
                    else:
                        pending.append((frame, labels, pool.submit(render.prepare, frame, labels), captured))
                while pending and (end or len(pending) >= workers):
                    frame, labels, fut, captured = pending.popleft()
                    render.emit(frame, labels, fut.result())
                    _written(latencies, captured)
            except BaseException as exc:  # noqa: BLE001 - the model loop raises it
                failed.append(exc)
            if end:
                return
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _written(latencies: list[float] | None, captured: float) -> None:
    if latencies is not None:
        latencies.append(time.perf_counter() - captured)


class _Ahead:
    """Encoding ahead: the state-free bulk of each TDNet step (``predictor.encode``) runs on
    a small pool, several frames at once, while the model loop applies the memory in frame
    order (``predictor.finish``). On 2 cores a td4-mini step is ~30 ms encode + ~6 ms finish
    on one thread, and one thread per frame beats two threads on one frame
    (docs/benchmarks.md)."""

    def __init__(self, predictor: StreamPredictor, tuner: ThreadTuner | None) -> None:
        self.predictor, self.tuner = predictor, tuner
        self.pool = ThreadPoolExecutor(AHEAD_WORKERS, thread_name_prefix="tdnet-encode")
        self.since_reset = 0  # frames since the last reset, as the reader sees them: each frame's path
        self._threads = threading.local()

    def submit(self, x: torch.Tensor, is_cut: bool) -> Future:
        if is_cut:  # the model loop resets the stream at this frame, so its path is 0
            self.since_reset = 0
        path, self.since_reset = self.since_reset % self.predictor.num_paths, self.since_reset + 1
        return self.pool.submit(self._encode, x, path)

    def _encode(self, x: torch.Tensor, path: int) -> Any:
        # torch.set_num_threads reaches only the calling thread once that thread has run
        # an op (measured: a pool thread kept 2 after the main thread set 1), so pool
        # threads follow the tuner's trial themselves.
        tuner = self.tuner
        if tuner is not None and getattr(self._threads, "n", None) != tuner.current:
            self._threads.n = tuner.current
            torch.set_num_threads(self._threads.n)
        return self.predictor.encode(x, path)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class StreamStats:
    frames: int = 0
    model_seconds: float = 0.0  # time in predictor.logits / .finish, on the model loop
    cuts: int = 0  # scene cuts that reset the stream
    interrupted: KeyboardInterrupt | None = None  # Ctrl-C or SIGTERM that ended a live run (finish_on_interrupt)


def _check_labels(labels: np.ndarray, frame: Frame) -> None:
    if labels.shape != frame.size or labels.dtype != np.uint8:
        # the predictor broke its contract: a bug, not a bad input
        raise TypeError(f"the predictor returned {labels.dtype} {labels.shape} labels for a {frame.size} frame")


def _model_loop(
    q_in: queue.Queue,
    q_out: queue.Queue,
    predictor: StreamPredictor,
    stream: Any,
    *,
    stats: StreamStats,
    hook: ProgressHook,
    tuner: ThreadTuner | None,
    write_failed: list[BaseException],
    abort: threading.Event,
) -> None:
    """Step the model over what the reader queued, until its end; raises the reader's and
    the writer's failures here, in the caller's thread."""
    while True:
        try:
            item = q_in.get(timeout=0.1)
        except queue.Empty:
            if write_failed:
                raise write_failed[0]
            continue
        if item is _END:
            return
        if isinstance(item, _Failed):
            raise item.exc
        frame, is_cut, x, captured = item
        if is_cut and stats.frames:
            predictor.reset(stream)  # TDNet's memory must not carry over a hard cut
            stats.cuts += 1
        t0 = time.perf_counter()
        logits = predictor.finish(x.result(), stream) if isinstance(x, Future) else predictor.logits(x, stream)
        stats.model_seconds += time.perf_counter() - t0
        _put(q_out, (frame, logits, captured), abort)  # the writer keeps draining even after a failure
        if write_failed:
            raise write_failed[0]
        stats.frames += 1
        hook.advance(1)
        if tuner is not None:
            tuner.tick()


def run_stream(
    source: FrameSource,
    predictor: StreamPredictor,
    render: Renderer,
    *,
    cut_detect: bool,
    hook: ProgressHook,
    tuner: ThreadTuner | None,
    workers: int = 0,
    queue_size: int = QUEUE_SIZE,
    realtime: Realtime | None = None,
    finish_on_interrupt: bool = False,
) -> StreamStats:
    """One input through reader thread -> model loop (here) -> writer thread; ``workers``
    render threads besides the writer. Raises the first failure of any of them, after
    stopping the others. ``realtime``: drop frames at the reader rather than queue more than
    :data:`REALTIME_QUEUE` (its counts and latencies are filled in). ``finish_on_interrupt`` (a
    live source, which never ends by itself): Ctrl-C or SIGTERM in the model loop stops reading,
    the frames already past the model are written, and it returns with ``stats.interrupted`` set
    for the caller to finish its outputs and raise."""
    if realtime is not None:
        queue_size = min(queue_size, REALTIME_QUEUE)
    stats = StreamStats()
    stream = predictor.new_stream(batch=1)
    size = predictor.input_size
    ahead = _Ahead(predictor, tuner) if predictor.encodes_ahead else None

    def prepare(frame: Frame, is_cut: bool) -> torch.Tensor | Future:
        # a YUV frame gives the model its small RGB input straight from the planes
        x = predictor.prepare((frame.rgb(size) if frame.yuv is not None else frame.image)[None])
        return ahead.submit(x, is_cut) if ahead is not None else x

    def to_labels(frame: Frame, logits: torch.Tensor) -> np.ndarray:
        labels = predictor.to_labels(logits, frame.size)[0]
        _check_labels(labels, frame)
        return labels

    q_in: queue.Queue = queue.Queue(queue_size)
    q_out: queue.Queue = queue.Queue(queue_size)
    stop, abort = threading.Event(), threading.Event()
    write_failed: list[BaseException] = []
    cuts = CutDetector() if cut_detect else None
    reader = threading.Thread(
        target=_read_loop, args=(source, q_in, stop, cuts, prepare, realtime), name="tdnet-reader", daemon=True
    )
    writer = threading.Thread(
        target=_write_loop,
        args=(q_out, render, abort, write_failed, to_labels, workers, realtime.latencies if realtime else None),
        name="tdnet-writer",
        daemon=True,
    )
    if tuner is not None:
        tuner.start()
    reader.start()
    writer.start()
    clean = False
    try:
        try:
            _model_loop(
                q_in, q_out, predictor, stream, stats=stats, hook=hook, tuner=tuner, write_failed=write_failed,
                abort=abort,
            )  # fmt: skip
        except KeyboardInterrupt as exc:
            if not finish_on_interrupt:
                raise
            stats.interrupted = exc  # what waits for the model is let go; a second one aborts
            stop.set()
            source.close()
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
        if ahead is not None:
            ahead.close()
    return stats
