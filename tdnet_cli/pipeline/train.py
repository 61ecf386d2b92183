"""`train`: TDNet with grouped knowledge distillation, resumable, on torch.distributed.

Read top to bottom: resolve the config -> set up (distributed) -> data -> model, teacher,
initialisation -> resume -> the loop (lr schedule, accumulation, AMP, logging,
checkpoints, validation) -> final weights. Under torchrun (RANK / WORLD_SIZE set) every
process trains a DistributedDataParallel replica (nccl on GPUs, gloo on CPUs); only
rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from tdnet_cli.config import dump_toml, validate
from tdnet_cli.data.clips import AugmentConfig, ClipDataset, IterationSampler
from tdnet_cli.distributed import DistEnv, read_dist_env
from tdnet_cli.errors import (
    DataError,
    UsageError,
)
from tdnet_cli.fileio import write_text
from tdnet_cli.inference import Predictor, resolve_device
from tdnet_cli.losses import Criterion
from tdnet_cli.models.checkpoint import LoadedModel
from tdnet_cli.models.registry import get_preset
from tdnet_cli.pipeline.train_run import (
    load_train_state,
    read_train_state,
    remove_unfinished,
    run_dir_for,
    save,
    truncate_log,
)
from tdnet_cli.pipeline.train_setup import (
    TrainStep,
    build_student,
    build_teacher,
    initialise,
    make_loader,
    place_models,
)
from tdnet_cli.pipeline.train_signals import IterationBuffers, StopAtBoundary

__all__ = ["TrainResult", "get_lr", "train"]

# (iteration, total, this iteration's record): called every iteration; the record is what metrics.jsonl
# logs every run.log_every iterations, plus "run_it_s", the rate of the whole loop so far.
ProgressFn = Callable[[int, int, dict], None]
StartFn = Callable[[int, int], None]  # (iteration the run starts at, total): the checks passed, work begins
SavingFn = Callable[[int, Path], None]  # (iteration, last.pt): an interruption is saving the state now


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

    def to_dict(self) -> dict:
        """What a script needs after a run (mIoU as a fraction, as in eval's JSON)."""
        val = [r for r in self.history if "val_miou" in r]
        return {
            "run_dir": str(self.run_dir),
            "iterations": self.iterations,
            "weights": str(self.run_dir / "model.pt"),
            "last": str(self.last),
            "best": str(self.best) if self.best else None,
            "best_val_miou": self.best_miou,
            "final_val_miou": val[-1]["val_miou"] if val else None,
            "final_loss": self.final_loss,
            "metrics_log": str(self.log),
            "interrupted": self.interrupted,
        }


def get_lr(it: int, o: dict) -> float:
    """Linear warm-up from warmup_ratio*lr, then poly decay to 0 at the last iteration."""
    if it < o["warmup_iters"]:
        r = o["warmup_ratio"]
        return o["lr"] * (r + (1 - r) * it / max(1, o["warmup_iters"]))
    return o["lr"] * (1 - it / o["iterations"]) ** o["power"]


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


def _weights_digest(model: nn.Module) -> str:
    """SHA-256 of the parameters. (BatchNorm running stats are left out: each replica updates
    them from its own batch and DDP re-broadcasts rank 0's at every forward.)"""
    h = hashlib.sha256()
    for k, v in model.named_parameters():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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


def _loaded_for_save(model: nn.Module, preset: str, provenance: dict, keep_aux: bool) -> LoadedModel:
    """A checkpointable copy; without the training-only auxiliary head unless ``keep_aux``."""
    if keep_aux:
        return LoadedModel(model=model, preset=preset, provenance=provenance)
    cfg = type(model.config)(**{**model.config.__dict__, "aux": False})
    clean = type(model)(cfg)
    clean.load_state_dict({k: v for k, v in model.state_dict().items() if k in clean.state_dict()})
    return LoadedModel(model=clean.eval(), preset=preset, provenance=provenance)


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
    clip_len = getattr(model, "num_paths", 1) if preset.kind == "tdnet" else 1
    augment = AugmentConfig(
        crop=tuple(model.input_size),
        scale=tuple(d_cfg["scale"]),
        flip=d_cfg["flip"],
        rotate=d_cfg["rotate"],
        color_jitter=d_cfg["color_jitter"],
    )
    dataset = ClipDataset(d_cfg["root"], d_cfg["train_split"], clip_len=clip_len, augment=augment, seed=r_cfg["seed"])
    has_val = _has_validation(Path(d_cfg["root"]), d_cfg["val_split"], r_cfg["val_every"])

    initialise(model, preset, m_cfg, say)
    teacher = build_teacher(m_cfg, preset, model)
    channels_last = place_models(model, teacher, device)
    if ddp.world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=o_cfg["lr"], momentum=o_cfg["momentum"], weight_decay=o_cfg["weight_decay"]
    )
    autocast, amp_dtype = _autocast(device, r_cfg["amp"], r_cfg["amp_cpu"])
    # fp16 (CUDA without bf16) needs loss scaling; bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    start, best_miou = 0, None
    if saved:
        load_train_state(saved, model, optimizer, scaler)
        start, best_miou = saved.iteration, saved.best_miou
        del saved  # the tensors now live in the model and optimiser
        say(f"resumed {run_dir} at iteration {start}")
    core = model
    if ddp.world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )

    log_path = run_dir / "metrics.jsonl"
    iterations, accum = o_cfg["iterations"], o_cfg["accumulate"]
    sampler = IterationSampler(start * accum, iterations * accum, d_cfg["batch_size"], ddp.rank, ddp.world)
    loader = make_loader(dataset, sampler, d_cfg, device)
    step = TrainStep(
        model,
        teacher,
        Criterion(config["loss"]),
        scaler,
        autocast,
        device,
        channels_last,
        seed=r_cfg["seed"],
        rank=ddp.rank,
        clip_len=clip_len,
        tdnet=preset.kind == "tdnet",
        accum=accum,
    )
    history: list[dict] = []
    last_loss, interrupted = None, False
    t_log, completed, logged = time.perf_counter(), start, start
    buffers = IterationBuffers(core)
    mid_iteration = False  # the model's buffers have moved past `completed` (a forward pass ran)

    def save_last(iteration: int) -> Path:
        provenance = {"config": config, "iteration": iteration, "preset": preset.name}
        payload = {
            "iteration": iteration,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "best_miou": best_miou,
        }
        return save(
            run_dir / "last.pt",
            _loaded_for_save(core, preset.name, provenance, keep_aux=True),
            extra={"train_state": payload},
        )

    def write_log(record: dict) -> None:
        history.append(record)
        if ddp.is_main:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    batches, made = None, ddp.is_main and not resume and not run_dir.exists()
    try:
        with StopAtBoundary() as stop:
            try:
                if ddp.is_main:
                    run_dir.mkdir(parents=True, exist_ok=True)
                    write_text(run_dir / "config.toml", dump_toml(config))
                    if resume:
                        truncate_log(log_path, start)
                batches = iter(loader)
                model.train()
                t_run = time.perf_counter()
                for it in range(start, iterations):
                    stop.hold = True
                    buffers.take()
                    mid_iteration = True
                    # Dropout and friends draw from a generator seeded by (seed, iteration, rank), so a
                    # resumed run repeats exactly what an uninterrupted one would have drawn.
                    torch.manual_seed((r_cfg["seed"] * 1_000_003 + it) * 1009 + ddp.rank)
                    lr = get_lr(it, o_cfg)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    loss_sum, terms_sum = step.gradients(batches, it)
                    stop.critical = True  # the step is never cut: parameters and momenta move together
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    completed, mid_iteration = it + 1, False
                    stop.critical = False
                    if not math.isfinite(loss_sum):
                        raise UsageError(f"the loss became {loss_sum} at iteration {it}", hint="lower optim.lr")
                    last_loss = loss_sum
                    done, now = it + 1, time.perf_counter()
                    record = {
                        "iteration": done,
                        "loss": loss_sum,
                        **terms_sum,
                        "lr": lr,
                        "it_s": (done - logged) / max(now - t_log, 1e-9),  # since the last record logged
                        "time": time.time(),
                    }
                    if done % r_cfg["log_every"] == 0 or done == iterations or done == start + 1:
                        t_log, logged = now, done
                        write_log(record)
                    if progress and ddp.is_main:  # every iteration: the bar moves even between log records
                        run_rate = (done - start) / max(now - t_run, 1e-9)  # the whole loop, validation included
                        progress(done, iterations, {**record, "run_it_s": run_rate})
                    if ddp.is_main and (done % r_cfg["save_every"] == 0):
                        save_last(done)
                    stop.check()  # a signal held during this iteration stops here, at the boundary
                    stop.hold = False
                    if has_val and r_cfg["val_every"] and done % r_cfg["val_every"] == 0 and done != iterations:
                        best_miou = _validate(
                            core, preset.name, config, device, done, best_miou, run_dir, write_log, ddp
                        )
                        model.train()
                stop.hold = False
                if has_val and iterations > start:
                    best_miou = _validate(
                        core, preset.name, config, device, iterations, best_miou, run_dir, write_log, ddp
                    )
                last = _finish(
                    core, preset.name, config, iterations, best_miou, last_loss, run_dir, write_log, ddp, save_last
                )
            except KeyboardInterrupt as exc:
                interrupted = stop.critical = True  # no further signal cuts the save of last.pt
                if mid_iteration:  # a second signal cut the iteration: back to where it began
                    buffers.restore()
                if ddp.is_main and (run_dir / "config.toml").is_file():  # else nothing was made yet
                    if saving:  # writing last.pt takes seconds: say so before, not only after
                        saving(completed, run_dir / "last.pt")
                    save_last(completed)
                    exc.add_note(
                        f"after iteration {completed}: saved {run_dir / 'last.pt'}; continue with --resume {run_dir}"
                    )
                raise
            finally:
                shutdown = getattr(batches, "_shutdown_workers", None)
                if shutdown is not None:  # workers ignore SIGTERM: stop them now, not at garbage collection
                    shutdown()
    except Exception:
        if ddp.is_main and not resume:
            remove_unfinished(run_dir, made)  # nothing resumable was saved: the name stays free
        raise
    best = run_dir / "best.pt"
    return TrainResult(
        run_dir, iterations, last, best if best.exists() else None, best_miou, last_loss, log_path, interrupted, history
    )


def _finish(core, preset_name, config, iterations, best_miou, last_loss, run_dir, write_log, ddp, save_last) -> Path:
    """After the last iteration: replicas' agreement (DDP), last.pt and the final model.pt."""
    if ddp.world > 1:
        digests = [None] * ddp.world
        dist.all_gather_object(digests, _weights_digest(core))
        write_log({"iteration": iterations, "ranks_in_sync": len(set(digests)) == 1, "weights_sha256": digests})
        dist.barrier()
    if not ddp.is_main:
        return run_dir / "last.pt"
    last = save_last(iterations)
    final_provenance = {
        "config": config,
        "iterations": iterations,
        "preset": preset_name,
        "best_val_miou": best_miou,
        "final_loss": last_loss,
    }
    save(run_dir / "model.pt", _loaded_for_save(core, preset_name, final_provenance, keep_aux=False))
    return last


def _validate(core, preset_name, config, device, iteration, best_miou, run_dir, write_log, ddp) -> float | None:
    """Score the current weights with the eval core (rank 0) and keep best.pt."""
    from tdnet_cli.pipeline.evaluate import evaluate

    if not ddp.is_main:
        if ddp.world > 1:
            dist.barrier()
        return best_miou
    d, r = config["data"], config["run"]
    loaded = _loaded_for_save(core, preset_name, {}, keep_aux=False)
    pred = Predictor(
        LoadedModel(model=copy.deepcopy(loaded.model).to(device).eval(), preset=preset_name), device=device
    )
    try:
        # Every path scored on each frame: a video runs them all, and they can differ by points.
        report = evaluate(
            d["root"],
            predictor=pred,
            split=d["val_split"],
            limit=r["val_limit"] or None,
            skip_missing=True,
            all_paths=True,
        )
    except DataError as exc:
        write_log({"iteration": iteration, "val_error": str(exc)})
        if ddp.world > 1:
            dist.barrier()
        return best_miou
    miou = report.scores.miou
    write_log(
        {
            "iteration": iteration,
            "val_miou": miou,
            "val_pixel_accuracy": report.scores.pixel_accuracy,
            "val_frames": report.evaluated,
            "val_paths": report.paths_scored,
        }
    )
    if best_miou is None or miou > best_miou:
        best_miou = miou
        provenance = {"config": config, "iteration": iteration, "val_miou": miou, "preset": preset_name}
        save(run_dir / "best.pt", _loaded_for_save(core, preset_name, provenance, keep_aux=False))
    if ddp.world > 1:
        dist.barrier()
    return best_miou
