"""Starting weights for training, as the authors' recipe sets them (the authors' training recipe).

- A per-frame PSPNet (psp18/psp50/psp101) starts from ImageNet weights given as a local
  file: a torchvision ResNet (one 7x7 stem conv) or a deep-stem ResNet-50/101 (three 3x3
  stem convs, the layout of the released PSPNet-101 and TD2-PSP50), told apart by keys.
- A TDNet starts from a per-frame PSPNet of the same backbone: every path's backbone and
  pyramid pooling; in td4 the heads of paths 1 and 3 from the first half of the PSPNet
  head's first conv split in two groups, paths 2 and 4 from the second half (the heads'
  BN and classifier are the PSPNet's; the spatial LayerNorms stay new); every path's
  auxiliary head from the PSPNet's. td2 leaves its heads new.
- Every conv and linear layer that nothing was loaded into gets kaiming normal weights
  (a=1) and zero biases; norm layers keep their defaults (weight 1, bias 0).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from tdnet_cli.errors import CheckpointError, few
from tdnet_cli.models.checkpoint import infer_config, read_state_dict
from tdnet_cli.models.pspnet import PSPNetConfig
from tdnet_cli.models.resnet import RESNET_SPECS, DilatedResNet
from tdnet_cli.models.tdnet import TDNet
from tdnet_cli.models.teacher import split_head_weight

__all__ = ["InitReport", "imagenet_layout", "init_from_imagenet", "init_tdnet_from_pspnet", "kaiming_init_"]

Source = str | os.PathLike | Mapping[str, torch.Tensor]


@dataclass
class InitReport:
    """What an initialisation did: keys loaded (the model's names), layers left new, notes."""

    source: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # modules given kaiming normal (a=1), bias 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        notes = f"; {'; '.join(self.notes)}" if self.notes else ""
        return (
            f"loaded {len(self.loaded)} tensors from {self.source}; "
            f"{len(self.new)} layers new (kaiming normal, a=1){notes}"
        )


def kaiming_init_(model: nn.Module, *, skip: Collection[str] = ()) -> list[str]:
    """Kaiming normal (a=1, fan in) weights and zero biases for every conv and linear layer
    whose weight's state-dict key is not in ``skip``. Returns the names of those layers."""
    skip = set(skip)
    done = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or f"{name}.weight" in skip:
            continue
        with torch.no_grad():
            nn.init.kaiming_normal_(module.weight, a=1)
            if module.bias is not None:
                module.bias.zero_()
        done.append(name)
    return done


def _state_dict(source: Source) -> tuple[dict[str, torch.Tensor], str]:
    """(tensors, a name for messages) from a file (ours or raw) or an in-memory state dict."""
    if isinstance(source, Mapping):
        return {str(k).removeprefix("module."): v for k, v in source.items()}, "the state dict"
    return read_state_dict(source), str(source)


def _backbones(model: nn.Module) -> dict[str, DilatedResNet]:
    """State-dict prefix -> backbone, for a TDNet (one per path) or a per-frame model."""
    if isinstance(model, TDNet):
        return {f"pretrained{p + 1}": getattr(model, f"pretrained{p + 1}") for p in range(model.num_paths)}
    if isinstance(getattr(model, "pretrained", None), DilatedResNet):
        return {"pretrained": model.pretrained}
    raise TypeError(f"{type(model).__name__} has no dilated ResNet backbone to initialise")


def _pretty(depth: str) -> str:
    return "ResNet-" + depth.removeprefix("resnet")


def _stem_words(deep: bool) -> str:
    if deep:
        return "deep stem (three 3x3 convs conv1.0/conv1.3/conv1.6, as in the released PSPNet-101 and TD2-PSP50)"
    return "plain stem (one 7x7 conv1, torchvision's layout)"


def imagenet_layout(sd: Mapping[str, torch.Tensor], where: str = "the state dict") -> tuple[bool, str]:
    """(deep stem?, depth name such as ``"resnet50"``) of an ImageNet ResNet state dict."""
    if all(f"conv1.{i}.weight" in sd for i in (0, 3, 6)):
        deep = True
    elif "conv1.weight" in sd and sd["conv1.weight"].dim() == 4:
        deep = False
    else:
        raise CheckpointError(
            f"{where} is not an ImageNet ResNet state dict in a known layout: expected torchvision's "
            f"(conv1.weight, bn1.*, layer1.0.*, ...) or a deep-stem one (conv1.0/conv1.3/conv1.6.weight, bn1.*, "
            f"layer1.0.*, ...); its first keys are {few(list(sd), 3)}"
        )
    block = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
    counts = []
    for layer in range(1, 5):
        pat = re.compile(rf"^layer{layer}\.(\d+)\.conv1\.weight$")
        counts.append(len({m.group(1) for k in sd if (m := pat.match(k))}))
    for name, spec in RESNET_SPECS.items():
        if spec.block == block and spec.layers == tuple(counts):
            return deep, name
    raise CheckpointError(
        f"{where}: unrecognised ResNet ({block} blocks {tuple(counts)} per stage); "
        f"expected one of {', '.join(_pretty(n) for n in RESNET_SPECS)}"
    )


def init_from_imagenet(model: nn.Module, source: Source) -> InitReport:
    """Load ImageNet ResNet weights into the model's backbone(s); every other conv and linear
    layer (pyramid pooling, heads) is initialised new. The stem layout and depth must be the
    model's: a mismatch is one CheckpointError naming the expected layout."""
    sd, where = _state_dict(source)
    backbones = _backbones(model)
    ref = next(iter(backbones.values()))
    deep, depth = imagenet_layout(sd, where)
    want = f"an ImageNet {_pretty(ref.depth)} with a {_stem_words(ref.deep_stem)}"
    if depth != ref.depth or deep != ref.deep_stem:
        raise CheckpointError(
            f"{where} holds an ImageNet {_pretty(depth)} with a {_stem_words(deep)}; "
            f"this {_pretty(ref.depth)} backbone needs {want}",
            hint="pass the ImageNet weights of the model's backbone",
        )
    own = ref.state_dict()
    # The ImageNet classifier is unused; it is loaded only when it fits.
    take = {k: sd[k] for k in own if k in sd and not (k.startswith("fc.") and sd[k].shape != own[k].shape)}
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked") and not k.startswith("fc.")]
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in take.items() if v.shape != own[k].shape]
    if missing or shapes:
        problems = ([f"missing keys: {few(missing)}"] if missing else []) + (
            [f"shape mismatch (file vs model): {few(shapes)}"] if shapes else []
        )
        raise CheckpointError(f"{where} does not fit {want} of width {ref.width}: " + "; ".join(problems))
    report = InitReport(str(where))
    for prefix, backbone in backbones.items():
        backbone.load_state_dict(take, strict=False)
        report.loaded += [f"{prefix}.{k}" for k in take]
    report.new = kaiming_init_(model, skip=report.loaded)
    return report


def _copy_exact(own: Mapping[str, torch.Tensor], pairs: dict[str, torch.Tensor], where: str, what: str) -> None:
    """Check that every source tensor has its target's shape; one line naming a few if not."""
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in pairs.items() if v.shape != own[k].shape]
    if shapes:
        raise CheckpointError(f"{where}: {what} does not fit: shape mismatch (file vs model): {few(shapes)}")


def _path_parts(
    own: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], n: int, where: str
) -> dict[str, torch.Tensor]:
    """Every path's backbone (pretrained.*) and pyramid pooling (head.conv5.0.*), all required."""
    pairs, missing = {}, []
    for p in range(1, n + 1):
        for target, source in ((f"pretrained{p}.", "pretrained."), (f"psp{p}.", "head.conv5.0.")):
            for key in (k for k in own if k.startswith(target)):
                name = source + key[len(target) :]
                if name in sd:
                    pairs[key] = sd[name]
                elif not key.endswith("num_batches_tracked"):
                    missing.append(name)
    if missing:
        raise CheckpointError(f"{where}: incomplete PSPNet state dict: missing {few(sorted(set(missing)))}")
    _copy_exact(own, pairs, where, "the backbone or pyramid pooling")
    return pairs


def _head_parts(sd: Mapping[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """Path p's head from half p % 2 of the PSPNet head's first conv, its BN and classifier."""
    halves = split_head_weight(sd["head.conv5.1.weight"], 2)
    pairs = {}
    for p in range(1, n + 1):
        pairs[f"head{p}.conv5.0.weight"] = halves[(p - 1) % 2]
        for key, value in sd.items():
            if key.startswith("head.conv5.2."):  # BN -> conv5.1, classifier conv5.5 -> conv5.4
                pairs[f"head{p}.conv5.1.{key[len('head.conv5.2.') :]}"] = value
            elif key.startswith("head.conv5.5."):
                pairs[f"head{p}.conv5.4.{key[len('head.conv5.5.') :]}"] = value
    return pairs


def _aux_parts(sd: Mapping[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {
        f"aux{p}.{k[len('auxlayer.') :]}": v
        for p in range(1, n + 1)
        for k, v in sd.items()
        if k.startswith("auxlayer.")
    }


def _fits(own: Mapping[str, torch.Tensor], pairs: Mapping[str, torch.Tensor]) -> list[str]:
    """Targets that are missing from the model or differ in shape (empty: all fit)."""
    return [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape) if k in own else 'absent'}"
        for k, v in pairs.items()
        if k not in own or v.shape != own[k].shape
    ]


def init_tdnet_from_pspnet(model: TDNet, source: Source, *, heads: bool | None = None) -> InitReport:
    """Initialise a TDNet from a per-frame PSPNet of the same backbone (see the module docstring).

    ``heads``: None follows the authors (td4 loads the heads, td2 leaves them new; heads
    whose shapes do not fit the PSPNet's stay new, with a note); True loads them or raises.
    """
    sd, where = _state_dict(source)
    config = infer_config(sd, where)
    if type(config) is not PSPNetConfig:
        raise CheckpointError(
            f"{where} is not a per-frame PSPNet checkpoint",
            hint="model.init takes a psp* checkpoint (or the authors' PSPNet state dict)",
        )
    cfg = model.config
    if (config.backbone, config.width) != (cfg.backbone, cfg.width):
        raise CheckpointError(
            f"{where} is a PSPNet with a {_pretty(config.backbone)} of width {config.width}; "
            f"this TDNet needs a {_pretty(cfg.backbone)} of width {cfg.width}",
            hint="initialise from a per-frame PSPNet of the same backbone",
        )
    own = model.state_dict()
    n = cfg.num_paths
    report = InitReport(str(where))
    pairs = _path_parts(own, sd, n, where)
    if (n == 4) if heads is None else heads:
        head = _head_parts(sd, n)
        bad = _fits(own, head)
        if not bad:
            pairs.update(head)
        elif heads:  # asked for explicitly
            raise CheckpointError(f"{where}: the PSPNet head's halves do not fit the paths' heads: {few(bad)}")
        else:
            report.notes.append(f"heads new: the PSPNet head's halves do not fit ({few(bad, 1)})")
    else:
        report.notes.append("heads new" + (f" ({n} paths)" if heads is None else ""))
    if cfg.aux:
        aux = _aux_parts(sd, n)
        if aux and not _fits(own, aux):
            pairs.update(aux)
        else:
            report.notes.append("auxiliary heads new: " + ("the file has none" if not aux else "shapes differ"))
    model.load_state_dict(pairs, strict=False)
    report.loaded = list(pairs)
    report.new = kaiming_init_(model, skip=pairs)
    return report
