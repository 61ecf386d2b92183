"""The conformance weight recipe (fixtures/conformance/README.md) and reference checks."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "conformance"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
FIXTURE_NAME = {"td4-psp18": "td4_psp18", "td2-psp50": "td2_psp50", "psp101": "psp101"}


def key_listing(preset: str, small: bool = False) -> list:
    suffix = "_small" if small else ""
    return json.loads((FIXTURES / f"{FIXTURE_NAME[preset]}{suffix}_keys.json").read_text())["keys"]


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


def expected(preset: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"expected_small_{FIXTURE_NAME[preset]}.npz") as data:
        return {k: data[k] for k in data.files}


def normalise(frames: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32, the released models' preprocessing."""
    x = (frames.astype(np.float32) / 255.0 - MEAN) / STD
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


def assert_conforms(fig: dict, i: int) -> None:
    assert fig["agree"] >= 0.999, f"frame {i}: argmax agrees on {fig['agree']:.4%}"
    assert fig["logit_err"] <= 1e-3, f"frame {i}: sampled logits off by {fig['logit_err']:.2e}"
    assert fig["mean_err"] <= 1e-4 and fig["std_err"] <= 1e-4, f"frame {i}: {fig}"
