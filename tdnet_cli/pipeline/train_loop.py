"""The training loop of `train`: iterations, the learning-rate schedule, logging, checkpoints,
validation and the final weights, held in one :class:`TrainLoop` (no closures), so a run
reads top to bottom in :func:`tdnet_cli.pipeline.train.train`.

Every process runs the loop; only rank 0 logs and writes. A signal is held to the iteration
boundary (:class:`~tdnet_cli.pipeline.train_signals.StopAtBoundary`); on an interruption the
loop saves last.pt at the last whole iteration, so ``--resume`` repeats exactly what an
uninterrupted run would have done.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from tdnet_cli.config import dump_toml
from tdnet_cli.distributed import DistEnv
from tdnet_cli.errors import DataError, UsageError
from tdnet_cli.fileio import write_text
from tdnet_cli.inference import Predictor
from tdnet_cli.models.checkpoint import LoadedModel, load_checkpoint
from tdnet_cli.pipeline.train_run import save, truncate_log
from tdnet_cli.pipeline.train_setup import TrainStep
from tdnet_cli.pipeline.train_signals import IterationBuffers, StopAtBoundary

__all__ = ["ProgressFn", "SavingFn", "TrainLoop", "get_lr"]

# (iteration, total, this iteration's record): called every iteration; the record is what metrics.jsonl
# logs every run.log_every iterations, plus "run_it_s", the rate of the whole loop so far.
ProgressFn = Callable[[int, int, dict], None]
SavingFn = Callable[[int, Path], None]  # (iteration, last.pt): an interruption is saving the state now


EXP_WARMUP_START = 1e-5  # the exponential warm-up's first learning rate (the authors')


def get_lr(it: int, o: dict) -> float:
    """The learning rate of iteration ``it`` (0-based) as ``optim`` says.

    "exp" (the authors'): 1e-5 * (lr / 1e-5) ** (it / warmup_iters) during the warm-up, so it
    reaches lr at ``warmup_iters``, then poly decay over the remaining iterations, to 0 at the
    last. "linear": from warmup_ratio * lr up to lr, then poly decay over all iterations."""
    lr, warm, total = o["lr"], o["warmup_iters"], o["iterations"]
    if o["warmup"] == "linear":
        if it < warm:
            return lr * (o["warmup_ratio"] + (1 - o["warmup_ratio"]) * it / warm)
        return lr * (1 - it / total) ** o["power"]
    if it < warm:
        return EXP_WARMUP_START * (lr / EXP_WARMUP_START) ** (it / warm)
    return lr * max(0.0, 1 - (it - warm) / max(1, total - warm)) ** o["power"]


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the parameters. (BatchNorm running stats are left out: each replica updates
    them from its own batch and DDP re-broadcasts rank 0's at every forward.)"""
    h = hashlib.sha256()
    for k, v in model.named_parameters():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def loaded_for_save(model: nn.Module, preset: str, provenance: dict, keep_aux: bool) -> LoadedModel:
    """A checkpointable copy; without the training-only auxiliary head unless ``keep_aux``."""
    if keep_aux:
        return LoadedModel(model=model, preset=preset, provenance=provenance)
    cfg = type(model.config)(**{**model.config.__dict__, "aux": False})
    clean = type(model)(cfg)
    clean.load_state_dict({k: v for k, v in model.state_dict().items() if k in clean.state_dict()})
    return LoadedModel(model=clean.eval(), preset=preset, provenance=provenance)


@dataclass
class TrainLoop:
    """One run's loop and everything it writes under ``run_dir``.

    ``model`` runs the step (a DistributedDataParallel wrapper under torchrun); ``core`` is the
    model itself, which is saved and validated."""

    config: dict
    preset: str
    model: nn.Module
    core: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    step: TrainStep
    ddp: DistEnv
    device: torch.device
    run_dir: Path
    start: int
    best_miou: float | None
    has_val: bool
    resumed: bool = False
    progress: ProgressFn | None = None
    saving: SavingFn | None = None
    history: list[dict] = field(default_factory=list)
    last_loss: float | None = None
    model_source: dict = field(default_factory=dict)  # what model.pt holds (final_weights), once written

    def __post_init__(self) -> None:
        self.iterations = self.config["optim"]["iterations"]
        self.completed = self.start  # iterations whose optimiser step is done
        self.mid_iteration = False  # the model's buffers have moved past `completed` (a forward pass ran)
        self.buffers = IterationBuffers(self.core)
        self.batches: Iterator | None = None  # the loader's iterator, once the loop started

    def stop_workers(self) -> None:
        """Stop the loader's worker processes now (they ignore SIGTERM), not at garbage collection."""
        shutdown = getattr(self.batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    @property
    def log_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    # -- writing -------------------------------------------------------------------------------
    def write_log(self, record: dict) -> None:
        self.history.append(record)
        if self.ddp.is_main:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def save_last(self, iteration: int) -> Path:
        provenance = {"config": self.config, "iteration": iteration, "preset": self.preset}
        payload = {
            "iteration": iteration,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_miou": self.best_miou,
        }
        return save(
            self.run_dir / "last.pt",
            loaded_for_save(self.core, self.preset, provenance, keep_aux=True),
            extra={"train_state": payload},
        )

    # -- the loop ------------------------------------------------------------------------------
    def run(self, loader: Iterable, stop: StopAtBoundary) -> Path:
        """Every iteration left, the last validation and the final weights; returns last.pt."""
        if self.ddp.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.run_dir / "config.toml", dump_toml(self.config))
            if self.resumed:
                truncate_log(self.log_path, self.start)
        self.batches = iter(loader)
        self.model.train()
        clock = _Clock(time.perf_counter(), self.start)
        for it in range(self.start, self.iterations):
            self.iteration(it, self.batches, stop, clock)
        stop.hold = False
        if self.has_val and self.iterations > self.start:
            self.validate(self.iterations)
        return self.finish()

    def iteration(self, it: int, batches, stop: StopAtBoundary, clock: _Clock) -> None:
        """One iteration: gradients, the optimiser step, then log, save and validate as due."""
        r_cfg = self.config["run"]
        stop.hold = True
        self.buffers.take()
        self.mid_iteration = True
        # Dropout and friends draw from a generator seeded by (seed, iteration, rank), so a
        # resumed run repeats exactly what an uninterrupted one would have drawn.
        torch.manual_seed((r_cfg["seed"] * 1_000_003 + it) * 1009 + self.ddp.rank)
        lr = get_lr(it, self.config["optim"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, terms = self.step.gradients(batches, it)
        stop.critical = True  # the step is never cut: parameters and momenta move together
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.completed, self.mid_iteration = it + 1, False
        stop.critical = False
        if not math.isfinite(loss):
            raise UsageError(f"the loss became {loss} at iteration {it}", hint="lower optim.lr")
        self.last_loss = loss
        path = {"path": self.step.paths[-self.step.accum]} if self.step.paths else {}  # the iteration's first
        self.report(it + 1, {"loss": loss, **terms, "lr": lr, **path}, clock)
        if self.ddp.is_main and (it + 1) % r_cfg["save_every"] == 0:
            self.save_last(it + 1)
        stop.check()  # a signal held during this iteration stops here, at the boundary
        stop.hold = False
        if self.has_val and r_cfg["val_every"] and (it + 1) % r_cfg["val_every"] == 0 and it + 1 != self.iterations:
            self.validate(it + 1)
            self.model.train()

    def report(self, done: int, values: dict, clock: _Clock) -> None:
        """Log every run.log_every iterations (and the first and last); progress every one."""
        now = time.perf_counter()
        record = {
            "iteration": done,
            **values,
            "it_s": (done - clock.logged) / max(now - clock.t_log, 1e-9),  # since the last record logged
            "time": time.time(),
        }
        if done % self.config["run"]["log_every"] == 0 or done == self.iterations or done == self.start + 1:
            clock.t_log, clock.logged = now, done
            self.write_log(record)
        if self.progress and self.ddp.is_main:  # every iteration: the bar moves even between log records
            run_rate = (done - self.start) / max(now - clock.t_run, 1e-9)  # the whole loop, validation included
            self.progress(done, self.iterations, {**record, "run_it_s": run_rate})

    def interrupted(self, exc: KeyboardInterrupt, stop: StopAtBoundary) -> None:
        """Ctrl-C or SIGTERM: back to the last whole iteration and save last.pt (rank 0)."""
        stop.critical = True  # no further signal cuts the save of last.pt
        if self.mid_iteration:  # a second signal cut the iteration: back to where it began
            self.buffers.restore()
        if self.ddp.is_main and (self.run_dir / "config.toml").is_file():  # else nothing was made yet
            last = self.run_dir / "last.pt"
            if self.saving:  # writing last.pt takes seconds: say so before, not only after
                self.saving(self.completed, last)
            self.save_last(self.completed)
            exc.add_note(f"after iteration {self.completed}: saved {last}; continue with --resume {self.run_dir}")

    # -- after the loop ------------------------------------------------------------------------
    def finish(self) -> Path:
        """After the last iteration: replicas' agreement (DDP), last.pt and the final model.pt."""
        if self.ddp.world > 1:
            digests, paths = [None] * self.ddp.world, [None] * self.ddp.world
            dist.all_gather_object(digests, weights_digest(self.core))
            dist.all_gather_object(paths, self.step.paths)  # every micro-step's path, this session
            self.write_log(
                {
                    "iteration": self.iterations,
                    "ranks_in_sync": len(set(digests)) == 1,
                    "weights_sha256": digests,
                    "paths_in_sync": all(p == paths[0] for p in paths),
                    "paths_run": len(paths[0]),
                }
            )
            dist.barrier()
        if not self.ddp.is_main:
            return self.run_dir / "last.pt"
        last = self.save_last(self.iterations)
        final, source = self.final_weights()
        self.write_log({"iteration": self.iterations, **source})
        save(self.run_dir / "model.pt", final)
        return last

    def final_weights(self) -> tuple[LoadedModel, dict]:
        """model.pt: the best validated weights (best.pt) when validation ran, else the last
        iteration's; and which it is ({"model_from": "best" | "last", "model_iteration": k})."""
        best = self.run_dir / "best.pt"
        if self.best_miou is not None and best.is_file():
            chosen = load_checkpoint(best, device="cpu")
            source = {"model_from": "best", "model_iteration": chosen.provenance.get("iteration")}
            source["model_val_miou"] = chosen.provenance.get("val_miou")
            model = chosen.model
        else:
            source = {"model_from": "last", "model_iteration": self.iterations}
            model = loaded_for_save(self.core, self.preset, {}, keep_aux=False).model
        provenance = {
            "config": self.config,
            "iterations": self.iterations,
            "preset": self.preset,
            "best_val_miou": self.best_miou,
            "final_loss": self.last_loss,
            **source,
        }
        self.model_source = source
        return LoadedModel(model=model, preset=self.preset, provenance=provenance), source

    def validate(self, iteration: int) -> None:
        """Score the current weights with the eval core (rank 0) and keep best.pt."""
        if self.ddp.is_main:
            self._score(iteration)
        if self.ddp.world > 1:
            dist.barrier()

    def _score(self, iteration: int) -> None:
        from tdnet_cli.pipeline.evaluate import evaluate

        d, r = self.config["data"], self.config["run"]
        loaded = loaded_for_save(self.core, self.preset, {}, keep_aux=False)
        model = copy.deepcopy(loaded.model).to(self.device).eval()
        pred = Predictor(LoadedModel(model=model, preset=self.preset), device=self.device)
        try:
            # Every path scored on each frame: a video runs them all, and they can differ by points.
            report = evaluate(
                d["root"], predictor=pred, split=d["val_split"], limit=r["val_limit"] or None,
                skip_missing=True, all_paths=True,
            )  # fmt: skip
        except DataError as exc:
            self.write_log({"iteration": iteration, "val_error": str(exc)})
            return
        miou = report.scores.miou
        self.write_log(
            {
                "iteration": iteration,
                "val_miou": miou,
                "val_pixel_accuracy": report.scores.pixel_accuracy,
                "val_frames": report.evaluated,
                "val_paths": report.paths_scored,
            }
        )
        if self.best_miou is None or miou > self.best_miou:
            self.best_miou = miou
            provenance = {"config": self.config, "iteration": iteration, "val_miou": miou, "preset": self.preset}
            save(self.run_dir / "best.pt", loaded_for_save(self.core, self.preset, provenance, keep_aux=False))


@dataclass
class _Clock:
    """When the loop started and when (at which iteration) the last record was logged."""

    t_run: float
    logged: int

    def __post_init__(self) -> None:
        self.t_log = self.t_run
