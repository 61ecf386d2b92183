"""Training configuration: defaults -> TOML file -> ``--set key=value`` overrides.

A config is a plain nested dict (sections of scalars and lists) so it round-trips through
TOML; ``dump_toml`` writes the resolved snapshot into the run folder.
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

from tdnet_cli.errors import UsageError

__all__ = ["DEFAULTS", "load_config", "load_run_config", "apply_overrides", "dump_toml", "validate"]

DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {
        "preset": "td4-mini",  # what to train (tdnet, pspnet or gpspnet preset)
        "init": "",  # per-frame PSPNet checkpoint whose backbone/pyramid initialise every path
        "teacher": "",  # grouped PSPNet checkpoint for distillation ("" = none)
        "resume_weights": "",  # start from these weights (fine-tuning), optimiser fresh
        "attention_logit_scale": 1.0,  # TDNet: scale the initial query/key projections' logits by this
        "value_drop": 0.0,  # TDNet: chance per clip that a block of the current values is hidden from the full output
        "memory_stride": 0,  # TDNet: keep every k-th feature row/column in the memory (0 = the preset's)
        "width": 0,  # channels of the backbone's first stage (64 for a standard ResNet; 0 = the preset's)
        "groups": 0,  # TDNet: channel groups of the pyramid features; path p keeps group p mod groups (0 = the preset's)
    },
    "data": {
        "root": "",  # Cityscapes-layout folder
        "train_split": "train",
        "val_split": "val",
        "scale": [0.75, 2.0],  # random rescale of the full frame, relative to the model input size
        "flip": True,
        "rotate": 10.0,  # degrees, uniform in [-rotate, rotate]
        "color_jitter": 0.25,  # brightness/contrast/saturation strength
        "workers": 2,
        "batch_size": 8,  # per process
    },
    "optim": {
        "iterations": 4000,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "power": 0.9,  # poly decay
        "warmup_iters": 200,  # linear warm-up from warmup_ratio * lr
        "warmup_ratio": 0.1,
        "accumulate": 1,  # gradient accumulation steps per iteration
    },
    "loss": {
        "ohem": True,
        "ohem_thresh": 0.7,  # keep pixels whose ground-truth probability is below this
        "ohem_min_kept": 10000,  # per image
        "sub_weight": 0.5,  # CE on the current frame's own sub-features
        "aux_weight": 0.1,  # CE on the layer3 auxiliary head
        "group_weight": 0.4,  # grouped teacher training: CE on each group's logits
        "kd_weight": 1.0,  # KL(full || teacher full)
        "kd_group_weight": 0.5,  # KL(sub || teacher group p)
    },
    "run": {
        "name": "",  # folder under out; default: preset + date
        "out": "runs",
        "seed": 0,
        "device": "auto",
        "amp": True,  # mixed precision on CUDA (bf16 if supported, else fp16 with a scaler)
        "amp_cpu": False,  # bf16 autocast on CPU: ~2x faster where the CPU has native bf16 (AVX512-BF16, AMX)
        "log_every": 10,
        "save_every": 100,
        "val_every": 500,
        "val_limit": 0,  # annotated frames per validation, 0 = all
    },
}


def _merge(base: dict, new: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in new.items():
        path = f"{where}{key}"
        if key not in base:
            raise UsageError(f"unknown config key {path!r}", hint=f"known keys here: {', '.join(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise UsageError(f"config key {path!r} is a section, not a value")
            out[key] = _merge(base[key], value, f"{path}.")
        else:
            out[key] = _coerce(path, base[key], value)
    return out


def _coerce(path: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool) or default is None:
        if not isinstance(value, bool):
            raise UsageError(f"config key {path!r} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, list) and isinstance(value, list):
        floats = bool(default) and isinstance(default[0], float)
        return [float(v) if floats and isinstance(v, int) else v for v in value]
    if type(value) is not type(default):
        raise UsageError(f"config key {path!r} must be {type(default).__name__}, got {value!r}")
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """Defaults, then the TOML file, then ``section.key=value`` overrides (TOML literals)."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"config file not found: {path}", hint="pass a TOML file, see examples/")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path} is not valid TOML: {exc}") from None
        config = _merge(config, data)
    return apply_overrides(config, overrides or [])


def load_run_config(run_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """The resolved config a run saved (``config.toml``), with overrides (e.g. more iterations)."""
    saved = Path(run_dir) / "config.toml"
    if not saved.is_file():
        raise UsageError(f"nothing to resume in {run_dir}: no config.toml", hint="pass the run folder, e.g. runs/NAME")
    return load_config(saved, overrides)


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UsageError(f"bad override {item!r}", hint="write section.key=value, e.g. optim.lr=0.005")
        key, raw = item.split("=", 1)
        section, name = key.strip().split(".", 1)
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # a bare word: take it as a string
        config = _merge(config, {section: {name: value}})
    return config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(config: dict) -> str:
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def validate(config: dict) -> None:
    d, o, r = config["data"], config["optim"], config["run"]
    if not d["root"]:
        raise UsageError("no training data", hint="set data.root in the config or pass --data PATH")
    if o["iterations"] < 1 or o["accumulate"] < 1:
        raise UsageError("optim.iterations and optim.accumulate must be >= 1")
    if d["batch_size"] < 2:
        raise UsageError("data.batch_size must be >= 2 per process",
                         hint="BatchNorm after the 1x1 pyramid pooling needs two samples to train")
    if len(d["scale"]) != 2 or not 0 < d["scale"][0] <= d["scale"][1]:
        raise UsageError(f"data.scale must be [low, high] with 0 < low <= high, got {d['scale']}")
    if o["lr"] <= 0:
        raise UsageError("optim.lr must be positive")
    m = config["model"]
    if not 0.0 <= m["value_drop"] <= 1.0:
        raise UsageError(f"model.value_drop is a probability, got {m['value_drop']}", hint="use a value in [0, 1]")
    if not isinstance(m["memory_stride"], int) or m["memory_stride"] < 0:
        raise UsageError(f"model.memory_stride must be a whole number >= 0, got {m['memory_stride']}",
                         hint="use 0 for the preset's stride, or e.g. 2")
    if not isinstance(m["width"], int) or m["width"] < 0 or m["width"] % 4:
        raise UsageError(f"model.width must be a whole multiple of 4, got {m['width']}",
                         hint="use 0 for the preset's width, or e.g. 8")
    if not isinstance(m["groups"], int) or m["groups"] < 0:
        raise UsageError(f"model.groups must be a whole number >= 0, got {m['groups']}",
                         hint="use 0 for the preset's groups, or e.g. 4")
    if m["attention_logit_scale"] <= 0:
        raise UsageError(f"model.attention_logit_scale must be positive, got {m['attention_logit_scale']}")
    if r["save_every"] < 1 or r["log_every"] < 1:
        raise UsageError("run.save_every and run.log_every must be >= 1")
