"""Reading and writing weights: our checkpoint format and the authors' raw state dicts.

Everything is read with ``torch.load(..., weights_only=True)``: a file that needs
arbitrary unpickling is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from tdnet_cli.data.cityscapes import CLASSES, PALETTE
from tdnet_cli.errors import CheckpointError, few
from tdnet_cli.fileio import atomic_path
from tdnet_cli.models.grouped_psp import GroupedPSPNetConfig
from tdnet_cli.models.pspnet import PSPNetConfig
from tdnet_cli.models.registry import KINDS, PRESETS, build, get_preset, kind_of
from tdnet_cli.models.resnet import RESNET_SPECS
from tdnet_cli.models.tdnet import TDNetConfig

__all__ = [
    "MEAN",
    "STD",
    "LoadedModel",
    "save_checkpoint",
    "load_checkpoint",
    "read_state_dict",
    "infer_config",
    "FORMAT",
]

FORMAT = "tdnet-checkpoint"
FORMAT_VERSION = 1
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
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# -- reading ------------------------------------------------------------------------------
def _torch_load(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"weights file not found: {path}", hint="check the --weights path")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a weights file", hint="pass the .pt or .pkl file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) or "weights_only" in str(exc):
            raise CheckpointError(
                f"{path} holds pickled Python objects, not just tensors; refusing to unpickle it",
                hint="save a plain state dict: torch.save(model.state_dict(), path)",
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({_short(exc)})") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError, AttributeError, KeyError) as exc:
        raise CheckpointError(
            f"cannot read {path}: truncated or not a PyTorch checkpoint ({_short(exc)})",
            hint="download the file again",
        ) from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def _unwrap(obj: Any, path: Path) -> tuple[dict, dict | None]:
    """Return (state_dict, our metadata or None) from whatever the file holds."""
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        return dict(obj["state_dict"]), dict(obj)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors", hint="pass a TDNet or PSPNet checkpoint")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    return sd, None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (ours or raw), prefix ``module.`` stripped."""
    return _unwrap(_torch_load(Path(path)), Path(path))[0]


def _backbone_from_keys(sd: Mapping[str, torch.Tensor], prefix: str) -> tuple[str, int]:
    bottleneck = f"{prefix}.layer1.0.conv3.weight" in sd
    counts = []
    for layer in range(1, 5):
        pat = re.compile(rf"^{re.escape(prefix)}\.layer{layer}\.(\d+)\.conv1\.weight$")
        counts.append(len({m.group(1) for k in sd if (m := pat.match(k))}))
    block = "bottleneck" if bottleneck else "basic"
    for name, spec in RESNET_SPECS.items():
        if spec.block == block and spec.layers == tuple(counts):
            stem = sd.get(f"{prefix}.conv1.0.weight" if spec.deep_stem else f"{prefix}.conv1.weight")
            if stem is None:
                break
            return name, int(stem.shape[0])
    raise CheckpointError(f"unrecognised backbone under {prefix!r} (a {block} ResNet with blocks {counts})")


def infer_config(sd: Mapping[str, torch.Tensor]) -> TDNetConfig | PSPNetConfig:
    """Work out a model configuration from a state dict's key layout and shapes."""
    try:
        if "pretrained1.layer1.0.conv1.weight" in sd:
            n = len({m.group(1) for k in sd if (m := re.match(r"^pretrained(\d+)\.", k))})
            backbone, width = _backbone_from_keys(sd, "pretrained1")
            expansion = 4 if RESNET_SPECS[backbone].block == "bottleneck" else 1
            c = 8 * width * expansion
            d = sd["enc1.w_vs.0.conv.weight"].shape[1]
            value_dim = sd["enc1.w_vs.0.conv.weight"].shape[0]
            fh, fw = sd["layer_norm1.ln.weight"].shape
            return TDNetConfig(
                num_paths=n,
                groups=int(2 * c // d),
                backbone=backbone,
                width=width,
                key_dim=int(sd["enc1.w_qs.1.conv.weight"].shape[0]),
                value_dim=int(value_dim),
                head_reduction=int(value_dim // sd["head1.conv5.0.weight"].shape[0]),
                num_classes=int(sd["head1.conv5.4.weight"].shape[0]),
                input_size=((fh - 1) * 8 + 1, (fw - 1) * 8 + 1),
                aux="aux1.conv5.0.weight" in sd,
            )
        if "pretrained.layer1.0.conv1.weight" in sd and "group_convs.0.weight" in sd:
            backbone, width = _backbone_from_keys(sd, "pretrained")
            return GroupedPSPNetConfig(
                backbone=backbone,
                width=width,
                groups=len({k.split(".")[1] for k in sd if k.startswith("group_convs.")}),
                num_classes=int(sd["classifier.3.weight"].shape[0]),
                aux="auxlayer.conv5.0.weight" in sd,
            )
        if "pretrained.layer1.0.conv1.weight" in sd and "head.conv5.1.weight" in sd:
            backbone, width = _backbone_from_keys(sd, "pretrained")
            return PSPNetConfig(
                backbone=backbone,
                width=width,
                num_classes=int(sd["head.conv5.5.weight"].shape[0]),
                aux="auxlayer.conv5.0.weight" in sd,
            )
    except KeyError as exc:
        raise CheckpointError(f"incomplete TDNet/PSPNet state dict: key {exc.args[0]!r} is missing") from None
    raise CheckpointError(
        "not a TDNet or PSPNet state dict (no 'pretrained1.*' or 'pretrained.*' + 'head.conv5.*' keys; "
        f"first keys: {', '.join(list(sd)[:3])})"
    )


def _architecture(config) -> dict:
    """The fields that decide the weights' layout (input size and aux head do not)."""
    return {**config.__dict__, "input_size": None, "aux": None}


def _preset_name(config) -> str:
    for name, preset in PRESETS.items():
        if type(preset.config) is type(config) and _architecture(preset.config) == _architecture(config):
            return name
    return "custom"


def load_state_dict_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], what: str, expected: str) -> None:
    """Load every key with matching shapes, or raise one line naming a few differences."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    # Released files from the training script may carry an auxiliary head we do not build.
    unexpected = [k for k in sd if k not in own and not re.match(r"^(aux\d*|auxlayer)\.", k)]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch (file vs model): {few(shapes)}")
    if problems:
        raise CheckpointError(f"{what} does not fit {expected}: " + "; ".join(problems))
    model.load_state_dict({k: sd[k] for k in own}, strict=True)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    preset: str | None = None,
    input_size: tuple[int, int] | None = None,
) -> LoadedModel:
    """Load our checkpoint or a raw (released) state dict into a ready model (eval mode).

    ``preset`` checks that the file is that model; ``input_size`` runs the model at another
    input size (TDNet's spatial LayerNorm weights are resized bilinearly).
    """
    path = Path(path)
    sd, meta = _unwrap(_torch_load(path), path)
    if meta is not None:
        cfg_dict = dict(meta["config"])
        cfg_dict["input_size"] = tuple(cfg_dict["input_size"])
        config = KINDS[meta["kind"]][1](**cfg_dict)
    else:
        config = infer_config(sd)
    name = meta["preset"] if meta is not None else _preset_name(config)
    if preset is not None:
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
        name = preset
    model = build(config)
    load_state_dict_strict(model, sd, str(path), f"a {name} model" if name != "custom" else "the model its keys describe")
    if input_size is not None and tuple(input_size) != tuple(model.input_size):
        model.set_input_size(tuple(input_size))
    model.eval()
    classes = tuple(meta["classes"]) if meta else _classes_for(config.num_classes)
    palette = tuple(tuple(c) for c in meta["palette"]) if meta else _palette_for(config.num_classes)
    return LoadedModel(
        model=model,
        preset=name,
        classes=classes,
        palette=palette,
        mean=tuple(meta["mean"]) if meta else MEAN,
        std=tuple(meta["std"]) if meta else STD,
        source="tdnet" if meta else "state_dict",
        path=str(path),
        provenance=dict(meta.get("provenance", {})) if meta else {},
    )


def _classes_for(n: int) -> tuple[str, ...]:
    return CLASSES if n == len(CLASSES) else tuple(f"class{i}" for i in range(n))


def _palette_for(n: int) -> tuple[tuple[int, int, int], ...]:
    if n <= len(PALETTE):
        return PALETTE[:n]
    g = torch.Generator().manual_seed(0)
    extra = torch.randint(0, 256, (n - len(PALETTE), 3), generator=g).tolist()
    return PALETTE + tuple(tuple(c) for c in extra)


def random_model(preset: str, *, input_size: tuple[int, int] | None = None, num_classes: int | None = None) -> LoadedModel:
    """A preset with random weights (for benchmarks and training from scratch)."""
    overrides = {}
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if input_size is not None:
        overrides["input_size"] = tuple(input_size)
    model = get_preset(preset).build(**overrides).eval()
    n = model.config.num_classes
    return LoadedModel(model=model, preset=preset, classes=_classes_for(n), palette=_palette_for(n), source="random")


def describe(loaded: LoadedModel) -> dict:
    """Plain facts about a loaded checkpoint (for ``tdnet inspect`` and reports)."""
    from tdnet_cli.models.complexity import count_parameters

    model = loaded.model
    return {
        "path": loaded.path,
        "format": {"tdnet": "tdnet checkpoint", "state_dict": "raw state dict (authors' layout)"}.get(
            loaded.source, loaded.source),
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
