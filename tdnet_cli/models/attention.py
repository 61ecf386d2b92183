"""Query/key/value encoding of a path's features and attention propagation between frames."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MEMORY_STRIDE", "AttentionPropagation", "Conv", "ConvBNAct", "Memory", "QueryKeyValue"]

MEMORY_STRIDE = 4  # the released models' memory keeps every 4th row and column of a frame's features


class Conv(nn.Module):
    """A 1x1 conv with bias, wrapped so parameter names read ``<name>.conv.weight``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvBNAct(nn.Module):
    """1x1 conv (with bias) -> BN -> LeakyReLU(0.01)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=True)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Memory(NamedTuple):
    """What a frame leaves for later frames: flattened (B, P, d) queries, keys and values."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> contiguous (B, h*w, C), positions in row-major (y, x) order.

    Free for a channels_last map; contiguity is what the fused attention kernels need.
    """
    return x.flatten(2).transpose(1, 2).contiguous()


class QueryKeyValue(nn.Module):
    """Projects a path's pyramid features z into queries, keys (d_k) and values (d_v)."""

    def __init__(
        self, in_channels: int, key_dim: int = 64, value_dim: int = 512, memory_stride: int = MEMORY_STRIDE
    ) -> None:
        super().__init__()
        self.w_qs = nn.Sequential(ConvBNAct(in_channels, key_dim), Conv(key_dim, key_dim))
        self.w_ks = nn.Sequential(ConvBNAct(in_channels, key_dim), Conv(key_dim, key_dim))
        self.w_vs = nn.Sequential(Conv(in_channels, value_dim))
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.memory_stride = memory_stride

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Memory]:
        """Returns (v_cur (B, Dv, h, w), q_cur (B, h*w, d_k), memory of this frame)."""
        q = self.w_qs(z)
        v = self.w_vs(z)
        # Every op before the subsampling is per-position, so subsampling q and v equals
        # encoding the subsampled z; only the keys are computed on the subsampled map alone.
        s = self.memory_stride
        zs = z[:, :, ::s, ::s]
        memory = Memory(_flatten(q[:, :, ::s, ::s]), _flatten(self.w_ks(zs)), _flatten(v[:, :, ::s, ::s]))
        return v, _flatten(q), memory


class AttentionPropagation(nn.Module):
    """softmax(q_tgt k_src^T / sqrt(d_k)) v_src, then a per-position linear map (``fc.0.conv``)."""

    def __init__(self, value_dim: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc = nn.Sequential(Conv(value_dim, value_dim), nn.Dropout(dropout))
        self.dropout = dropout
        self.use_sdpa = False  # the fast path switches to scaled_dot_product_attention

    def forward(self, k_src: torch.Tensor, v_src: torch.Tensor, q_tgt: torch.Tensor) -> torch.Tensor:
        """(B, P, d_k), (B, P, Dv), (B, T, d_k) -> (B, T, Dv)."""
        conv = self.fc[0].conv
        if self.use_sdpa:
            # The 1x1 conv is linear and every softmax row sums to 1, so it can be applied to
            # the P source values before attending instead of to the T targets after (bias
            # included): the same function, and at full resolution T >> P (18721 vs 1225).
            v_src = F.linear(v_src, conv.weight.flatten(1), conv.bias)
            if q_tgt.device.type == "cuda":
                # Fused kernel on the GPU (values may be wider than keys there).
                return F.scaled_dot_product_attention(q_tgt[:, None], k_src[:, None], v_src[:, None])[:, 0]
            # CPU: the fused kernels need equal key and value widths (64 vs 512 here) and the
            # generic fallback adds masking passes, so: plain bmm/softmax, scaling the small q.
            attn = torch.bmm(q_tgt * (1.0 / math.sqrt(q_tgt.shape[-1])), k_src.transpose(1, 2))
            return torch.bmm(attn.softmax(2), v_src)
        attn = torch.bmm(q_tgt, k_src.transpose(1, 2)) / math.sqrt(q_tgt.shape[-1])
        attn = F.dropout(torch.softmax(attn, dim=2), self.dropout, self.training)
        out = torch.bmm(attn, v_src)
        out = F.linear(out, conv.weight.flatten(1), conv.bias)
        return self.fc[1](out)
