"""The callbacks a long-running pipeline makes, so a front end can show progress.

Kept apart from the pipelines (no torch here): the CLI subclasses it at import time, and
`tdnet --help` should not wait for torch to load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tdnet_cli.pipeline.segment import InputResult

__all__ = ["ProgressHook"]


class ProgressHook:
    """Callbacks `segment` makes from the caller's thread; override what you need."""

    def start_input(self, spec: str, index: int, count: int, total_frames: int | None) -> None:
        """Input ``index`` of ``count`` is open; ``total_frames`` may be an estimate or None."""

    def advance(self, frames: int = 1) -> None:
        """More frames went through the model."""

    def finish_input(self, result: InputResult) -> None:
        """The input is done (ok, failed or skipped)."""

    def warn(self, message: str) -> None:
        """A non-fatal problem worth telling the user."""
