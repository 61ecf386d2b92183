"""One exception family for everything a user can cause.

The core raises these; the CLI turns them into a one-line message and an exit code
in one place (``tdnet_cli.cli.common.handle_errors``). Nothing here imports typer or rich.
"""

from __future__ import annotations

import errno

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "CheckpointError",
    "DataError",
    "InputError",
    "OutputExistsError",
    "TdnetError",
    "Terminated",
    "UsageError",
    "WriteError",
    "few",
    "first_line",
    "os_error_line",
]

# The exit codes of every command (README "Exit codes and safety" states the same rule).
EXIT_OK = 0
EXIT_FAILED = 1  # the work started and something failed: an input of a batch, a write, a full disk
EXIT_USAGE = 2  # nothing was done: a bad option, a missing or wrong file named by the user
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), after cleaning up
EXIT_TERMINATED = 143  # SIGTERM (kill, timeout, Slurm, Kubernetes), after cleaning up


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type's name if empty), cut to ``limit``."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def os_error_line(exc: OSError) -> str:
    """An error the system raised (disk full, permissions, a vanished folder) as one line."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = f"disk full writing {exc.filename}" if exc.filename else "disk full"
        return f"{what} ({exc.strerror}); free some space or write elsewhere"
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def few(items: list[str], n: int = 3) -> str:
    """The first ``n`` items joined, then how many more: keeps error messages one line."""
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


class TdnetError(Exception):
    """An error the user can fix. ``str(err)`` is one line naming the problem and the fix."""

    exit_code = EXIT_USAGE

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


class WriteError(TdnetError):
    """Writing an output failed part-way (disk full, folder removed, quota): nothing is left
    under the final name. Exit 1: the work started and failed."""

    exit_code = EXIT_FAILED


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the CLI's handler. A KeyboardInterrupt, so every
    clean-up written for Ctrl-C (temporary outputs removed, last.pt saved) runs for it too."""

    exit_code = EXIT_TERMINATED
