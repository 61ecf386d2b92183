"""Shared pieces of the CLI: consoles, the error translator, option aliases."""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tdnet_cli.download import reporting
from tdnet_cli.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    TdnetError,
    Terminated,
    UsageError,
    os_error_line,
)

F = TypeVar("F", bound=Callable)

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one error line to stderr and return the Exit to raise. ``message`` is plain text:
    brackets in it (file names such as ``clip[red].mp4``) are printed as they are."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    """One warning line on stderr (plain text, brackets kept)."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _download_bar(url: str) -> Iterator[Callable[[int, int | None], None]]:
    """A weights download's bar on stderr (bytes, rate, time left); a log file gets none."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    name = url.rsplit("/", 1)[-1] or url
    bar = Progress(
        TextColumn(f"downloading {escape(name)}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
    with bar:
        task = bar.add_task("download", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Terminated` in the main thread, so the same
    clean-up as Ctrl-C runs (temporary outputs removed) before the process exits 143."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be set from the main thread (e.g. a test runner's worker)
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def handle_errors(func: F) -> F:
    """Turn the core's TdnetError, an OSError from the system, Ctrl-C and SIGTERM into one
    line and the documented exit code (tdnet_cli.errors: 2 usage, 1 failed, 130, 143)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with _sigterm_as_exception(), reporting(_download_bar):
                return func(*args, **kwargs)
        except TdnetError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except Terminated:
            raise fail("terminated (SIGTERM)", EXIT_TERMINATED) from None
        except KeyboardInterrupt:
            raise fail("interrupted", EXIT_INTERRUPTED) from None
        except OSError as exc:  # the system refused (disk full, permissions, a vanished folder)
            raise fail(os_error_line(exc), EXIT_FAILED) from None

    return wrapper  # type: ignore[return-value]


# Option aliases shared by several commands (one definition, many users).
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        metavar="FILE",
        help="Checkpoint: ours (.pt) or a released TDNet/PSPNet state dict (.pkl); a file or an http(s) URL "
        "(downloaded once into the cache, ~/.cache/tdnet; add #sha256=HEX to check it).",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="NAME",
        help="Preset name (see `tdnet models`); random weights unless --weights.",
        show_default=False,
    ),
]


def _check_device(value: str) -> str:
    """--device is checked while parsing, before any weights are read: a bad or absent device
    is a one-line usage error (exit 2) at once."""
    if value.strip().lower() in ("auto", "cpu"):
        return value  # always there: no need to import torch to know
    from tdnet_cli.inference import resolve_device  # torch: only for a device to look for

    try:
        resolve_device(value)
    except UsageError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


class Precision(str, Enum):
    """--precision's values: Typer refuses any other while parsing."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


DeviceOpt = Annotated[
    str, typer.Option("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N.", callback=_check_device)
]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="fp16 on CUDA only.")]
InputSizeOpt = Annotated[
    str | None,
    typer.Option(
        "--input-size",
        metavar="HxW",
        help="Model input HxW, e.g. 1024x2048. Released checkpoints fix it (769x1537); another size "
        "resizes their spatial LayerNorm weights bilinearly to the new feature size.",
        show_default=False,
    ),
]
EncoderOpt = Annotated[
    str,
    typer.Option(
        "--encoder",
        metavar="[x264|nvenc]",
        help="Video output encoder: x264 (CPU) or nvenc (NVIDIA GPU; --x264-preset maps to its "
        "p1-p7, --crf to its constant quality).",
    ),
]
HwDecodeOpt = Annotated[
    bool,
    typer.Option("--hw-decode", help="Decode videos on the NVIDIA GPU (NVDEC; the model's GPU, else GPU 0)."),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile", help="torch.compile the model step (each path compiles on its first frame: a slow start)."
    ),
]
CompileModeOpt = Annotated[
    str,
    typer.Option(
        "--compile-mode",
        metavar="MODE",
        help="With --compile (and implying it unless 'default'): default, reduce-overhead (CUDA graphs), "
        "max-autotune or max-autotune-no-cudagraphs.",
    ),
]


def compile_choice(flag: bool, mode: str) -> bool | str:
    """What Predictor(compile=...) takes for --compile / --compile-mode."""
    return mode if mode != "default" else flag


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON result on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary; errors only.")]
