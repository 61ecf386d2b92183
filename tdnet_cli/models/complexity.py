"""Parameter, FLOP and memory estimates of a model's steady-state frame (memory queue full)."""

from __future__ import annotations

import copy
import functools
import math
import os

import torch

from tdnet_cli.errors import UsageError
from tdnet_cli.models.registry import get_preset
from tdnet_cli.models.resnet import RESNET_SPECS, feature_size

__all__ = [
    "activation_bytes",
    "available_memory",
    "check_memory",
    "count_parameters",
    "human_bytes",
    "memory_needed",
    "preset_complexity",
    "steady_gflops",
]


def count_parameters(model: torch.nn.Module, *, inference: bool = True) -> int:
    """Parameters; with ``inference`` the unused ImageNet classifiers are not counted."""
    return sum(
        p.numel() for n, p in model.named_parameters() if not (inference and ".fc." in f".{n}" and "pretrained" in n)
    )


def steady_gflops(model: torch.nn.Module, input_size: tuple[int, int] | None = None) -> float:
    """GFLOPs (2 x multiply-adds) of one frame once the memory queue is full.

    Runs on a meta-device twin, so even the large presets cost milliseconds and ``model``
    keeps its weights.
    """
    from torch.utils.flop_counter import FlopCounterMode

    h, w = input_size or model.input_size
    meta = _meta_twin(model) if next(model.parameters()).device.type != "meta" else model
    state = meta.new_state(1)
    x = torch.empty(1, 3, h, w, device="meta")
    with torch.no_grad():
        for _ in range(max(meta.num_paths - 1, 0)):
            _, state = meta.step(x, state)
        counter = FlopCounterMode(display=False)
        with counter:
            meta.step(x, state)
    return counter.get_total_flops() / 1e9


def _meta_twin(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` (same modules and settings) whose tensors are on the meta device: the
    deep copy is handed meta stand-ins for the parameters and buffers, so no weight is copied."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo).to("meta")  # .to: any tensor the stand-ins missed


@functools.cache
def preset_complexity(name: str) -> tuple[int, float]:
    """(parameters, steady GFLOPs per frame) of a preset at its input size."""
    with torch.device("meta"):
        model = get_preset(name).build()
    return count_parameters(model), steady_gflops(model.eval())


# -- memory ----------------------------------------------------------------------------------
def _halve(size: tuple[int, int], times: int) -> int:
    h, w = size
    for _ in range(times):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h * w


def activation_bytes(config, input_size: tuple[int, int], *, element_size: int = 4) -> int:
    """Peak bytes of the tensors alive at once in one eager inference step of one frame.

    A formula from the channel widths at each feature stride, checked against a tensor-by-tensor
    count of a meta-device step (td4-mini, td4-psp18, td2-psp50, psp101 at 256x512 to 1024x2048:
    within 0.9-1.3x of it). The largest of: the stride-2 stem (input, conv and BN outputs), a
    stride-4 bottleneck of layer1, a layer4 block (input, conv, residual), the pyramid pooling
    (input, four branches, concatenation; the grouped PSPNet also keeps each group's slice of it
    and their convolutions) and, for TDNet, the attention matrices (one query row
    per feature position, one key per memory position: quadratic in the pixels); plus TDNet's
    memory queue of the N-1 earlier frames.
    """
    spec = RESNET_SPECS[config.backbone]
    expansion = 4 if spec.block == "bottleneck" else 1
    w = config.width
    c = 8 * w * expansion  # layer4 channels
    h_in, w_in = input_size
    s2, s4, s8 = _halve(input_size, 1), _halve(input_size, 2), _halve(input_size, 3)
    stem = 2 * w if spec.deep_stem else w
    terms = [3 * h_in * w_in + 2 * stem * s2, 3 * w * expansion * s4, 3 * c * s8, 4 * c * s8]
    memory = 0
    if not hasattr(config, "num_paths") and hasattr(config, "groups"):
        # grouped PSPNet: the pyramid output, every group's slice of it and their convolutions
        terms.append(8 * c * s8)
    if hasattr(config, "num_paths"):  # TDNet: attention of every feature position over the memory
        fh, fw = feature_size(input_size)
        stride = getattr(config, "memory_stride", 4)
        p = math.ceil(fh / stride) * math.ceil(fw / stride)
        dk, dv = config.key_dim, config.value_dim
        terms.append(2 * s8 * p + s8 * (2 * dv + dk))
        memory = (config.num_paths - 1) * p * (2 * dk + dv)
    return element_size * (max(terms) + memory)


# What a run holds beyond one frame's activations, measured as the peak RSS of `tdnet segment` on a
# 2-core CPU less the 253 MB of an idle process (td4-mini, td4-psp18 and psp18 at 256x512 to
# 1024x2048): the weights about 6 times over (the loaded model, the inference copy with folded BN
# and Winograd-transformed weights, oneDNN's reordered copies) and the activations of 2 frames
# (segment encodes two frames at once on the CPU) with allocator slack. These fitted the measured
# peaks within 0.8-1.26x; MARGIN covers the low side (a run refused at 80% of the memory it would
# have needed, rather than one killed by the kernel). On a GPU the inference copy alone is on the
# device, one frame at a time, with the caching allocator's slack (not measured: no GPU here).
CPU_WEIGHT_COPIES = 6
CPU_FRAMES_IN_FLIGHT = 2
CUDA_WEIGHT_COPIES = 1
CUDA_ACTIVATION_SLACK = 1.5
MARGIN = 1.25


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as disks and `free -h --si` show them)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # not reached


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room() -> int | None:
    """Bytes a container's memory limit still allows (cgroup v2, then v1); None without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:  # v1 writes ~2^63 for none
            return max(limit - usage, 0)
    return None


def _host_available() -> int | None:
    """MemAvailable of /proc/meminfo (what can be allocated without swapping), else free pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None  # not a POSIX system that says


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """(bytes free for new tensors on ``device``, who has them, for a message), or None if unknown."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, _ = torch.cuda.mem_get_info(index)
        return free, f"GPU {index} has {human_bytes(free)} free"
    host, room = _host_available(), _cgroup_room()
    if room is not None and (host is None or room < host):
        return room, f"this container's memory limit leaves {human_bytes(room)}"
    return (host, f"this machine has {human_bytes(host)} available") if host is not None else None


def memory_needed(
    config, input_size: tuple[int, int], weight_bytes: int, device: torch.device, precision: str = "fp32"
) -> int:
    """Bytes a segment run of ``config`` at ``input_size`` allocates (weights + activations), with
    a margin for the estimate's error."""
    act = activation_bytes(config, input_size, element_size=4 if precision == "fp32" else 2)
    if device.type == "cuda":
        need = CUDA_WEIGHT_COPIES * weight_bytes + CUDA_ACTIVATION_SLACK * act
    else:
        need = CPU_WEIGHT_COPIES * weight_bytes + CPU_FRAMES_IN_FLIGHT * act
    return int(MARGIN * need)


def check_memory(
    config,
    input_size: tuple[int, int],
    weight_bytes: int,
    device: torch.device,
    precision: str = "fp32",
    *,
    name: str = "the model",
) -> None:
    """Refuse (UsageError) a size whose tensors cannot fit on ``device``, before allocating them:
    the kernel would kill the process without a word (exit 137)."""
    need = memory_needed(config, input_size, weight_bytes, device, precision)
    have = available_memory(device)
    if have is None or need <= have[0]:
        return
    h, w = input_size
    raise UsageError(
        f"{name} at {h}x{w} needs about {human_bytes(need)} for its weights and activations; {have[1]}",
        hint="choose a smaller --input-size",
    )
