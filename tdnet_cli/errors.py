"""One exception family for everything a user can cause.

The core raises these; the CLI turns them into a one-line message and an exit code
in one place (``tdnet_cli.cli.app``). Nothing here imports typer or rich.
"""

from __future__ import annotations

__all__ = [
    "TdnetError",
    "UsageError",
    "InputError",
    "CheckpointError",
    "DataError",
    "OutputExistsError",
    "few",
]


def few(items: list[str], n: int = 3) -> str:
    """The first ``n`` items joined, then how many more: keeps error messages one line."""
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


class TdnetError(Exception):
    """An error the user can fix. ``str(err)`` is one line naming the problem and the fix."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(TdnetError):
    """A bad option or combination of options."""


class InputError(TdnetError):
    """A missing, unreadable or malformed input (video, image, folder)."""


class CheckpointError(TdnetError):
    """A weights file that cannot be loaded into the requested model."""


class DataError(TdnetError):
    """A dataset folder that is missing or not in the expected layout."""


class OutputExistsError(TdnetError):
    """An output would overwrite an existing file."""
