"""The conformance weight recipe and the comparison with the authors' reference outputs.

The recipe (``tests/fixtures/conformance/README.md``) fills a model's state dict from a key
listing with seeded random tensors; the authors' code, run on the same weights and frames,
produced the reference outputs (``expected_small_*.npz``). The fixture folder is an argument:
it lives in the repository's tests/, not in the installed package. Used by the conformance
tests and by the GPU and bf16 experiment scripts under docs/.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tdnet_cli.models import create_model
from tdnet_cli.models.checkpoint import MEAN, STD

FIXTURE_NAME = {"td4-psp18": "td4_psp18", "td2-psp50": "td2_psp50", "psp101": "psp101"}
SMALL_SIZE = (129, 257)  # the reference frames' size (the "small" key listings)


def key_listing(fixtures: Path, preset: str, small: bool = False) -> list:
    """``[name, shape, dtype]`` per state-dict key of ``preset`` (at SMALL_SIZE when ``small``)."""
    suffix = "_small" if small else ""
    return json.loads((Path(fixtures) / f"{FIXTURE_NAME[preset]}{suffix}_keys.json").read_text())["keys"]


def recipe_weights(keys: list, seed: int = 1) -> dict[str, torch.Tensor]:
    """Per key: a generator seeded with (seed, crc32(name)); rules in order (see the recipe)."""
    names = [k[0] for k in keys]
    bottleneck = re.compile(r"^pretrained\d*\.layer\d+\.\d+\.bn3\.weight$")
    basic = re.compile(r"^pretrained\d*\.layer\d+\.\d+\.bn2\.weight$")
    closing_pat = bottleneck if any(bottleneck.match(n) for n in names) else basic
    out = {}
    for name, shape, _ in keys:
        shape = tuple(shape)
        if name.endswith("num_batches_tracked"):
            out[name] = torch.zeros(shape, dtype=torch.int64)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if len(shape) == 4:
            arr = rng.normal(0.0, np.sqrt(2.0 / (shape[1] * shape[2] * shape[3])), shape)
        elif name.endswith("running_mean"):
            arr = rng.uniform(-0.1, 0.1, shape)
        elif name.endswith("running_var"):
            arr = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("weight"):
            arr = rng.uniform(0.5, 1.5, shape)
            if closing_pat.match(name):
                arr = arr * 0.1
        elif name.endswith("bias"):
            arr = rng.uniform(-0.1, 0.1, shape)
        else:
            raise ValueError(name)
        out[name] = torch.from_numpy(arr.astype(np.float32))
    return out


def recipe_model(fixtures: Path, preset: str) -> nn.Module:
    """``preset`` at SMALL_SIZE in eval mode, with the recipe's weights (strictly loaded)."""
    model = create_model(preset, input_size=SMALL_SIZE).eval()
    model.load_state_dict(recipe_weights(key_listing(fixtures, preset, small=True)), strict=True)
    return model


def expected(fixtures: Path, preset: str) -> dict[str, np.ndarray]:
    """The reference outputs: ``inputs`` (frames), ``argmax``, sampled logits and moments."""
    with np.load(Path(fixtures) / f"expected_small_{FIXTURE_NAME[preset]}.npz") as data:
        return {k: data[k] for k in data.files}


def normalise(frames: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32, the released models' preprocessing."""
    mean, std = np.array(MEAN, dtype=np.float32), np.array(STD, dtype=np.float32)
    x = (frames.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def check_frame(up: torch.Tensor, ref: dict, i: int) -> dict:
    """Compare upsampled logits (C, H, W) of frame i with the reference; return the figures."""
    up = up.float()
    agree = float((up.argmax(0).numpy() == ref["argmax"][i]).mean())
    sampled = up[:, ref["pixel_y"], ref["pixel_x"]].T.numpy()
    return {
        "agree": agree,
        "logit_err": float(np.abs(sampled - ref["sampled_logits"][i]).max()),
        "mean_err": abs(float(up.mean()) - float(ref["logit_mean"][i])),
        "std_err": abs(float(up.std()) - float(ref["logit_std"][i])),
    }
