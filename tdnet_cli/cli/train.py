"""``tdnet train``: config file + overrides -> a resumable (distributed) training run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tdnet_cli.cli.common import JsonOpt, QuietOpt, console, err_console, fail, handle_errors
from tdnet_cli.config import load_config, load_run_config, toml_string
from tdnet_cli.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated

if TYPE_CHECKING:
    from tdnet_cli.pipeline.train import TrainResult


def _note(text: str) -> None:
    """A progress note from training (resumed, initialised): one line, the text as it is."""
    err_console.print(f"[dim]{escape(text)}[/]", highlight=False, soft_wrap=True)


def _weights_from(source: dict) -> str:
    """Which weights model.pt holds, in words: the best validated ones or the last iteration's."""
    if source.get("model_from") == "best":
        return f" (best val mIoU, iteration {source.get('model_iteration')})"
    return " (last iteration)" if source else ""


def _train_with_bar(cfg: dict, resume: Path | None, show: bool) -> TrainResult:
    """train() with its reports on stderr: a bar from when its checks pass (a refusal gets none),
    moved every iteration, and a note the moment an interruption starts saving last.pt."""
    from tdnet_cli.pipeline.train import train  # torch: loaded by the command, not by `tdnet --help`

    bar = Progress(
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not show or not err_console.is_terminal,
    )  # a log file gets no bar
    tasks: list = []

    def started(done: int, total: int) -> None:
        bar.start()
        tasks.append(bar.add_task("train", total=total, completed=done, info=""))

    def progress(done: int, total: int, rec: dict) -> None:
        info = f"loss {rec['loss']:.3f} lr {rec['lr']:.2e} {rec['run_it_s']:.2f} it/s"  # the whole run's rate
        bar.update(tasks[0], completed=done, info=info)

    def saving(done: int, path: Path) -> None:
        _note(f"stopping after iteration {done}: saving {path} ...")

    try:
        return train(
            cfg,
            resume=str(resume) if resume else None,
            progress=progress,
            log=_note if show else None,
            started=started,
            saving=saving if show else None,
        )
    except BaseException:
        for task in tasks:
            bar.update(task, visible=False)  # a failure ends in its one error line, not the bar
        raise
    finally:
        if tasks:  # a bar that never started has nothing to stop
            bar.stop()


@handle_errors
def train_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", metavar="FILE", help="TOML config (see examples/*.toml).", show_default=False),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a config key, e.g. --set optim.lr=0.005 (repeatable).",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", metavar="DIR", help="Dataset root (= --set data.root=...).", show_default=False),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option("--model", "-m", metavar="NAME", help="Preset to train (= model.preset).", show_default=False),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            metavar="FILE",
            help="Teacher to distil from: the authors' psp101.pkl, a psp* or gpsp* checkpoint (a file or an http(s) URL).",
            show_default=False,
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            metavar="FILE",
            help="Starting weights: a per-frame PSPNet for a TDNet, ImageNet ResNet weights for a PSPNet (a file or an http(s) URL).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="Run folder name under run.out.", show_default=False)
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", metavar="DIR", help="Continue a run folder exactly (runs/NAME).", show_default=False),
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train TDNet (or its PSPNet teacher) on a Cityscapes-layout folder; resumable.

    Under `torchrun --nproc-per-node G -m tdnet_cli train ...` it runs DistributedDataParallel
    (nccl on GPUs, gloo on CPUs); only rank 0 logs and writes checkpoints."""
    sets = list(overrides or [])
    for key, value in (
        ("data.root", data),
        ("model.preset", preset),
        ("model.teacher", teacher),
        ("model.init", init),
        ("run.name", name),
    ):
        if value is not None:
            sets.append(f"{key}={toml_string(value)}")  # a TOML string: quotes and backslashes kept
    cfg = load_run_config(resume, sets) if resume else load_config(config, sets)
    main = int(os.environ.get("RANK", "0")) == 0
    show = main and not quiet and not as_json
    try:
        result = _train_with_bar(cfg, resume, show)
    except KeyboardInterrupt as exc:
        # One line: how it stopped and, from train's note, where last.pt is and how to go on.
        code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
        what = "terminated (SIGTERM)" if code == EXIT_TERMINATED else "interrupted"
        raise fail(" ".join([what, *getattr(exc, "__notes__", [])]), code) from None
    if as_json and main:
        typer.echo(json.dumps(result.to_dict()))
    elif show:
        console.print(
            f"run: {escape(str(result.run_dir))}  final loss {result.final_loss:.4f}"
            + (f"  best val mIoU {100 * result.best_miou:.2f}" if result.best_miou is not None else "")
            + f"\nweights: {escape(str(result.run_dir / 'model.pt'))}{_weights_from(result.model_source)}"
            + f"  (resume state: {escape(str(result.last))})"
        )
