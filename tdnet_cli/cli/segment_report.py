"""What ``tdnet segment`` shows people: the progress of each input on stderr (a bar, or for a
live input the frames, fps and time so far, with a real-time run's drops and latency) and the
summary at the end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from tdnet_cli.cli.common import console, err_console, warn

if TYPE_CHECKING:
    from tdnet_cli.pipeline import InputResult
    from tdnet_cli.pipeline.stream import Realtime


class _BarIfKnown(BarColumn):
    """The bar, for inputs of known length; a live input has none to fill."""

    def render(self, task: Task) -> Text:  # type: ignore[override]
        return super().render(task) if task.total is not None else Text("")  # type: ignore[return-value]


class _Frames(ProgressColumn):
    """``done/total`` frames, or for a live input the frames so far and the time it has run."""

    def __init__(self) -> None:
        super().__init__()
        self.elapsed, self.remaining = TimeElapsedColumn(), TimeRemainingColumn()

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text.assemble(f"{int(task.completed)} frames ", self.elapsed.render(task))
        return Text.assemble(f"{int(task.completed)}/{int(task.total)} ", self.remaining.render(task))


class RichProgress:
    """One progress bar per input on stderr; errors always, warnings unless quiet. A
    :class:`~tdnet_cli.pipeline.ProgressHook` by its methods: the pipeline (and torch) load
    when the command runs, not when `tdnet --help` imports this module."""

    def __init__(self, *, show_bars: bool, quiet: bool) -> None:
        self.quiet = quiet
        self.bars = Progress(
            TextColumn("{task.description}"),
            _BarIfKnown(),
            TextColumn("{task.fields[fps]:>6.1f} fps"),
            _Frames(),
            TextColumn("{task.fields[extra]}"),
            console=err_console,
            disable=not show_bars,
        )
        self.task: TaskID | None = None
        self.done = 0
        self.t0 = 0.0
        self.realtime: Realtime | None = None

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def start_input(self, spec: str, index: int, count: int, total_frames: int | None) -> None:
        label = spec if len(spec) <= 40 else "..." + spec[-37:]
        prefix = f"[{index + 1}/{count}] " if count > 1 else ""
        self.task = self.bars.add_task(f"{prefix}{escape(label)}", total=total_frames or None, fps=0.0, extra="")
        self.done, self.t0, self.realtime = 0, time.perf_counter(), None

    def watch_realtime(self, realtime: Realtime) -> None:
        """The input runs in real-time mode: show its dropped frames and latency as it goes."""
        self.realtime = realtime

    def advance(self, frames: int = 1) -> None:
        if self.task is None:
            return
        self.done += frames
        task = self.bars.tasks[-1]
        if task.total is not None and self.done > task.total:  # the frame count was an estimate
            self.bars.update(self.task, total=self.done)
        fps = self.done / max(time.perf_counter() - self.t0, 1e-9)
        self.bars.update(self.task, advance=frames, fps=fps, extra=_realtime_text(self.realtime, recent=True))

    def finish_input(self, result: InputResult) -> None:
        if self.task is not None:
            self.bars.update(self.task, total=max(result.frames, 1), completed=result.frames, fps=result.fps)
            self.task = None
        if result.status == "failed" and result.error:
            self.bars.console.print(
                f"[bold red]error:[/] {escape(_with_input(result))}", highlight=False, soft_wrap=True
            )

    def warn(self, message: str) -> None:
        if not self.quiet:
            warn(message)  # err_console, the bars' own: rich prints it above them


def _realtime_text(realtime: Realtime | None, *, recent: bool = False) -> str:
    """Dropped frames and capture-to-written latency of a real-time run ('' for others); ``recent``:
    the latency of the last 100 frames written (what a live display shows)."""
    if realtime is None:
        return ""
    import numpy as np  # here: `tdnet --help` loads this module

    times = realtime.latencies[-100:] if recent else realtime.latencies
    if not times:
        return f"dropped {realtime.dropped}"
    p50, p95 = (1000 * float(v) for v in np.percentile(times, (50, 95)))
    return f"dropped {realtime.dropped}, latency p50 {p50:.0f} ms, p95 {p95:.0f} ms"


def _with_input(result: InputResult) -> str:
    """Error messages from the core usually name the input already; make sure they do."""
    err = result.error or ""
    return err if result.input in err else f"{result.input}: {err}"


def _outputs_text(result: InputResult) -> str:
    """An input's outputs for people: an image sequence's PNGs by kind, the first, the last
    one's name and the count (``--json`` lists every file)."""
    if result.images is None or len(result.outputs) <= 2:
        return ", ".join(result.outputs)
    groups: dict[str, list[str]] = {}
    for out in result.outputs:
        suffixes = Path(out).suffixes
        groups.setdefault(suffixes[-2] if len(suffixes) > 1 else "", []).append(out)
    return ", ".join(g[0] if len(g) == 1 else f"{g[0]} .. {Path(g[-1]).name} ({len(g)} files)" for g in groups.values())


def _result_realtime(r: InputResult) -> str:
    """'; dropped N, latency ...' for an input run in real-time mode."""
    if r.dropped is None or r.latency_ms is None:
        return ""
    p50, p95 = r.latency_ms.get("p50"), r.latency_ms.get("p95")
    latency = f", latency p50 {p50:.0f} ms, p95 {p95:.0f} ms" if p50 is not None and p95 is not None else ""
    return f"; dropped {r.dropped}{latency}"


def _result_reconnects(r: InputResult) -> str:
    return f"; reconnected {r.reconnects}x" if r.reconnects else ""


def summary(results: list[InputResult], seconds: float, console: Console = console) -> None:
    """One line for one input; for several a table of the numbers, then each input's outputs or
    its failure on a line of its own, never cut whatever the terminal's width. On ``console``:
    stderr when stdout carries a stream."""
    frames = sum(r.frames for r in results)
    failed = sum(r.status == "failed" for r in results)
    if len(results) == 1:
        r = results[0]
        if r.status == "ok":
            console.print(
                escape(
                    f"{r.input}: {r.frames} frames in {r.seconds:.1f} s ({r.fps:.1f} fps; model "
                    f"{r.model_fps:.1f} fps{_result_realtime(r)}{_result_reconnects(r)}) -> {_outputs_text(r)}"
                ),
                highlight=False,
                soft_wrap=True,
            )
        elif r.status == "skipped":
            console.print(escape(f"{r.input}: skipped (outputs exist)"), highlight=False, soft_wrap=True)
        return
    table = Table(title="tdnet segment")
    table.add_column("input", overflow="fold")
    table.add_column("status", no_wrap=True)
    for col in ("frames", "fps", "model fps"):
        table.add_column(col, justify="right", no_wrap=True)
    style = {"ok": "green", "failed": "red", "skipped": "dim"}
    for r in results:
        table.add_row(
            escape(r.input), f"[{style[r.status]}]{r.status}[/]", str(r.frames), f"{r.fps:.1f}", f"{r.model_fps:.1f}"
        )
    console.print(table)
    for r in results:
        if r.outputs:
            console.print(escape(f"{r.input} -> {_outputs_text(r)}"), highlight=False, soft_wrap=True)
        if r.status == "failed":
            console.print(f"[red]failed:[/] {escape(_with_input(r))}", highlight=False, soft_wrap=True)
    fps = frames / seconds if seconds > 0 else 0.0
    console.print(f"{len(results)} inputs, {frames} frames, {fps:.1f} fps overall; {failed} failed", highlight=False)
