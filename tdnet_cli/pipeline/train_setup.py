"""What `train` builds before its loop: the student and its initialisation, the teacher, the
device placement and layout, the loader, and the step that turns a batch into gradients."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from tdnet_cli.data.clips import AugmentConfig, ClipDataset, IterationSampler
from tdnet_cli.errors import CheckpointError, TdnetError, UsageError
from tdnet_cli.losses import Criterion
from tdnet_cli.models.checkpoint import read_state_dict
from tdnet_cli.models.init import init_from_imagenet, init_tdnet_from_pspnet
from tdnet_cli.models.tdnet import TDNet
from tdnet_cli.models.teacher import load_teacher
from tdnet_cli.pipeline.train_run import load_matching
from tdnet_cli.pipeline.train_signals import ignore_stop_signals

__all__ = [
    "TrainStep",
    "build_student",
    "build_teacher",
    "channels_last_trains_safely",
    "init_from_pspnet",
    "init_weights",
    "initialise",
    "make_dataset",
    "make_loader",
    "make_optimizer",
    "next_batch",
    "path_for_step",
    "place_models",
    "scale_attention_logits",
    "set_train_memory_stride",
]


def channels_last_trains_safely(model: nn.Module) -> bool:
    """Whether the CPU may train ``model`` in channels_last. Not when it has a strided 1x1
    convolution with fewer than 8 input channels: torch 2.13's oneDNN (3.12, AVX2 jit_1x1
    backward-weights kernel) then corrupts the heap (one thread: a crash; two: sometimes a
    hang), measured with a lone Conv2d(4, 8, 1, stride=2) in channels_last. Only narrow
    ``model.width`` models have one; NCHW trains them correctly."""
    return not any(
        isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1) and m.in_channels < 8
        for m in model.modules()
    )


def path_for_step(step: int, num_paths: int) -> int:
    """The path the annotated frame of micro-step ``step`` runs: ``step mod num_paths``, as the
    authors train. The same on every process (with SyncBatchNorm, ranks on different paths
    would pool the statistics of different layers) and a function of the step alone, so a
    resumed run picks what an uninterrupted one would have."""
    return step % num_paths


def init_from_pspnet(model: nn.Module, path: str) -> int:
    """Copy a per-frame PSPNet's backbone (and pyramid convs) into every path, as the authors
    initialise TDNet. Returns how many tensors were copied."""
    sd = read_state_dict(path, "--init / model.init")
    own = model.state_dict()
    new = {}
    n = getattr(model, "num_paths", 1)
    for key, value in sd.items():
        if key.startswith("pretrained."):
            targets = (
                [f"pretrained{p + 1}.{key[len('pretrained.') :]}" for p in range(n)]
                if isinstance(model, TDNet)
                else [key]
            )
        elif key.startswith("head.conv5.0.") and isinstance(model, TDNet):
            targets = [f"psp{p + 1}.{key[len('head.conv5.0.') :]}" for p in range(n)]
        else:
            continue
        for t in targets:
            if t in own and own[t].shape == value.shape:
                new[t] = value
    if not new:
        raise CheckpointError(
            f"{path} has no backbone weights that fit {type(model).__name__}",
            hint="--init takes a per-frame PSPNet checkpoint of the same backbone",
        )
    model.load_state_dict(new, strict=False)
    return len(new)


def scale_attention_logits(model: TDNet, factor: float) -> None:
    """Multiply every query and key projection's last layer by sqrt(factor), so the attention
    logits grow by ``factor``. At the default initialisation their spread is ~0.1: attention
    is uniform, the propagated term is one vector per channel, the spatial LayerNorm removes
    it, and the propagation gets next to no gradient."""
    s = math.sqrt(factor)
    with torch.no_grad():
        for p in range(model.num_paths):
            enc = model.path_modules(p)["enc"]
            for proj in (enc.w_qs[1].conv, enc.w_ks[1].conv):
                proj.weight.mul_(s)
                proj.bias.mul_(s)


# -- distributed ------------------------------------------------------------------------------


def next_batch(batches) -> dict:
    """The next batch; an error a DataLoader worker raised (e.g. an unreadable frame) comes back
    as "Caught DataError in DataLoader worker process 0. Original Traceback ...": keep its line."""
    try:
        return next(batches)
    except TdnetError as exc:
        text = str(exc).strip()
        if "\n" not in text:
            raise
        last = text.splitlines()[-1]
        raise type(exc)(last.split(": ", 1)[-1]) from None


def build_student(preset, m_cfg: dict) -> nn.Module:
    """The model to train, as the preset and model.width / memory_stride / groups say."""
    overrides = {k: m_cfg[k] for k in ("width", "memory_stride", "groups") if m_cfg[k]}
    if preset.kind != "tdnet" and (tdnet_only := [k for k in overrides if k != "width"]):
        raise UsageError(f"model.{tdnet_only[0]} applies to TDNet presets only", hint="drop the key")
    try:
        return preset.build(aux=True, **overrides)
    except ValueError as exc:  # e.g. channels not divisible by the groups
        raise UsageError(
            f"{preset.name} cannot be built with {overrides}: {exc}",
            hint="choose model.width and model.groups that split the channels evenly",
        ) from None


def init_weights(model: nn.Module, path: str) -> str:
    """model.init, as the authors initialise: a TDNet from a per-frame PSPNet of its backbone
    (every path's backbone and pyramid, td4's head halves, the auxiliary heads; the rest
    kaiming); a per-frame model from ImageNet ResNet weights, or from a PSPNet's backbone
    and pyramid when the file is one. Returns what was done, in words."""
    state = read_state_dict(path, "--init / model.init")  # a missing or bad file names the setting
    if isinstance(model, TDNet):
        report = init_tdnet_from_pspnet(model, state)
    elif any(k.startswith("pretrained.") for k in state):
        return f"initialised {init_from_pspnet(model, path)} tensors from {path}"
    else:
        report = init_from_imagenet(model, state)
    report.source = str(path)
    return report.summary()


def set_train_memory_stride(model: TDNet, stride: int) -> None:
    """Subsample the memory's keys and values with ``stride`` while training (0: leave the
    model's). The config keeps its memory_stride: saved weights, validation and inference
    build the model from it, so the training stride never reaches them."""
    if stride:
        for p in range(model.num_paths):
            model.path_modules(p)["enc"].memory_stride = stride


def initialise(model: nn.Module, preset, m_cfg: dict, say: Callable[[str], None]) -> None:
    """model.init, the attention options and model.resume_weights, applied in that order."""
    if m_cfg["init"]:
        say(init_weights(model, m_cfg["init"]))
    if preset.kind == "tdnet":
        if m_cfg["attention_logit_scale"] != 1.0:
            scale_attention_logits(model, m_cfg["attention_logit_scale"])
        model.value_drop = m_cfg["value_drop"]
        set_train_memory_stride(model, m_cfg["train_memory_stride"])
    elif m_cfg["value_drop"] or m_cfg["attention_logit_scale"] != 1.0 or m_cfg["train_memory_stride"]:
        raise UsageError(
            "model.value_drop, model.attention_logit_scale and model.train_memory_stride apply to TDNet presets only"
        )
    if m_cfg["resume_weights"]:
        load_matching(model, m_cfg["resume_weights"], preset.name)


def build_teacher(m_cfg: dict, preset, model: nn.Module) -> nn.Module | None:
    """model.teacher, frozen in eval mode, one group per TDNet path (load_teacher): the authors'
    psp101.pkl or a psp* checkpoint converted exactly, or a gpsp* teacher trained here; or None."""
    if not m_cfg["teacher"]:
        return None
    if preset.kind != "tdnet":
        raise UsageError("a teacher distils into a TDNet preset only")
    return load_teacher(m_cfg["teacher"], paths=model.num_paths, source="--teacher / model.teacher")


def place_models(model: nn.Module, teacher: nn.Module | None, device: torch.device) -> bool:
    """Move the models to ``device``; whether they run channels_last (the CPU, when safe)."""
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    channels_last = device.type == "cpu" and channels_last_trains_safely(model)
    if channels_last:
        # oneDNN convolves channels_last tensors without reordering them: a td4-mini training
        # step took 1.7 s against 2.2 s in NCHW here. Activations follow the weights' layout.
        # GPUs keep NCHW, which was the faster layout for inference on the H200 (inference.py).
        model.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)
    return channels_last


def make_dataset(model: nn.Module, d_cfg: dict, seed: int) -> ClipDataset:
    """The training clips for ``model``: as many frames as a TDNet has paths (one for a per-frame
    model), augmented at the model's input size as data.* says."""
    augment = AugmentConfig(
        crop=tuple(model.input_size),
        scale=tuple(d_cfg["scale"]),
        flip=d_cfg["flip"],
        rotate=d_cfg["rotate"],
        color_jitter=d_cfg["color_jitter"],
    )
    clip_len = model.num_paths if isinstance(model, TDNet) else 1
    return ClipDataset(
        d_cfg["root"], d_cfg["train_split"], clip_len=clip_len, augment=augment, max_gap=d_cfg["max_gap"], seed=seed
    )


def make_loader(dataset: ClipDataset, sampler: IterationSampler, d_cfg: dict, device: torch.device) -> DataLoader:
    workers = d_cfg["workers"]
    return DataLoader(
        dataset,
        batch_size=d_cfg["batch_size"],
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
        multiprocessing_context="spawn" if workers > 0 and device.type == "cuda" else None,
    )


def decay_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The trainable parameters as (conv and linear weights, everything else): the authors decay
    only the former; BatchNorm, LayerNorm and biases keep no weight decay. Model order, each once."""
    decay_ids = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(m.weight, nn.Parameter)
    }
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            (decay if id(p) in decay_ids else no_decay).append(p)
    return decay, no_decay


def make_optimizer(model: nn.Module, o_cfg: dict) -> torch.optim.SGD:
    """SGD with momentum; optim.weight_decay on conv and linear weights only (decay_split)."""
    decay, no_decay = decay_split(model)
    groups = [{"params": decay, "weight_decay": o_cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=o_cfg["lr"], momentum=o_cfg["momentum"])


@dataclass
class TrainStep:
    """One iteration's forward and backward passes over ``accum`` micro-batches. A TDNet
    student sees the whole clip through the path of the step; a PSPNet its last frame."""

    model: nn.Module
    teacher: nn.Module | None
    criterion: Criterion
    scaler: torch.amp.GradScaler
    autocast: Any
    device: torch.device
    channels_last: bool
    clip_len: int
    tdnet: bool
    accum: int
    paths: list[int] = field(default_factory=list)  # the path of every micro-step run, in order

    def gradients(self, batches, it: int) -> tuple[float, dict[str, float]]:
        """Accumulate the gradients of iteration ``it``; its mean loss and loss terms."""
        terms_sum: dict[str, float] = {}
        loss_sum = 0.0
        for micro in range(self.accum):
            batch = next_batch(batches)
            frames = batch["frames"].to(self.device, non_blocking=True)
            if not self.channels_last:  # the loader's frames are channels_last views (clips.py)
                frames = frames.contiguous()
            labels = batch["label"].to(self.device, non_blocking=True)
            path = path_for_step(it * self.accum + micro, self.clip_len) if self.tdnet else None
            if path is not None:
                self.paths.append(path)
            with self.autocast:
                out = self.model(frames, path) if self.tdnet else self.model(frames[:, -1])
                t_out = None
                if self.teacher is not None:
                    with torch.no_grad():
                        t_out = self.teacher(frames[:, -1])
                loss, terms = self.criterion(out, labels, t_out, path)
            self.scaler.scale(loss / self.accum).backward()
            loss_sum += float(loss.detach()) / self.accum
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + v / self.accum
        return loss_sum, terms_sum
