"""`bench`: honest speed figures for a model (model-only) and for the segment pipeline.

Model-only: synthetic frames at the model's input size, already normalised on the
device, fed as one stream (or B streams batched in lockstep). The first N-1 frames
(memory queue filling) are timed and reported on their own; the warm-up frames are not
counted; every measured step is timed alone, CUDA synchronised on both sides.
"""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tdnet_cli.errors import UsageError
from tdnet_cli.inference import Predictor
from tdnet_cli.models.checkpoint import LoadedModel, random_model
from tdnet_cli.models.complexity import steady_gflops
from tdnet_cli.models.winograd import WinogradConv2d
from tdnet_cli.pipeline.bench_e2e import CpuSampler, bench_end_to_end
from tdnet_cli.pipeline.stream import AHEAD_WORKERS, model_gpu
from tdnet_cli.video import Encoding
from tdnet_cli.video.hw import hardware_video

__all__ = [
    "BenchReport",
    "BenchResult",
    "CpuSampler",  # these two live in bench_e2e; docs/ scripts import them from here
    "LatencyStats",
    "bench_encode_ahead",
    "bench_end_to_end",
    "bench_predictor",
    "conv_ceiling",
    "environment",
    "latency_stats",
    "run_bench",
    "spread_warning",
]

ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


# Timed steps whose slowest is more than this many times the fastest were disturbed (another
# program, frequency scaling): a quiet machine stays well under it once warmed up.
SPREAD_LIMIT = 1.5


@dataclass
class LatencyStats:
    frames: int
    mean_ms: float
    median_ms: float
    p95_ms: float
    max_ms: float
    fps: float  # steps per second from the mean: frames / total time
    # the spread of the timed steps: how far the median can be trusted
    min_ms: float
    p10_ms: float
    p90_ms: float
    max_over_min: float


def latency_stats(seconds: list[float]) -> LatencyStats | None:
    if not seconds:
        return None
    ms = sorted(s * 1000.0 for s in seconds)

    def rank(q: float) -> float:  # nearest rank: a time that was measured
        return ms[min(len(ms) - 1, max(0, int(round(q * (len(ms) - 1)))))]

    mean = statistics.fmean(ms)
    return LatencyStats(
        len(ms),
        mean,
        statistics.median(ms),
        rank(0.95),
        ms[-1],
        1000.0 / mean,
        min_ms=ms[0],
        p10_ms=rank(0.10),
        p90_ms=rank(0.90),
        max_over_min=ms[-1] / ms[0] if ms[0] > 0 else float("inf"),
    )


def spread_warning(stats: dict[str, LatencyStats | None]) -> str | None:
    """One line when the timed steps of any of ``stats`` (label -> stats, e.g. "this model")
    spread wider than :data:`SPREAD_LIMIT` (slowest / fastest), else None."""
    wide = {k: s for k, s in stats.items() if s is not None and s.max_over_min > SPREAD_LIMIT}
    if not wide:
        return None
    detail = ", ".join(
        f"{s.max_over_min:.1f}x ({s.min_ms:.1f} to {s.max_ms:.1f} ms)" + (f" for {label}" if len(stats) > 1 else "")
        for label, s in wide.items()
    )
    return (
        f"the timed steps vary widely: slowest/fastest {detail}, over {SPREAD_LIMIT}x: the machine was "
        "probably busy, so the median is shaky; run again on an idle machine"
    )


@dataclass
class BenchResult:
    model: str
    path: str  # "optimised" | "reference"
    precision: str
    device: str
    input_size: tuple[int, int]
    streams: int
    warmup: int
    steady: LatencyStats
    filling: LatencyStats | None  # the first N-1 frames of the stream (queue not full)
    gflops_per_frame: float
    peak_rss_mb: float
    peak_cuda_mb: float | None = None
    compiled: bool = False
    # wide 3x3 convs as Winograd products: fewer multiplies than gflops_per_frame counts
    winograd: bool = False
    # CPU TDNet: throughput with frames encoded ahead on a pool, as `segment` runs it
    encode_ahead: dict | None = None

    @property
    def best_fps_per_stream(self) -> float:
        """The faster of one-step-at-a-time and encode-ahead: what end to end is held to."""
        ahead = self.encode_ahead["fps"] if self.encode_ahead and self.streams == 1 else 0.0
        return max(self.steady.fps, ahead)

    @property
    def best_figure(self) -> str:
        """Which figure :attr:`best_fps_per_stream` is: "encode_ahead" or "steady" (one step at a time)."""
        return "steady" if self.best_fps_per_stream == self.steady.fps else "encode_ahead"

    @property
    def fps_per_stream(self) -> float:
        return self.steady.fps

    @property
    def fps_total(self) -> float:
        return self.steady.fps * self.streams

    @property
    def achieved_gflops(self) -> float:
        """Useful model GFLOP/s at the median step time."""
        return self.gflops_per_frame * self.streams / (self.steady.median_ms / 1000.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(fps_per_stream=self.fps_per_stream, fps_total=self.fps_total, achieved_gflops=self.achieved_gflops)
        return d


@dataclass
class BenchReport:
    env: dict
    result: BenchResult
    baseline: BenchResult | None = None
    ceiling: dict | None = None  # {"gflops": .., "shape": ..} of the model's heaviest conv alone
    end_to_end: dict | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # about the measurement (e.g. a wide spread)

    @property
    def speedup(self) -> float | None:
        """How many times faster our result is than the baseline (median step, per frame)."""
        if self.baseline is None:
            return None
        ours = self.result.steady.median_ms / self.result.streams
        theirs = self.baseline.steady.median_ms / self.baseline.streams
        return theirs / ours

    def to_dict(self) -> dict:
        return {
            "env": self.env,
            "result": self.result.to_dict(),
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "speedup_vs_baseline": self.speedup,
            "ceiling": self.ceiling,
            "fraction_of_ceiling": (self.result.achieved_gflops / self.ceiling["gflops"]) if self.ceiling else None,
            "end_to_end": self.end_to_end,
            "notes": self.notes,
            "warnings": self.warnings,
        }


def environment(device: torch.device) -> dict:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
    }
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 1024.0 / 1024.0


def bench_predictor(
    pred: Predictor,
    *,
    frames: int = 20,
    warmup: int = 5,
    streams: int = 1,
    progress: ProgressFn | None = None,
) -> BenchResult:
    """Time ``pred``'s model on synthetic normalised frames; see the module docstring."""
    if frames < 1:
        raise UsageError("--frames must be at least 1")
    if warmup < 0 or streams < 1:
        raise UsageError("--warmup must be >= 0 and --streams >= 1")
    dev = pred.device
    h, w = pred.input_size
    pool = _synthetic_inputs(pred, streams)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    stream = pred.new_stream(streams)
    n_fill = pred.num_paths - 1
    # Compiled, the first steady frame of each path compiles its graph too: never time those.
    warm = max(warmup, n_fill + (pred.num_paths if pred.compiled else 0))
    filling, steady = [], []
    total = warm + frames
    for i in range(total):
        x = pool[i % len(pool)]
        _sync(dev)
        t0 = time.perf_counter()
        pred.step(x, stream)
        _sync(dev)
        dt = time.perf_counter() - t0
        if i < n_fill:
            filling.append(dt)
        elif i >= warm:
            steady.append(dt)
        if progress:
            progress("measure", i + 1, total)
    return BenchResult(
        model=pred.name,
        path="optimised" if pred.optimized else "reference",
        precision=pred.precision,
        device=str(dev),
        input_size=(h, w),
        streams=streams,
        warmup=warm,
        steady=latency_stats(steady),  # type: ignore[arg-type]
        filling=latency_stats(filling),
        gflops_per_frame=steady_gflops(_meta_copy(pred.loaded), (h, w)),
        peak_rss_mb=_peak_rss_mb(),
        peak_cuda_mb=torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        compiled=pred.compiled,
        winograd=pred.winograd,
    )


def bench_encode_ahead(
    pred: Predictor, *, frames: int = 20, warmup: int = 5, workers: int = AHEAD_WORKERS
) -> dict | None:
    """Model throughput the way `segment` runs a TDNet on the CPU: ``workers`` frames encoded
    at once on a pool, torch's threads shared out between them, and the memory applied in
    frame order (:meth:`Predictor.encode` / :meth:`Predictor.finish`). None where the
    predictor does not encode ahead (GPU, compiled, per-frame models)."""
    if not pred.encodes_ahead:
        return None
    threads = torch.get_num_threads()
    per_worker = max(1, threads // workers)
    inputs = _synthetic_inputs(pred, 1)
    stream = pred.new_stream(1)
    warm = max(warmup, pred.num_paths - 1)  # never time the memory queue filling
    pending: deque = deque()
    t0 = time.perf_counter()  # reset once the warm-up frames are finished

    def finish_next() -> None:
        nonlocal t0
        pred.finish(pending.popleft().result(), stream)
        if stream.frames == warm:
            t0 = time.perf_counter()

    torch.set_num_threads(per_worker)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="tdnet-bench-encode") as pool:
            for i in range(warm + frames):
                pending.append(pool.submit(pred.encode, inputs[i % len(inputs)], i % pred.num_paths))
                if len(pending) > workers:
                    finish_next()
            while pending:
                finish_next()
            seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    return {
        "fps": frames / seconds,
        "frames": frames,
        "seconds": seconds,
        "workers": workers,
        "threads_per_worker": per_worker,
    }


def _synthetic_inputs(pred: Predictor, batch: int) -> list[torch.Tensor]:
    """Four fixed random normalised frame batches at the model's input size, on its device
    and in its layout (speed does not depend on the pixels)."""
    h, w = pred.input_size
    gen = torch.Generator().manual_seed(0)
    pool = [(torch.rand(batch, 3, h, w, generator=gen) * 4 - 2).to(pred.device) for _ in range(4)]
    return [x.contiguous(memory_format=torch.channels_last) for x in pool] if pred.channels_last else pool


def _meta_copy(loaded: LoadedModel) -> nn.Module:
    """The same architecture on the meta device, for FLOP counting without touching weights."""
    model = loaded.model
    with torch.device("meta"):
        clone = type(model)(model.config)
    return clone.eval()


def _heaviest_conv(model: nn.Module, x: torch.Tensor, stream_state) -> tuple[nn.Conv2d, tuple[int, ...]]:
    """The conv with the most FLOPs in one step, and its input shape."""
    seen: list[tuple[float, nn.Conv2d, tuple]] = []

    def hook(mod, inputs, output):
        k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
        seen.append((output.numel() * k, mod, tuple(inputs[0].shape)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model.step(x, stream_state)
    finally:
        for hnd in handles:
            hnd.remove()
    _flops, conv, shape = max(seen, key=lambda t: t[0])
    return conv, shape


def conv_ceiling(pred: Predictor, *, repeats: int = 5) -> dict:
    """GFLOP/s of the model's heaviest conv run alone, same device, layout and precision.

    This is what the hardware + library reach on the model's own dominant shape as a direct
    convolution: the fraction of it the whole model achieves says how much time goes
    elsewhere. Where the model runs that layer as Winograd products, ``layer_gflops`` is the
    same layer as the model runs it, in the same direct-convolution FLOPs (so above the ceiling).
    """
    dev = pred.device
    h, w = pred.input_size
    x = torch.zeros(1, 3, h, w, device=dev)
    if pred.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    conv, shape = _heaviest_conv(pred.model, x, pred.model.new_state(1))
    inp = torch.randn(shape, device=dev)
    if pred.channels_last:
        inp = inp.contiguous(memory_format=torch.channels_last)

    def direct(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def median_seconds(fn) -> tuple[float, torch.Tensor]:
        times = []
        with torch.inference_mode(), pred._autocast():
            for i in range(repeats + 1):
                _sync(dev)
                t0 = time.perf_counter()
                out = fn(inp)
                _sync(dev)
                if i:
                    times.append(time.perf_counter() - t0)
        return statistics.median(times), out

    seconds, out = median_seconds(direct)
    k = conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3]
    gflop = 2.0 * out.numel() * k / 1e9
    result = {
        "gflops": gflop / seconds,
        "shape": f"{conv.in_channels}->{conv.out_channels} {conv.kernel_size[0]}x{conv.kernel_size[1]} "
        f"dilation {conv.dilation[0]} at {shape[2]}x{shape[3]}",
        "gflop": gflop,
        "layer_gflops": None,
    }
    if isinstance(conv, WinogradConv2d):
        result["layer_gflops"] = gflop / median_seconds(conv)[0]
    return result


def run_bench(
    *,
    weights: str | None = None,
    model: str | None = None,
    size: tuple[int, int] | None = None,
    frames: int = 20,
    warmup: int = 5,
    device: str = "auto",
    precision: str = "fp32",
    streams: int = 1,
    compile: bool | str = False,
    winograd: bool | None = None,
    baseline: str | None = None,
    ceiling: bool = True,
    reference: bool = False,
    source: str | None = None,
    encoding: Encoding = Encoding(),
    hw_decode: bool = False,
    progress: ProgressFn | None = None,
) -> BenchReport:
    """Model-only benchmark, optionally against a baseline in the same process.

    ``baseline`` is a preset name (its per-frame cost at the same size and precision) or
    ``"reference"``: the same weights on our plain path in fp32, which mirrors the
    authors' code operation for operation. ``winograd``: None = the Predictor's choice (CPU
    fp32), False = direct convolutions throughout. ``source`` (a video) adds the end-to-end
    `segment` run with its stage breakdown beside the model-only figures, its video encoded
    with ``encoding`` and decoded on the GPU with ``hw_decode``.
    """
    if source is not None:
        encoding.check()  # before minutes of model timing, not after
    pred = Predictor.create(
        weights=weights,
        model=model,
        device=device,
        precision=precision,
        input_size=size,
        optimize=not reference,
        compile=compile,
        winograd=winograd,
    )
    if source is not None:
        # NVENC/NVDEC tried before the timing too
        hardware_video(encoding, hw_decode=hw_decode, gpu=model_gpu(pred.device))
    report = BenchReport(
        env=environment(pred.device),
        result=None,  # type: ignore[arg-type]
        notes=[n for n in pred.notes if n not in pred.warnings],
        warnings=list(pred.warnings),  # random weights: the result's warnings, as in eval
    )
    report.env.update(precision=precision, input_size=list(pred.input_size))
    report.result = bench_predictor(pred, frames=frames, warmup=warmup, streams=streams, progress=progress)
    if streams == 1:
        report.result.encode_ahead = bench_encode_ahead(pred, frames=frames, warmup=warmup)
    if source is not None:
        report.end_to_end = bench_end_to_end(pred, source, encoding=encoding, hw_decode=hw_decode, progress=progress)
        best = report.result.best_fps_per_stream
        report.end_to_end["model_only_fps"] = best
        report.end_to_end["model_only_figure"] = report.result.best_figure  # which of the two it is
        report.end_to_end["fraction_of_model_only"] = report.end_to_end["fps"] / best
    if baseline:
        if baseline == "reference":
            base = Predictor(pred.loaded, device=pred.device, precision="fp32", optimize=False)
        else:
            base = Predictor(
                random_model(baseline, input_size=pred.input_size),
                device=pred.device,
                precision=precision,
                optimize=not reference,
            )
        report.baseline = bench_predictor(base, frames=frames, warmup=warmup, streams=streams, progress=progress)
        del base
    timed = {"this model": report.result.steady} | ({"the baseline": report.baseline.steady} if report.baseline else {})
    if (wide := spread_warning(timed)) is not None:
        report.warnings.append(wide)
    if ceiling:
        report.ceiling = conv_ceiling(pred)
    return report
