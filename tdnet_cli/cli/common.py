"""Shared pieces of the CLI: consoles, the error translator, option aliases."""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Callable, TypeVar

import typer
from rich.console import Console

from tdnet_cli.errors import TdnetError

F = TypeVar("F", bound=Callable)

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one styled error line to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn the core's TdnetError (and Ctrl-C) into one line and an exit code, no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except TdnetError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


# Option aliases shared by several commands (one definition, many users).
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        help="Checkpoint: ours (.pt) or a released TDNet/PSPNet state dict (.pkl).",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Preset name (see `tdnet models`); random weights unless --weights.", show_default=False),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="fp32, bf16 or fp16 (fp16 on CUDA only).")]
InputSizeOpt = Annotated[
    str | None,
    typer.Option(
        "--input-size",
        help="Model input HxW, e.g. 1024x2048. Released checkpoints fix it (769x1537); another size "
        "resizes their spatial LayerNorm weights bilinearly to the new feature size.",
        show_default=False,
    ),
]
EncoderOpt = Annotated[
    str,
    typer.Option("--encoder", help="Video output encoder: x264 (CPU) or nvenc (NVIDIA GPU; --x264-preset maps to its "
                 "p1-p7, --crf to its constant quality)."),
]
HwDecodeOpt = Annotated[
    bool,
    typer.Option("--hw-decode", help="Decode videos on the NVIDIA GPU (NVDEC; the model's GPU, else GPU 0)."),
]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the model step (each path compiles on its first frame: a slow start).")]
CompileModeOpt = Annotated[str, typer.Option(
    "--compile-mode", help="With --compile (and implying it unless 'default'): default, reduce-overhead (CUDA graphs), "
    "max-autotune or max-autotune-no-cudagraphs.")]


def compile_choice(flag: bool, mode: str) -> bool | str:
    """What Predictor(compile=...) takes for --compile / --compile-mode."""
    return mode if mode != "default" else flag


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON result on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary; errors only.")]
