"""What `segment` reports: per-input results, the run's report, and the progress callbacks.

Plain data (no torch, no IO), so front ends and tests can build and read them freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["InputResult", "ProgressHook", "SegmentReport", "SilentProgress"]


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
    consistency: dict[str, Any] | None = None  # TC of the labels written (--consistency)
    images: list[str] | None = None  # the image files of an image-sequence input, in order
    # real-time mode only: frames dropped at the reader, and capture-to-written latency (ms: p50, p95)
    dropped: int | None = None
    latency_ms: dict[str, float | None] | None = None
    reconnects: int | None = None  # times a live source was opened again (--reconnect)

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
        } | ({"images": self.images} if self.images is not None else {}) | (
            {"consistency": self.consistency} if self.consistency is not None else {}) | (
            {"realtime": {"dropped": self.dropped, "latency_ms": self.latency_ms}} if self.dropped is not None
            else {}) | ({"reconnects": self.reconnects} if self.reconnects is not None else {})  # fmt: skip


@dataclass
class SegmentReport:
    """All inputs of one `segment` call."""

    results: list[InputResult] = field(default_factory=list)
    seconds: float = 0.0
    shard: tuple[int, int] | None = None
    consistency: dict[str, Any] | None = None  # TC over every input (--consistency)
    # what ran: the predictor's model name, weights file (None: random weights), device, precision
    model: str | None = None
    weights: str | None = None
    device: str | None = None
    precision: str | None = None
    notes: list[str] = field(default_factory=list)  # said before the run (the demo model, random weights)

    @property
    def warnings(self) -> list[str]:
        """Every warning of the run: the model's, then each input's."""
        return list(dict.fromkeys([*self.notes, *(w for r in self.results for w in r.warnings)]))

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
            "model": self.model,
            "weights": self.weights,
            "device": self.device,
            "precision": self.precision,
            "warnings": self.warnings,
        } | ({"consistency": self.consistency} if self.consistency is not None else {})


class ProgressHook(Protocol):
    """The callbacks `segment` makes from the caller's thread. Any object with these methods
    will do; subclass to inherit no-ops for the ones you do not need."""

    def start_input(self, spec: str, index: int, count: int, total_frames: int | None) -> None:
        """Input ``index`` of ``count`` is open; ``total_frames`` may be an estimate or None."""

    def advance(self, frames: int = 1) -> None:
        """More frames went through the model."""

    def finish_input(self, result: InputResult) -> None:
        """The input is done (ok, failed or skipped)."""

    def warn(self, message: str) -> None:
        """A non-fatal problem worth telling the user."""


class SilentProgress(ProgressHook):
    """Reports nothing: what `segment` uses when given no hook."""
