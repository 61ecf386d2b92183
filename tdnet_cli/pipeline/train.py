"""`train`: TDNet with grouped knowledge distillation, resumable, on torch.distributed.

Read top to bottom: resolve the config -> set up (distributed) -> data -> model, teacher,
initialisation -> resume -> the loop (lr schedule, accumulation, AMP, logging,
checkpoints, validation) -> final weights. Under torchrun (RANK / WORLD_SIZE set) every
process trains a DistributedDataParallel replica (nccl on GPUs, gloo on CPUs); only
rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from tdnet_cli.config import validate
from tdnet_cli.data.clips import IterationSampler
from tdnet_cli.distributed import DistEnv, read_dist_env
from tdnet_cli.errors import (
    DataError,
)
from tdnet_cli.inference import resolve_device
from tdnet_cli.losses import Criterion
from tdnet_cli.models.registry import get_preset
from tdnet_cli.models.tdnet import TDNet
from tdnet_cli.pipeline.train_loop import ProgressFn, SavingFn, TrainLoop, get_lr
from tdnet_cli.pipeline.train_run import (
    load_train_state,
    read_train_state,
    remove_unfinished,
    run_dir_for,
)
from tdnet_cli.pipeline.train_setup import (
    TrainStep,
    build_student,
    build_teacher,
    initialise,
    make_dataset,
    make_loader,
    make_optimizer,
    place_models,
)
from tdnet_cli.pipeline.train_signals import StopAtBoundary

__all__ = ["TrainResult", "get_lr", "train"]

StartFn = Callable[[int, int], None]  # (iteration the run starts at, total): the checks passed, work begins


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    last: Path
    best: Path | None
    best_miou: float | None
    final_loss: float | None
    log: Path
    interrupted: bool = False
    history: list[dict] = field(default_factory=list)
    model_source: dict = field(default_factory=dict)  # {"model_from": "best" | "last", "model_iteration": k}

    def to_dict(self) -> dict:
        """What a script needs after a run (mIoU as a fraction, as in eval's JSON)."""
        val = [r for r in self.history if "val_miou" in r]
        return {
            "run_dir": str(self.run_dir),
            "iterations": self.iterations,
            "weights": str(self.run_dir / "model.pt"),
            "weights_from": self.model_source.get("model_from"),  # "best" (validated) or "last"
            "weights_iteration": self.model_source.get("model_iteration"),
            "last": str(self.last),
            "best": str(self.best) if self.best else None,
            "best_val_miou": self.best_miou,
            "final_val_miou": val[-1]["val_miou"] if val else None,
            "final_loss": self.final_loss,
            "metrics_log": str(self.log),
            "interrupted": self.interrupted,
        }


def _setup_distributed(device_opt: str) -> tuple[DistEnv, torch.device]:
    d = read_dist_env()
    if not d.distributed:
        return d, resolve_device(device_opt)
    device = resolve_device(device_opt)
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d, device


# -- the run -------------------------------------------------------------------------------------
def _has_validation(root: Path, split: str, val_every: int) -> bool:
    """Whether to validate: the split's ground truth is there. A split with frames but no
    ground truth is refused when validation is asked for; a split that is not there at all
    (a training-only folder) just skips validation."""
    if not (root / "gtFine" / split).is_dir():
        if val_every and any((root / top / split).is_dir() for top in ("leftImg8bit", "leftImg8bit_sequence")):
            raise DataError(
                f"data.val_split {split!r} has frames but no ground truth under {root / 'gtFine'}",
                hint="validate on a split with gtFine labels, or set run.val_every=0",
            )
        return False
    return True


def _autocast(device: torch.device, cuda_amp: bool, cpu_amp: bool = False):
    """The autocast context for the forward pass and its dtype (None: full fp32)."""
    if device.type == "cuda" and cuda_amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype), dtype
    if device.type == "cpu" and cpu_amp:
        # Weights, gradients and the optimiser stay fp32; bf16 needs no loss scaling.
        return torch.autocast("cpu", dtype=torch.bfloat16), torch.bfloat16
    return torch.autocast(device.type, enabled=False), None


def _precision(device: torch.device, r_cfg: dict):
    """The forward pass's autocast context and the gradient scaler: fp16 (CUDA without bf16)
    needs loss scaling; bf16 and fp32 do not."""
    autocast, amp_dtype = _autocast(device, r_cfg["amp"], r_cfg["amp_cpu"])
    return autocast, torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)


def train(
    config: dict,
    *,
    resume: str | None = None,
    progress: ProgressFn | None = None,
    log: Callable[[str], None] | None = None,
    started: StartFn | None = None,
    saving: SavingFn | None = None,
) -> TrainResult:
    """Train as ``config`` says (see tdnet_cli.config.DEFAULTS); with ``resume`` (a run folder)
    continue it exactly: model, optimiser, scaler and iteration come from its last.pt, and
    data order, augmentation, paths and dropout are functions of (seed, iteration).
    Nothing is printed: rank 0 reports through ``log`` (notes), ``started`` (once, when the
    checks passed), ``progress`` (every iteration) and ``saving`` (an interruption saving last.pt)."""
    validate(config)
    m_cfg, d_cfg, o_cfg, r_cfg = config["model"], config["data"], config["optim"], config["run"]
    ddp, device = _setup_distributed(r_cfg["device"])
    say = (log or (lambda s: None)) if ddp.is_main else (lambda s: None)
    run_dir = run_dir_for(config, resume)
    saved = read_train_state(run_dir, o_cfg["iterations"]) if resume else None  # a finished run stops here
    if started and ddp.is_main:
        started(saved.iteration if saved else 0, o_cfg["iterations"])

    # Data first: a missing or broken folder fails before any model work.
    preset = get_preset(m_cfg["preset"])
    torch.manual_seed(r_cfg["seed"])  # the same initial weights in every run and on every rank
    model = build_student(preset, m_cfg)
    dataset = make_dataset(model, d_cfg, r_cfg["seed"])
    has_val = _has_validation(Path(d_cfg["root"]), d_cfg["val_split"], r_cfg["val_every"])

    initialise(model, preset, m_cfg, say)
    teacher = build_teacher(m_cfg, preset, model)
    channels_last = place_models(model, teacher, device)
    if ddp.world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = make_optimizer(model, o_cfg)
    autocast, scaler = _precision(device, r_cfg)
    start, best_miou = 0, None
    if saved:
        load_train_state(saved, model, optimizer, scaler)
        start, best_miou, saved = saved.iteration, saved.best_miou, None  # the tensors now live in the model
        say(f"resumed {run_dir} at iteration {start}")
    core, model = model, _parallel(model, ddp, device)
    iterations, accum = o_cfg["iterations"], o_cfg["accumulate"]
    sampler = IterationSampler(start * accum, iterations * accum, d_cfg["batch_size"], ddp.rank, ddp.world)
    step = TrainStep(
        model, teacher, Criterion(config["loss"]), scaler, autocast, device, channels_last,
        clip_len=dataset.clip_len, tdnet=isinstance(core, TDNet), accum=accum,
    )  # fmt: skip
    loop = TrainLoop(
        config, preset.name, model, core, optimizer, scaler, step, ddp, device, run_dir, start, best_miou,
        has_val, resumed=bool(resume), progress=progress, saving=saving,
    )  # fmt: skip
    last = _run(loop, make_loader(dataset, sampler, d_cfg, device), ddp.is_main and not resume)
    best = run_dir / "best.pt"
    return TrainResult(
        run_dir, iterations, last, best if best.exists() else None, loop.best_miou, loop.last_loss,
        loop.log_path, False, loop.history, loop.model_source,
    )  # fmt: skip


def _parallel(model: nn.Module, ddp: DistEnv, device: torch.device) -> nn.Module:
    """The module that runs the step: a DistributedDataParallel replica under torchrun."""
    if ddp.world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def _run(loop: TrainLoop, loader, fresh: bool) -> Path:
    """The loop, with signals held to iteration boundaries; an interruption saves last.pt and
    re-raises. A new run (``fresh``, rank 0) that fails before saving anything resumable leaves
    no run folder behind, so its name stays free."""
    made = fresh and not loop.run_dir.exists()
    try:
        with StopAtBoundary() as stop:
            try:
                return loop.run(loader, stop)
            except KeyboardInterrupt as exc:
                loop.interrupted(exc, stop)
                raise
            finally:
                loop.stop_workers()
    except Exception:
        if fresh:
            remove_unfinished(loop.run_dir, made)
        raise
