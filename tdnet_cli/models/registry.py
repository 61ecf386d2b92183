"""Named presets: the public face is ``create_model(name)`` and ``list_models()``."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from tdnet_cli.errors import UsageError
from tdnet_cli.models.grouped_psp import GroupedPSPNet, GroupedPSPNetConfig
from tdnet_cli.models.pspnet import PSPNet, PSPNetConfig
from tdnet_cli.models.tdnet import TDNet, TDNetConfig

# kind -> (model class, config class)
KINDS: dict[str, tuple[type[nn.Module], type]] = {
    "tdnet": (TDNet, TDNetConfig),
    "pspnet": (PSPNet, PSPNetConfig),
    "gpspnet": (GroupedPSPNet, GroupedPSPNetConfig),
}


def kind_of(config) -> str:
    return next(k for k, (_, cfg_cls) in KINDS.items() if isinstance(config, cfg_cls))


def build(config) -> nn.Module:
    """The model for a configuration object (any kind)."""
    return KINDS[kind_of(config)][0](config)


__all__ = ["PRESETS", "Preset", "create_model", "get_preset", "list_models", "register"]


@dataclass(frozen=True)
class Preset:
    """A named model: how to build it, and what is known about its published weights."""

    name: str
    kind: str  # "tdnet" | "pspnet" | "gpspnet"
    config: TDNetConfig | PSPNetConfig | GroupedPSPNetConfig
    description: str
    weights_source: str = "none: train with `tdnet train`"
    paper: dict = field(default_factory=dict)  # e.g. {"miou": 76.8, "ms_per_frame": 85, "gpu": "Titan Xp"}

    @property
    def num_paths(self) -> int:
        return self.config.num_paths if isinstance(self.config, TDNetConfig) else 1

    def build(self, **overrides) -> nn.Module:
        return build(type(self.config)(**{**self.config.__dict__, **overrides}))


PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset


_AUTHORS = "released: {} (authors' page)"

register(
    Preset(
        "td4-psp18",
        "tdnet",
        TDNetConfig(num_paths=4, groups=2, backbone="resnet18", value_dim=512, head_reduction=4),
        "TDNet, 4 paths of dilated ResNet-18 + grouped pyramid pooling",
        _AUTHORS.format("td4-psp18.pkl"),
        {"dataset": "Cityscapes val", "miou": 76.8, "ms_per_frame": 85, "gpu": "Titan Xp"},
    )
)
register(
    Preset(
        "td2-psp50",
        "tdnet",
        TDNetConfig(num_paths=2, groups=2, backbone="resnet50", value_dim=512, head_reduction=2),
        "TDNet, 2 paths of dilated ResNet-50 + grouped pyramid pooling",
        _AUTHORS.format("td2-psp50.pkl"),
        {"dataset": "Cityscapes val", "miou": 79.9, "ms_per_frame": 180, "gpu": "Titan Xp"},
    )
)
register(
    Preset(
        "td4-mini",
        "tdnet",
        TDNetConfig(
            num_paths=4,
            groups=2,
            backbone="resnet18",
            width=16,
            key_dim=32,
            value_dim=128,
            head_reduction=2,
            input_size=(256, 512),
        ),
        "CPU-friendly TDNet: 4 paths of quarter-width ResNet-18 at 256x512 (the bundled demo model)",
        "bundled: weights/td4-mini-synth.pt (synthetic demo)",
    )
)
for _depth in (18, 50, 101):
    register(
        Preset(
            f"psp{_depth}",
            "pspnet",
            PSPNetConfig(backbone=f"resnet{_depth}"),
            f"PSPNet with dilated ResNet-{_depth}, run on every frame (the per-frame baseline)",
            _AUTHORS.format("psp101.pkl") if _depth == 101 else "none: train with `tdnet train`",
        )
    )
register(
    Preset(
        "gpsp101",
        "gpspnet",
        GroupedPSPNetConfig(backbone="resnet101", groups=4),
        "grouped PSPNet-101 teacher for 4-path TDNet distillation (train it with `tdnet train`)",
    )
)
register(
    Preset(
        "gpsp101-g2",
        "gpspnet",
        GroupedPSPNetConfig(backbone="resnet101", groups=2),
        "grouped PSPNet-101 teacher for 2-path TDNet distillation (td2-psp50)",
    )
)
register(
    Preset(
        "psp-mini",
        "pspnet",
        PSPNetConfig(backbone="resnet18", width=16, input_size=(256, 512)),
        "per-frame PSPNet at td4-mini's width: the --init source of every td4-mini path",
    )
)
register(
    Preset(
        "gpsp-mini",
        "gpspnet",
        GroupedPSPNetConfig(backbone="resnet18", width=32, groups=4, input_size=(256, 512)),
        "grouped PSPNet teacher for td4-mini: half-width ResNet-18, 4 groups",
    )
)
# A tiny preset for tests and quick experiments: seconds per step on a CPU.
register(
    Preset(
        "td4-tiny",
        "tdnet",
        TDNetConfig(
            num_paths=4,
            groups=2,
            backbone="resnet18",
            width=8,
            key_dim=16,
            value_dim=32,
            head_reduction=2,
            input_size=(64, 128),
        ),
        "test-sized TDNet (8-wide ResNet-18 at 64x128); for tests and smoke runs",
    )
)
register(
    Preset(
        "gpsp-tiny",
        "gpspnet",
        GroupedPSPNetConfig(backbone="resnet18", width=8, groups=4, input_size=(64, 128)),
        "test-sized grouped PSPNet teacher for td4-tiny",
    )
)
register(
    Preset(
        "psp-tiny",
        "pspnet",
        PSPNetConfig(backbone="resnet18", width=8, input_size=(64, 128)),
        "test-sized PSPNet (8-wide ResNet-18 at 64x128); for tests and smoke runs",
    )
)


def list_models() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}", hint=f"choose one of: {', '.join(PRESETS)}") from None


def create_model(name: str, **overrides) -> nn.Module:
    """Build a preset with random weights; ``overrides`` replace config fields (e.g. num_classes)."""
    return get_preset(name).build(**overrides)
