"""A training run's folder and state: where it goes, saving and loading last.pt, the metrics log."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tdnet_cli.errors import CheckpointError, OutputExistsError, UsageError, few, first_line
from tdnet_cli.fileio import check_writable, write_error, write_text
from tdnet_cli.models.checkpoint import FORMAT as CHECKPOINT_FORMAT
from tdnet_cli.models.checkpoint import (
    LoadedModel,
    load_payload,
    load_state_dict_strict,
    read_state_dict,
    save_checkpoint,
)

__all__ = [
    "SavedState",
    "load_matching",
    "load_train_state",
    "read_train_state",
    "remove_unfinished",
    "run_dir_for",
    "save",
    "truncate_log",
]


def run_dir_for(config: dict, resume: str | None) -> Path:
    """The run folder: an existing one to resume, or a new (or empty) one that can be made."""
    if resume:
        run = Path(resume)
        if not (run / "last.pt").is_file():
            raise UsageError(f"nothing to resume in {run}: no last.pt", hint="pass the run folder, e.g. runs/NAME")
        return run
    r = config["run"]
    name = r["name"] or f"{config['model']['preset']}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run = Path(r["out"]) / name
    check_writable(run, "run.out", hint="set run.out to a folder you can write in")
    if run.exists() and any(run.iterdir()):
        raise OutputExistsError(f"run folder {run} exists", hint=f"continue it with --resume {run}, or pick a --name")
    return run


def save(path: Path, loaded: LoadedModel, extra: dict | None = None) -> Path:
    """save_checkpoint (atomic: the previous file stays until the new one is whole), with a failed
    write as one WriteError line (a full disk says so)."""
    try:
        return save_checkpoint(path, loaded, extra=extra)
    except OSError as exc:
        raise write_error(path, exc) from None


def load_matching(model: nn.Module, path: str, preset_name: str) -> None:
    """model.resume_weights: every tensor of the file whose name the model has (fine-tuning may
    drop a head); one of another shape is a CheckpointError, not a traceback."""
    src, own = read_state_dict(path, "model.resume_weights"), model.state_dict()
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in src.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if shapes or not any(k in own for k in src):
        detail = f"shape mismatch (file vs model): {few(shapes)}" if shapes else "no tensor names in common"
        raise CheckpointError(
            f"model.resume_weights {path} does not fit {preset_name}: {detail}",
            hint="pass weights of the same preset, or --init for a per-frame PSPNet",
        )
    model.load_state_dict({k: v for k, v in src.items() if k in own}, strict=False)


@dataclass
class SavedState:
    """What run_dir/last.pt holds, read once: checked before any work, loaded after the model is built."""

    path: Path
    iteration: int
    best_miou: float | None
    state_dict: dict
    train_state: dict


_FIX = "restore a good copy of last.pt, or start anew with another --name"


def read_train_state(run_dir: Path, iterations: int) -> SavedState:
    """run_dir/last.pt through the guarded loader (weights only, never unpickling code), and where
    it stands against ``iterations``: a run already there (or past it) is refused here, before any
    data or model work. A truncated, foreign or damaged file is one CheckpointError."""
    path = run_dir / "last.pt"
    try:
        state = load_payload(path)
    except CheckpointError as exc:
        raise CheckpointError(exc.message, hint=_FIX) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a training state saved by tdnet train", hint=_FIX)
    ts, sd = state.get("train_state"), state.get("state_dict")
    if not isinstance(ts, dict) or not isinstance(sd, dict):
        raise CheckpointError(f"{path} holds weights but no training state", hint=_FIX)
    iteration, best = ts.get("iteration"), ts.get("best_miou")
    if not isinstance(iteration, int) or iteration < 0 or not (best is None or isinstance(best, float)):
        raise CheckpointError(
            f"{path} holds a damaged training state (iteration {iteration!r}, best_miou {best!r})", hint=_FIX
        )
    if iteration == iterations:
        raise UsageError(
            f"{run_dir} is already at {iteration}/{iterations} iterations",
            hint=f"raise optim.iterations to continue, e.g. --set optim.iterations={2 * iterations}",
        )
    if iteration > iterations:
        raise UsageError(
            f"{path} is at iteration {iteration}, past optim.iterations={iterations}",
            hint=f"resume with --set optim.iterations=N, N > {iteration}",
        )
    return SavedState(path, iteration, best, sd, ts)


def load_train_state(saved: SavedState, model: nn.Module, optimizer, scaler) -> None:
    """Model, optimiser and scaler from what read_train_state read; a state that does not fit
    them is one CheckpointError."""
    path, ts = saved.path, saved.train_state
    try:
        load_state_dict_strict(model, saved.state_dict, str(path), f"the model of {path.parent / 'config.toml'}")
    except CheckpointError as exc:
        raise CheckpointError(exc.message, hint=_FIX) from None
    try:
        optimizer.load_state_dict(ts["optimizer"])
        for group in optimizer.param_groups:
            for p in group["params"]:
                buf = optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None and (not isinstance(buf, torch.Tensor) or buf.shape != p.shape):
                    raise ValueError("a momentum buffer does not fit its parameter")
        if ts["scaler"] or not scaler.is_enabled():  # a run begun without loss scaling starts a fresh scaler
            scaler.load_state_dict(ts["scaler"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{path} holds a damaged training state ({first_line(exc)})", hint=_FIX) from None


def truncate_log(log_path: Path, iteration: int) -> None:
    """Keep the records up to ``iteration``: a run killed (``kill -9``) after its last save had
    logged later ones, which the resumed run logs again. A torn last line goes too. Atomic."""
    if not log_path.is_file():
        return
    text = log_path.read_text(errors="replace")
    keep = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("iteration"), int) and rec["iteration"] <= iteration:
            keep.append(line + "\n")
    if "".join(keep) != text:
        write_text(log_path, "".join(keep))


def remove_unfinished(run_dir: Path, made: bool) -> None:
    """A new run that failed before it saved last.pt cannot be resumed: remove the files it wrote
    (nothing else), and the folder if this run made it and it is empty, so the name is free."""
    if (run_dir / "last.pt").exists():
        return
    for name in ("config.toml", "metrics.jsonl"):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink(missing_ok=True)
    if made:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only if empty
