"""Temporally Distributed Network: N shallow paths, one per frame, fused by attention.

Frame ``i`` of a stream runs path ``i mod N`` only. Its pyramid features are encoded
into queries, keys and values; the memories (q, k, v) of the previous N-1 frames are
propagated to the current frame by a chain of attention modules and added to the
current frame's values, then normalised and classified. The weights' layout is the authors' (tests/test_conformance.py checks it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from tdnet_cli.models.attention import AttentionPropagation, Memory, QueryKeyValue
from tdnet_cli.models.heads import FCNHead, SpatialLayerNorm
from tdnet_cli.models.pyramid import PyramidPooling
from tdnet_cli.models.resnet import DilatedResNet, feature_size

__all__ = ["StreamState", "TDNet", "TDNetConfig"]


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class TDNetConfig:
    num_paths: int = 4
    groups: int = 2
    backbone: str = "resnet18"
    width: int = 64
    key_dim: int = 64
    value_dim: int = 512
    head_reduction: int = 4
    num_classes: int = 19
    input_size: tuple[int, int] = (769, 1537)
    aux: bool = False  # auxiliary FCN head on layer3 (training only; not in released checkpoints)
    # The memory keeps every k-th row and column of a frame's features (4 in the released
    # models; no parameter depends on it).
    memory_stride: int = 4


@dataclass(frozen=True)
class StreamState:
    """Everything a stream carries between frames: the memories of the last frames
    (oldest first, at most N-1) and how many frames it has seen. Immutable: ``step``
    returns a new one, so one model can serve any number of streams."""

    memories: tuple[Memory, ...] = ()
    frame_index: int = 0
    batch: int = 1


class TDNet(nn.Module):
    """TDNet with ``num_paths`` paths and parameter names of the released checkpoints."""

    def __init__(self, config: TDNetConfig) -> None:
        super().__init__()
        cfg = self.config = config
        n = cfg.num_paths
        # False: every frame uses only its own sub-features (an ablation of the memory).
        self.use_memory = True
        # Training only: the chance per clip that a block of the current frame's values is
        # hidden from the full output, which must then be filled from the memory.
        self.value_drop = 0.0
        if n < 2:
            raise ValueError("TDNet needs at least 2 paths")
        self.feature_size = feature_size(cfg.input_size)
        backbones = [DilatedResNet(cfg.backbone, cfg.width) for _ in range(n)]
        c = backbones[0].out_channels
        # Registration order follows the released state dicts.
        for p in range(n):
            self.add_module(f"pretrained{p + 1}", backbones[p])
        for p in range(n):
            self.add_module(f"psp{p + 1}", PyramidPooling(c, groups=cfg.groups, group=p % cfg.groups))
        d = 2 * c // cfg.groups
        for p in range(n):
            self.add_module(f"enc{p + 1}", QueryKeyValue(d, cfg.key_dim, cfg.value_dim, cfg.memory_stride))
        for p in range(n):  # sorted by target path, as in the released files
            for name in sorted((self._attention_name(p, i) for i in range(n - 1)), key=_natural):
                self.add_module(name, AttentionPropagation(cfg.value_dim))
        for p in range(n):
            self.add_module(f"layer_norm{p + 1}", SpatialLayerNorm(self.feature_size))
        for p in range(n):
            self.add_module(f"head{p + 1}", FCNHead(cfg.value_dim, cfg.num_classes, cfg.head_reduction))
        if cfg.aux:
            for p in range(n):
                self.add_module(f"aux{p + 1}", FCNHead(backbones[p].layer3_channels, cfg.num_classes, 4))

    # -- structure -------------------------------------------------------------------
    @property
    def num_paths(self) -> int:
        return self.config.num_paths

    @property
    def input_size(self) -> tuple[int, int]:
        return self.config.input_size

    def _attention_name(self, path: int, step: int) -> str:
        n = self.config.num_paths
        if n == 2:
            return f"atn{path + 1}"
        return f"atn{path + 1}_{(path + 1 + step) % n + 1}"

    def path_modules(self, path: int) -> dict[str, nn.Module]:
        p = path + 1
        return {
            "backbone": getattr(self, f"pretrained{p}"),
            "psp": getattr(self, f"psp{p}"),
            "enc": getattr(self, f"enc{p}"),
            "ln": getattr(self, f"layer_norm{p}"),
            "head": getattr(self, f"head{p}"),
        }

    def attention_chain(self, path: int) -> list[AttentionPropagation]:
        return [getattr(self, self._attention_name(path, i)) for i in range(self.config.num_paths - 1)]

    def set_input_size(self, input_size: tuple[int, int]) -> None:
        """Run at another input size: the spatial LayerNorms are resized bilinearly."""
        fs = feature_size(input_size)
        for p in range(self.num_paths):
            getattr(self, f"layer_norm{p + 1}").resize_(fs)
        self.feature_size = fs
        self.config = type(self.config)(**{**self.config.__dict__, "input_size": tuple(input_size)})

    # -- the computation ---------------------------------------------------------------
    def encode(self, x: torch.Tensor, path: int, with_aux: bool = False):
        """Run one path on a normalised frame batch (B, 3, H, W)."""
        m = self.path_modules(path)
        c3, c4 = m["backbone"].forward_features(x)
        v, q, memory = m["enc"](m["psp"](c4))
        aux = getattr(self, f"aux{path + 1}")(c3) if with_aux else None
        return v, q, memory, aux

    def propagate(self, memories: tuple[Memory, ...], q_cur: torch.Tensor, path: int) -> torch.Tensor:
        """Chain the memories (oldest first) forward to the current frame's queries."""
        chain = self.attention_chain(path)
        out = None
        for i, mem in enumerate(memories):
            values = mem.v if out is None else out + mem.v
            target = memories[i + 1].q if i + 1 < len(memories) else q_cur
            out = chain[i](mem.k, values, target)
        return out

    def decode(self, feat: torch.Tensor, path: int) -> torch.Tensor:
        m = self.path_modules(path)
        return m["head"](m["ln"](feat))

    def fuse(self, v_cur: torch.Tensor, q_cur: torch.Tensor, memories: tuple[Memory, ...], path: int) -> torch.Tensor:
        """Current values plus what the full memory queue propagates to them."""
        if len(memories) < self.num_paths - 1 or not self.use_memory:
            return v_cur  # warm-up (the queue is not full yet), or propagation switched off
        b, dv, h, w = v_cur.shape
        c = self.propagate(memories, q_cur, path)
        return c.transpose(1, 2).reshape(b, dv, h, w) + v_cur

    # -- streaming ---------------------------------------------------------------------
    def new_state(self, batch: int = 1) -> StreamState:
        return StreamState(batch=batch)

    def step(self, x: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        """Segment the next frame of ``state``'s stream(s): (B, 3, H, W) -> logits at feature size."""
        path = self.next_path(state)
        logits, memory = self.step_tensors(x, state.memories, path)
        return logits, self.advance(state, memory, x.shape[0])

    def next_path(self, state: StreamState) -> int:
        return state.frame_index % self.num_paths

    def step_tensors(self, x: torch.Tensor, memories: tuple[Memory, ...], path: int):
        """The tensor work of one step (what ``torch.compile`` gets, one graph per path)."""
        v, q, memory, _ = self.encode(x, path)
        return self.decode(self.fuse(v, q, memories, path), path), memory

    def advance(self, state: StreamState, memory: Memory, batch: int) -> StreamState:
        """The state after a step: this frame's memory pushed, the oldest beyond N-1 dropped."""
        return StreamState((state.memories + (memory,))[-(self.num_paths - 1) :], state.frame_index + 1, batch)

    # -- training ----------------------------------------------------------------------
    def _value_mask(self, v: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w): zero inside one random rectangle (each side 30-70% of the map) for a
        ``value_drop`` share of the clips, one elsewhere. Drawn from torch's global generator,
        which the trainer seeds per iteration."""
        b, _, h, w = v.shape
        mask = torch.ones(b, 1, h, w, dtype=v.dtype, device=v.device)
        draw = torch.rand(b, 5).tolist()
        for i, (hit, fh, fw, fy, fx) in enumerate(draw):
            if hit < self.value_drop:
                bh, bw = max(1, round(h * (0.3 + 0.4 * fh))), max(1, round(w * (0.3 + 0.4 * fw)))
                y, x = int(fy * (h - bh + 1)), int(fx * (w - bw + 1))
                mask[i, :, y : y + bh, x : x + bw] = 0
        return mask

    def forward(self, clip: torch.Tensor, path: int | None = None) -> dict[str, torch.Tensor]:
        """Training forward on a clip (B, T, 3, H, W) ending at the annotated frame.

        The last frame runs ``path`` (the earlier frames the paths before it, cyclically).
        Returns feature-size logits: ``out`` (with propagation), ``sub`` (current frame's
        own sub-features only) and ``aux`` (layer3 head, if the model has one).
        """
        n = self.num_paths
        t = clip.shape[1]
        if path is None:
            path = (t - 1) % n
        memories: tuple[Memory, ...] = ()
        for i in range(t - 1):
            _, _, mem, _ = self.encode(clip[:, i], (path - (t - 1) + i) % n)
            memories = (memories + (mem,))[-(n - 1) :]
        v, q, _, aux = self.encode(clip[:, -1], path, with_aux=self.config.aux)
        v_full = v * self._value_mask(v) if self.training and self.value_drop > 0 else v
        out = {"out": self.decode(self.fuse(v_full, q, memories, path), path), "sub": self.decode(v, path)}
        if aux is not None:
            out["aux"] = aux
        return out
