"""Parameter and FLOP counts of a model's steady-state frame (memory queue full)."""

from __future__ import annotations

import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

from tdnet_cli.models.registry import get_preset

__all__ = ["count_parameters", "steady_gflops", "preset_complexity"]


def count_parameters(model: torch.nn.Module, *, inference: bool = True) -> int:
    """Parameters; with ``inference`` the unused ImageNet classifiers are not counted."""
    return sum(p.numel() for n, p in model.named_parameters() if not (inference and ".fc." in f".{n}" and "pretrained" in n))


def steady_gflops(model: torch.nn.Module, input_size: tuple[int, int] | None = None) -> float:
    """GFLOPs (2 x multiply-adds) of one frame once the memory queue is full.

    Runs on the meta device, so even the large presets cost milliseconds.
    """
    h, w = input_size or model.input_size
    meta = model.to("meta") if next(model.parameters()).device.type != "meta" else model
    state = meta.new_state(1)
    x = torch.empty(1, 3, h, w, device="meta")
    with torch.no_grad():
        for _ in range(max(meta.num_paths - 1, 0)):
            _, state = meta.step(x, state)
        counter = FlopCounterMode(display=False)
        with counter:
            meta.step(x, state)
    return counter.get_total_flops() / 1e9


@functools.lru_cache(maxsize=None)
def preset_complexity(name: str) -> tuple[int, float]:
    """(parameters, steady GFLOPs per frame) of a preset at its input size."""
    with torch.device("meta"):
        model = get_preset(name).build()
    return count_parameters(model), steady_gflops(model.eval())
