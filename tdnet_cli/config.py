"""Training configuration: defaults -> TOML file -> ``--set key=value`` overrides.

A config is a plain nested dict (sections of scalars and lists) so it round-trips through
TOML; ``dump_toml`` writes the resolved snapshot into the run folder.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import tomllib

from tdnet_cli.errors import UsageError

__all__ = ["DEFAULTS", "apply_overrides", "dump_toml", "load_config", "load_run_config", "toml_string", "validate"]

DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {
        "preset": "td4-mini",  # what to train (tdnet, pspnet or gpspnet preset)
        "init": "",  # per-frame PSPNet checkpoint whose backbone/pyramid initialise every path
        "teacher": "",  # grouped PSPNet checkpoint for distillation ("" = none)
        "resume_weights": "",  # start from these weights (fine-tuning), optimiser fresh
        "attention_logit_scale": 1.0,  # TDNet: scale the initial query/key projections' logits by this
        "value_drop": 0.0,  # TDNet: chance per clip that a block of the current values is hidden from the full output
        "memory_stride": 0,  # TDNet: keep every k-th feature row/column in the memory (0 = the preset's)
        # TDNet, training only: the memory's stride while training (the authors' 3; 0 = memory_stride).
        # The saved model keeps memory_stride, which inference and validation use.
        "train_memory_stride": 0,
        "width": 0,  # channels of the backbone's first stage (64 for a standard ResNet; 0 = the preset's)
        "groups": 0,  # TDNet: channel groups of the pyramid features; path p keeps group p mod groups (0 = the preset's)
    },
    "data": {
        "root": "",  # Cityscapes-layout folder
        "train_split": "train",
        "val_split": "val",
        "max_gap": 2,  # each earlier clip frame lies 1..max_gap frames before the next (uniform; the authors': 2)
        # Scale factors, one drawn per clip, of the frame size that covers the model input (the
        # crop); a frame scaled below the crop is resized up to it (the authors' set).
        "scale": [0.75, 1.0, 1.25, 1.5, 1.75, 2.0],
        "flip": True,
        "rotate": 5.0,  # degrees, uniform in [-rotate, rotate]
        "color_jitter": 0.5,  # brightness/contrast/saturation factors uniform in [1 - j, 1 + j]
        "workers": 2,
        "batch_size": 8,  # per process
    },
    "optim": {
        "iterations": 4000,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "power": 0.9,  # poly decay
        "warmup": "exp",  # "exp": 1e-5 * (lr / 1e-5) ** (it / warmup_iters), then poly over the rest (the authors')
        # "linear": from warmup_ratio * lr to lr, then poly over all iterations (the bundled demo's)
        "warmup_iters": 1000,
        "warmup_ratio": 0.1,  # "linear" only
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
        if default and isinstance(default[0], float):
            # A list of numbers (data.scale): every item a number, never a word or a boolean.
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise UsageError(
                    f"config key {path!r} must be a list of numbers, got {value!r}",
                    hint=f"e.g. --set '{path}={default}'",
                )
            return [float(v) for v in value]
        return value
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
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path} is not valid TOML: {exc}") from None
        config = _merge(config, data)
    return apply_overrides(config, overrides or [])


def load_run_config(run_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """The resolved config a run saved (``config.toml``), with overrides (e.g. more iterations)."""
    saved = Path(run_dir) / "config.toml"
    if not saved.is_file():
        raise UsageError(f"nothing to resume in {run_dir}: no config.toml", hint="pass the run folder, e.g. runs/NAME")
    return load_config(saved, overrides)


def _override_value(key: str, raw: str) -> Any:
    """The value of ``--set key=RAW``: one TOML value (``0.005``, ``true``, ``[1, 2]``, ``"a b"``);
    anything else, and anything but a string for a string key (a name ``123``, a folder
    ``2024-01-01``), is the text exactly as typed."""
    section, _, name = key.partition(".")
    default = DEFAULTS.get(section, {}).get(name)
    try:
        parsed = tomllib.loads(f"v = {raw.strip()}")
    except tomllib.TOMLDecodeError:
        return raw
    if set(parsed) != {"v"}:  # "1\nw = 2" holds two values: it is not one TOML value
        return raw
    if isinstance(default, str) and not isinstance(parsed["v"], str):
        return raw
    return parsed["v"]


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """``section.key=value`` items on top of ``config`` (see ``_override_value``)."""
    for item in overrides:
        key, eq, raw = item.partition("=")
        key = key.strip()
        section, dot, name = key.partition(".")
        if not eq or not dot or not section or not name:
            raise UsageError(f"bad override {item!r}", hint="write section.key=value, e.g. optim.lr=0.005")
        config = _merge(config, {section: {name: _override_value(key, raw)}})
    return config


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string that ``tomllib`` reads back unchanged: quotes,
    backslashes and control characters escaped (``--set data.root=...`` from ``--data``)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:  # an undecodable byte of a file name: TOML holds UTF-8 only
            raise UsageError(f"{text!r} is not valid UTF-8", hint="rename the file or folder with UTF-8 characters")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return toml_string(value)
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


def _need(ok: bool, key: str, value: Any, rule: str, hint: str | None = None) -> None:
    """Refuse ``key = value`` unless ``ok`` (NaN fails every comparison, so it is refused too)."""
    if not ok:
        raise UsageError(f"{key} must be {rule}, got {value!r}", hint=hint)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v: Any, low: int, high: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)


def validate(config: dict) -> None:
    """Every value checked before anything is created: one line naming the key and the fix."""
    d, o, r = config["data"], config["optim"], config["run"]
    if not d["root"]:
        raise UsageError("no training data", hint="set data.root in the config or pass --data PATH")
    if o["iterations"] < 1 or o["accumulate"] < 1:
        raise UsageError("optim.iterations and optim.accumulate must be >= 1")
    if d["batch_size"] < 2:
        raise UsageError(
            "data.batch_size must be >= 2 per process",
            hint="BatchNorm after the 1x1 pyramid pooling needs two samples to train",
        )
    scale = d["scale"]
    if not (scale and all(_finite(v) and 0 < v <= 16 for v in scale)):
        raise UsageError(
            f"data.scale must be a list of scale factors in (0, 16], got {scale}",
            hint="e.g. --set 'data.scale=[0.75, 1.0, 1.25, 1.5, 1.75, 2.0]'",
        )
    _validate_data(d)
    _validate_optim(o, config["loss"])
    _validate_model(config["model"])
    _validate_run(r)


def _validate_data(d: dict) -> None:
    from tdnet_cli.data.layout import SPLITS  # a plain module: no torch

    _need(
        _whole(d["workers"], 0),
        "data.workers",
        d["workers"],
        "a whole number >= 0",
        "0 loads in the training process, e.g. 4 for four loader processes",
    )
    _need(_finite(d["rotate"]) and 0 <= d["rotate"] <= 180, "data.rotate", d["rotate"], "degrees in [0, 180]")
    _need(
        _finite(d["color_jitter"]) and 0 <= d["color_jitter"] < 1, "data.color_jitter", d["color_jitter"], "in [0, 1)"
    )
    _need(_whole(d["max_gap"], 1), "data.max_gap", d["max_gap"], "a whole number >= 1", "1 takes consecutive frames")
    for key in ("train_split", "val_split"):
        _need(d[key] in SPLITS, f"data.{key}", d[key], f"one of {', '.join(SPLITS)}")
    if d["val_split"] == "test":  # a run also validates once at its end, whatever run.val_every says
        raise UsageError(
            "data.val_split 'test' has no ground truth (Cityscapes withholds the test labels)", hint="validate on 'val'"
        )


def _validate_optim(o: dict, loss: dict) -> None:
    if not (_finite(o["lr"]) and o["lr"] > 0):
        raise UsageError(f"optim.lr must be positive, got {o['lr']}")
    _need(_finite(o["momentum"]) and 0 <= o["momentum"] < 1, "optim.momentum", o["momentum"], "in [0, 1)")
    for key in ("weight_decay", "power"):
        _need(_finite(o[key]) and o[key] >= 0, f"optim.{key}", o[key], "a number >= 0")
    _need(_whole(o["warmup_iters"], 0), "optim.warmup_iters", o["warmup_iters"], "a whole number >= 0")
    _need(o["warmup"] in ("exp", "linear"), "optim.warmup", o["warmup"], '"exp" or "linear"')
    _need(
        _finite(o["warmup_ratio"]) and 0 <= o["warmup_ratio"] <= 1, "optim.warmup_ratio", o["warmup_ratio"], "in [0, 1]"
    )
    for key in ("sub_weight", "aux_weight", "group_weight", "kd_weight", "kd_group_weight"):
        _need(_finite(loss[key]) and loss[key] >= 0, f"loss.{key}", loss[key], "a number >= 0")
    _need(
        _finite(loss["ohem_thresh"]) and 0 < loss["ohem_thresh"] <= 1,
        "loss.ohem_thresh",
        loss["ohem_thresh"],
        "a probability in (0, 1]",
    )
    _need(_whole(loss["ohem_min_kept"], 0), "loss.ohem_min_kept", loss["ohem_min_kept"], "a whole number >= 0")


def _validate_model(m: dict) -> None:
    if not (_finite(m["value_drop"]) and 0.0 <= m["value_drop"] <= 1.0):
        raise UsageError(f"model.value_drop is a probability, got {m['value_drop']}", hint="use a value in [0, 1]")
    if not _whole(m["memory_stride"], 0):
        raise UsageError(
            f"model.memory_stride must be a whole number >= 0, got {m['memory_stride']}",
            hint="use 0 for the preset's stride, or e.g. 2",
        )
    _need(
        _whole(m["train_memory_stride"], 0),
        "model.train_memory_stride",
        m["train_memory_stride"],
        "a whole number >= 0",
        "0 trains with model.memory_stride, e.g. 3 as the authors did",
    )
    if not _whole(m["width"], 0) or m["width"] % 4:
        raise UsageError(
            f"model.width must be a whole multiple of 4, got {m['width']}",
            hint="use 0 for the preset's width, or e.g. 8",
        )
    if not _whole(m["groups"], 0):
        raise UsageError(
            f"model.groups must be a whole number >= 0, got {m['groups']}",
            hint="use 0 for the preset's groups, or e.g. 4",
        )
    if not (_finite(m["attention_logit_scale"]) and m["attention_logit_scale"] > 0):
        raise UsageError(f"model.attention_logit_scale must be positive, got {m['attention_logit_scale']}")


def _validate_run(r: dict) -> None:
    if r["save_every"] < 1 or r["log_every"] < 1:
        raise UsageError("run.save_every and run.log_every must be >= 1")
    for key in ("val_every", "val_limit"):
        _need(
            _whole(r[key], 0),
            f"run.{key}",
            r[key],
            "a whole number >= 0",
            "0 turns it off" if key == "val_every" else "0 scores every annotated frame",
        )
    _need(_whole(r["seed"], 0, 2**32 - 1), "run.seed", r["seed"], "a whole number in [0, 2**32)")
    name = r["name"]
    _need(
        name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name,
        "run.name",
        name,
        "a folder name (no '/')",
        "run.out says where the run folder goes",
    )
    _need(bool(r["out"]) and "\0" not in r["out"], "run.out", r["out"], "a folder")
