"""How training stops on Ctrl-C and SIGTERM: at an iteration boundary, so that last.pt holds a
state an uninterrupted run also passes through (``tdnet train --resume`` continues exactly)."""

from __future__ import annotations

import signal
import threading
from typing import Self

import torch
from torch import nn

from tdnet_cli.errors import Terminated

__all__ = ["IterationBuffers", "StopAtBoundary", "ignore_stop_signals", "interruption"]


def interruption(signum: int) -> KeyboardInterrupt:
    """What a signal raises: SIGTERM ends with exit 143, Ctrl-C with 130 (tdnet_cli.errors)."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


class StopAtBoundary:
    """Ctrl-C and SIGTERM while training. Inside an iteration the first one is held until the
    iteration ends: its forward pass has already moved BatchNorm's running statistics, so
    stopping there would save a state no uninterrupted run ever has. A second one stops at once
    (``hold``), except inside the optimiser step (``critical``), which is never cut. Outside
    iterations (validation, final weights) they stop at once. Handlers can only be set in the
    main thread; elsewhere (a test runner's worker) nothing changes."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.hold = False
        self.critical = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(signum) is not signal.SIG_IGN:  # `nohup`, `cmd &`: stays ignored
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def _handle(self, signum, frame) -> None:
        if self.critical or (self.hold and self.pending is None):
            self.pending = self.pending or signum
            return
        raise interruption(signum)

    def check(self) -> None:
        """At an iteration boundary: stop now if a signal came during the iteration."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise interruption(signum)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT and SIGTERM to the training process: a terminal's Ctrl-C
    and ``kill -TERM -PGID`` (Slurm, Kubernetes, ``timeout``) reach the whole process group,
    and a worker killed by them made the main process fail instead of saving last.pt. The main
    process shuts its workers down when it stops; they also leave if it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class IterationBuffers:
    """The model's buffers (BatchNorm running statistics and counts) as they were when the
    current iteration began: put back when a second signal cuts the iteration short."""

    def __init__(self, model: nn.Module) -> None:
        self.live = list(model.buffers())
        self.saved = [b.detach().clone() for b in self.live]

    def take(self) -> None:
        with torch.no_grad():
            for saved, live in zip(self.saved, self.live):
                saved.copy_(live)

    def restore(self) -> None:
        with torch.no_grad():
            for saved, live in zip(self.saved, self.live):
                live.copy_(saved)
