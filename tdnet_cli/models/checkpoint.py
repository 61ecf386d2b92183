"""Reading and writing weights: our checkpoint format and the authors' raw state dicts.

Everything is read with ``torch.load(..., weights_only=True)``: a file that needs
arbitrary unpickling is refused, never executed.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tdnet_cli.data.cityscapes import CLASSES, PALETTE
from tdnet_cli.errors import CheckpointError, few
from tdnet_cli.fileio import atomic_path
from tdnet_cli.models.complexity import check_memory
from tdnet_cli.models.infer import infer_config
from tdnet_cli.models.registry import KINDS, PRESETS, build, get_preset, kind_of
from tdnet_cli.models.resnet import RESNET_SPECS
from tdnet_cli.models.tdnet import TDNetConfig
from tdnet_cli.models.weights_file import (
    FORMAT,
    FORMAT_VERSION,
    load_named,
    load_payload,
    read_state_dict,
    unwrap_payload,
)

__all__ = [
    "FORMAT",
    "MEAN",
    "STD",
    "LoadedModel",
    "infer_config",
    "load_checkpoint",
    "load_payload",
    "read_state_dict",
    "save_checkpoint",
]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass
class LoadedModel:
    """A model with what its weights need around it (preprocessing, class names, origin)."""

    model: nn.Module
    preset: str  # a registry name, or "custom"
    classes: tuple[str, ...] = CLASSES
    palette: tuple[tuple[int, int, int], ...] = PALETTE
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD
    source: str = "random"  # "random" | "tdnet" (our format) | "state_dict" (authors' layout)
    path: str | None = None
    provenance: dict = field(default_factory=dict)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.model.input_size

    @property
    def kind(self) -> str:
        return kind_of(self.model.config)


# -- writing ------------------------------------------------------------------------------
def _config_dict(model: nn.Module) -> dict:
    cfg = asdict(model.config)
    cfg["input_size"] = list(cfg["input_size"])
    return cfg


def save_checkpoint(path: str | os.PathLike, loaded: LoadedModel, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``loaded`` in our format, atomically (temporary name, then rename)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": loaded.kind,
        "preset": loaded.preset,
        "config": _config_dict(loaded.model),
        "classes": list(loaded.classes),
        "palette": [list(c) for c in loaded.palette],
        "mean": list(loaded.mean),
        "std": list(loaded.std),
        "state_dict": {k: v.detach().cpu() for k, v in loaded.model.state_dict().items()},
        "provenance": dict(loaded.provenance),
    }
    if extra:
        payload.update(extra)
    atomic_torch_save(payload, path)
    return path


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary renamed into place. Serialised in memory first: torch's own
    file writer reports a full disk as "[enforce fail ...] unexpected pos" without an errno,
    where a plain write raises OSError(ENOSPC), which callers turn into "disk full"."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


# -- reading ------------------------------------------------------------------------------


_OPTIONAL_FIELDS = ("aux", "memory_stride")  # settings added after the first checkpoints; defaults fit those


def _config_from_meta(meta: Mapping[str, Any], where: str):
    """The model configuration our format stores, each setting checked (named when wrong)."""
    version = meta.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} was written by a newer tdnet (format version {version}; this one reads {FORMAT_VERSION})",
            hint="upgrade tdnet",
        )
    kind = meta.get("kind")
    if kind not in KINDS:
        raise CheckpointError(
            f"{where}: 'kind' is {kind!r}; expected one of {', '.join(KINDS)}",
            hint="the file is damaged or from another tool",
        )
    raw = meta.get("config")
    if not isinstance(raw, Mapping):
        raise CheckpointError(
            f"{where}: 'config' is missing (expected the model's settings)", hint="the file is damaged; export it again"
        )
    cls = KINDS[kind][1]
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    unknown = [str(k) for k in raw if k not in fields]
    if unknown:
        raise CheckpointError(
            f"{where}: config has unknown setting(s) {few(unknown)} (expected {', '.join(fields)})",
            hint="a newer tdnet wrote it: upgrade tdnet",
        )
    missing = [k for k in fields if k not in raw and k not in _OPTIONAL_FIELDS]
    if missing:
        example = {"input_size": " ([height, width], e.g. [256, 512])"}.get(missing[0], "")
        raise CheckpointError(
            f"{where}: config has no {few(missing)}{example}", hint="the file is damaged or hand-made; export it again"
        )
    values = {}
    for key, value in raw.items():
        default = fields[key]
        if key == "input_size":
            ok = (
                isinstance(value, (list, tuple))
                and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 16 for v in value)
            )
            expected, value = "[height, width], each at least 16", tuple(value) if ok else value
        elif key == "backbone":
            ok, expected = value in RESNET_SPECS, f"one of {', '.join(RESNET_SPECS)}"
        elif isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        else:
            ok, expected = isinstance(value, int) and not isinstance(value, bool) and value >= 1, "a positive integer"
        if not ok:
            raise CheckpointError(
                f"{where}: config {key} is {value!r}; expected {expected}",
                hint="the file is damaged or hand-made; export it again",
            )
        values[key] = value
    return cls(**values)


def _check_config(config, where: str) -> None:
    """The constraints the model classes assert, as one line naming the setting."""
    spec = RESNET_SPECS[config.backbone]
    c = 8 * config.width * (4 if spec.block == "bottleneck" else 1)
    groups = getattr(config, "groups", 1)
    problems = []
    if isinstance(config, TDNetConfig):
        if config.num_paths < 2:
            problems.append(f"num_paths {config.num_paths} (expected 2 or more)")
        if config.value_dim // config.head_reduction < 1:
            problems.append(f"head_reduction {config.head_reduction} (expected at most value_dim {config.value_dim})")
    if c % (4 * groups):
        problems.append(f"groups {groups} (expected a divisor of {c // 4}: the backbone gives {c} channels)")
    if problems:
        raise CheckpointError(
            f"{where}: the model's settings do not fit together: {few(problems)}",
            hint="the file is damaged or hand-made; export it again",
        )


def _architecture(config) -> dict:
    """The fields that decide the weights' layout (input size and aux head do not)."""
    return {**config.__dict__, "input_size": None, "aux": None}


def _preset_name(config) -> str:
    for name, preset in PRESETS.items():
        if type(preset.config) is type(config) and _architecture(preset.config) == _architecture(config):
            return name
    return "custom"


def _meta_model(config) -> nn.Module:
    """The model for ``config`` on the meta device: shapes without memory, in ~0.1 s."""
    with torch.device("meta"):
        return build(config)


def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _check_shapes(own: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], what: str, expected: str) -> None:
    """Every key of ``own`` in ``sd`` with the same shape (and a real number type), or one line
    naming a few differences."""
    missing = [k for k in own if k not in sd]
    # Released files from the training script may carry an auxiliary head we do not build.
    unexpected = [k for k in sd if k not in own and not re.match(r"^(aux\d*|auxlayer)\.", k)]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    types = [
        f"{k} ({sd[k].dtype})"
        for k, v in own.items()
        if k in sd and v.is_floating_point() and (sd[k].is_complex() or sd[k].dtype == torch.bool)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch (file vs model): {few(shapes)}")
    if types:
        problems.append(f"not real numbers: {few(types)}")
    if problems:
        raise CheckpointError(f"{what} does not fit {expected}: " + "; ".join(problems))


def load_state_dict_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], what: str, expected: str) -> None:
    """Load every key with matching shapes, or raise one line naming a few differences."""
    own = model.state_dict()
    _check_shapes(own, sd, what, expected)
    model.load_state_dict({k: sd[k] for k in own}, strict=True)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    preset: str | None = None,
    input_size: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    source: str = "the path",
) -> LoadedModel:
    """Load our checkpoint or a raw (released) state dict, from a file or an http(s) URL (downloaded
    into the cache once), into a ready model (eval mode).

    ``preset`` checks that the file is that model; ``input_size`` runs the model at another
    input size (TDNet's spatial LayerNorm weights are resized bilinearly). Nothing large is
    allocated before the file's shapes are checked against the model they describe (on the meta
    device) and the model's weights and activations at that size are known to fit on ``device``
    (the model itself is built on the CPU; ``precision`` sizes the activations). ``source``: what
    the user passed the path as, for the hint of a missing file (:func:`load_payload`).
    """
    payload, where = load_named(path, source)  # a URL is downloaded first; messages name the URL
    sd, meta = unwrap_payload(payload, where)
    config = _config_from_meta(meta, where) if meta is not None else infer_config(sd, where)
    _check_config(config, where)
    name = meta.get("preset") if meta is not None else None
    name = name if isinstance(name, str) and name else _preset_name(config)
    if preset is not None:
        _check_preset(where, config, name, preset)
        name = preset
    expected = f"a {name} model" if name != "custom" else "the model its keys describe"
    _check_shapes(_meta_model(config).state_dict(), sd, where, expected)
    target = config if input_size is None else dataclasses.replace(config, input_size=tuple(input_size))
    check_memory(
        target,
        target.input_size,
        _state_bytes(_meta_model(target))
        if target is not config
        else sum(t.numel() * t.element_size() for t in sd.values()),
        torch.device(device),
        precision,
        name=name if name != "custom" else "this model",
    )
    model = build(config)
    load_state_dict_strict(model, sd, where, expected)
    if input_size is not None and tuple(input_size) != tuple(model.input_size):
        model.set_input_size(tuple(input_size))
    model.eval()
    info = _meta_info(meta, config.num_classes, where)
    return LoadedModel(model=model, preset=name, **info, source="tdnet" if meta else "state_dict", path=where)


def _check_preset(path: str, config, name: str, preset: str) -> None:
    """Refuse a file that is not the ``--model`` the user named."""
    want = get_preset(preset)
    got = "a" + ("n" if name[0] in "aeiou" else "") + f" {name}" if name != "custom" else "a custom model"
    wanted, have = _architecture(want.config), _architecture(config)
    if type(want.config) is not type(config) or wanted != have:
        diff = [f"{k} {have[k]} vs {wanted[k]}" for k in wanted if k in have and have[k] != wanted[k]]
        detail = f" ({few(diff)})" if diff and type(want.config) is type(config) else ""
        raise CheckpointError(
            f"{path} holds {got} checkpoint, not {preset}{detail}",
            hint=f"drop --model or use --model {name}" if name != "custom" else "drop --model",
        )


def _meta_info(meta: Mapping[str, Any] | None, num_classes: int, where: str) -> dict:
    """Classes, palette, normalisation and provenance: from our format (checked), else defaults."""
    if meta is None:
        return {"classes": _classes_for(num_classes), "palette": _palette_for(num_classes), "mean": MEAN, "std": STD}
    classes, palette, mean, std = (meta.get(k) for k in ("classes", "palette", "mean", "std"))

    def bad(key: str, expected: str) -> CheckpointError:
        return CheckpointError(
            f"{where}: {key} is {repr(meta.get(key))[:60]}; expected {expected}",
            hint="the file is damaged or hand-made; export it again",
        )

    if not (
        isinstance(classes, (list, tuple)) and len(classes) == num_classes and all(isinstance(c, str) for c in classes)
    ):
        raise bad("classes", f"a list of {num_classes} class names")
    if not (
        isinstance(palette, (list, tuple))
        and len(palette) >= num_classes
        and all(
            isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in palette
        )
    ):
        raise bad("palette", f"{num_classes} [r, g, b] colours of 0-255")
    for key, value in (("mean", mean), ("std", std)):
        if not (
            isinstance(value, (list, tuple))
            and len(value) == 3
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
            and (key == "mean" or all(v > 0 for v in value))
        ):
            raise bad(key, "3 numbers, one per RGB channel" + (", each above 0" if key == "std" else ""))
    provenance = meta.get("provenance", {})
    return {
        "classes": tuple(classes),
        "palette": tuple(tuple(c) for c in palette),
        "mean": tuple(mean),
        "std": tuple(std),
        "provenance": dict(provenance) if isinstance(provenance, Mapping) else {},
    }


def _classes_for(n: int) -> tuple[str, ...]:
    return CLASSES if n == len(CLASSES) else tuple(f"class{i}" for i in range(n))


def _palette_for(n: int) -> tuple[tuple[int, int, int], ...]:
    if n <= len(PALETTE):
        return PALETTE[:n]
    g = torch.Generator().manual_seed(0)
    extra = torch.randint(0, 256, (n - len(PALETTE), 3), generator=g).tolist()
    return PALETTE + tuple(tuple(c) for c in extra)


def random_model(
    preset: str,
    *,
    input_size: tuple[int, int] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> LoadedModel:
    """A preset with random weights (for benchmarks and training from scratch), refused before it
    is built if its weights and activations at that size cannot fit on ``device``."""
    overrides = {}
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if input_size is not None:
        overrides["input_size"] = tuple(input_size)
    spec = get_preset(preset)
    config = type(spec.config)(**{**spec.config.__dict__, **overrides})
    check_memory(
        config, config.input_size, _state_bytes(_meta_model(config)), torch.device(device), precision, name=preset
    )
    model = build(config).eval()
    n = model.config.num_classes
    return LoadedModel(model=model, preset=preset, classes=_classes_for(n), palette=_palette_for(n), source="random")


def describe(loaded: LoadedModel) -> dict:
    """Plain facts about a loaded checkpoint (for ``tdnet inspect`` and reports)."""
    from tdnet_cli.models.complexity import count_parameters

    model = loaded.model
    return {
        "path": loaded.path,
        "format": {"tdnet": "tdnet checkpoint", "state_dict": "raw state dict (authors' layout)"}.get(
            loaded.source, loaded.source
        ),
        "preset": loaded.preset,
        "kind": loaded.kind,
        "paths": model.num_paths,
        "backbone": model.config.backbone,
        "input_size": list(model.input_size),
        "num_classes": model.config.num_classes,
        "parameters": count_parameters(model),
        "classes": list(loaded.classes),
        "mean": list(loaded.mean),
        "std": list(loaded.std),
        "provenance": loaded.provenance,
    }
