"""3x3 convolutions as Winograd F(4x4, 3x3) products, for the CPU fp32 fast path.

A stride-1 3x3 convolution computes each 4x4 block of outputs from a 6x6 block of inputs.
Winograd's transform turns that into 36 independent channel products: per output block,
``36 * C * K`` multiplies instead of ``144 * C * K``, so the wide dilated layers that hold
most of a TDNet step's FLOPs need 2.25x fewer multiplies and run as 36 plain matrix products.
A dilation d only spaces the taps: the block's rows and columns are d apart, so blocks are
gathered from a (rows / d, d, cols / d, d) view of the padded input and everything else is
unchanged.

In fp32 the result differs from a direct convolution by ~1e-5 of the output's range (direct
oneDNN: ~1e-6), well inside the conformance tolerance. Only the wide layers pay (the
transforms are memory-bound), so ``optimize_for_inference`` swaps in :class:`WinogradConv2d`
only where both channel counts reach ``min_channels``; measured on the 2-core CPU
(``python docs/experiments/winograd_layers.py``, docs/benchmarks.md): 512->512 dilation 4 at 97x193
306 -> 181 ms, 256->256 dilation 2 72 -> 57 ms, 128->128 19 -> 18 ms, 64->64 19 -> 39 ms.
Memory: the transformed weights hold 36 values per channel pair (4x the kernel) and each
thread keeps up to ~225 MB of scratch.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import nn

__all__ = ["WinogradConv2d", "keep_out_of_compiled_graphs", "use_winograd", "winograd_weight"]

# Lavin & Gray's F(4, 3) with interpolation points 0, 1, -1, 2, -2 and infinity.
_BT = torch.tensor(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    dtype=torch.float64,
)
_G = torch.tensor(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    dtype=torch.float64,
)
_AT = torch.tensor(
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], dtype=torch.float64
)
# Both sides of a 2-D block at once: (36, 36) for the input, (16, 36) for the output, (36, 9)
# for the kernel.
_INPUT_T = torch.kron(_BT, _BT).float()
_OUTPUT_T = torch.kron(_AT, _AT).float()
_KERNEL_T = torch.kron(_G, _G).float()

# Scratch buffers, one set per thread (pipelines run paths on more than one thread); reused
# across calls because freshly allocated blocks of this size cost page faults every call.
_scratch = threading.local()


def _buffer(slot: str, shape: tuple[int, ...]) -> torch.Tensor:
    n = math.prod(shape)
    buf = getattr(_scratch, slot, None)
    if buf is None or buf.numel() < n:
        # A normal tensor, even when first made under inference_mode: an inference tensor
        # could not be written to by later calls outside it (no_grad, a library user's loop).
        with torch.inference_mode(False):
            buf = torch.empty(n)
        setattr(_scratch, slot, buf)
    return buf[:n].view(shape)


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled()


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) kernel -> (36, C, K): G g G^T for each input/output channel pair.

    One (36, 9) x (9, C*K) product over the taps laid out tap-major: transposing the kernel
    before the transform moves a quarter of the bytes that transposing its result would
    (0.18-0.2 s -> 0.03-0.04 s for a 512x512 layer on one thread); float32 throughout, ~1e-7
    from the float64 transform, against the ~1e-5 the Winograd product itself differs by."""
    k, c = weight.shape[:2]
    taps = weight.detach().float().permute(2, 3, 1, 0).reshape(9, c * k)
    return (_KERNEL_T.to(taps.device) @ taps).reshape(36, c, k)


def use_winograd(conv: nn.Module, min_channels: int = 256) -> bool:
    """Whether ``conv`` is a 3x3, stride-1, 'same'-padded dense convolution wide enough to pay."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.dilation[0] == conv.dilation[1] == conv.padding[0] == conv.padding[1]
        and min(conv.in_channels, conv.out_channels) >= min_channels
    )


class WinogradConv2d(nn.Conv2d):
    """An inference-only drop-in for a 3x3 stride-1 conv (see module docstring).

    It keeps the original weight, so anything that reads ``weight`` (FLOP counts, the bench
    ceiling) sees the same layer; inputs other than CPU float32 outside autocast take the
    ordinary convolution.
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> WinogradConv2d:
        if not use_winograd(conv, min_channels=0):
            raise ValueError(f"not a 3x3 stride-1 same-padded conv: {conv}")
        new = cls(
            conv.in_channels,
            conv.out_channels,
            3,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        new.register_buffer("transformed", winograd_weight(new.weight), persistent=False)
        return new

    def _applies(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.transformed.dtype == torch.float32
            and not _cpu_autocast()
            and not (torch.is_grad_enabled() and x.requires_grad)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._applies(x):
            return super().forward(x)
        out = x.new_empty(x.shape[0], x.shape[2], x.shape[3], self.out_channels)  # NHWC
        for image, dst in zip(x.permute(0, 2, 3, 1), out):  # one image at a time bounds the scratch
            _winograd_one(image, self.transformed, self.bias, self.dilation[0], dst)
        return out.permute(0, 3, 1, 2)  # NCHW sizes, channels_last strides


def keep_out_of_compiled_graphs() -> None:
    """Make torch.compile run Winograd layers eagerly, between the graphs it compiles.

    Traced, the 36 gathers and products per layer take inductor many minutes to compile
    (td4-psp18: over 20 min for one path). Applied when a compile is asked for, not at import:
    ``torch.compiler.disable`` imports dynamo, ~1 s of every command's start-up otherwise.
    """
    if not getattr(WinogradConv2d.forward, "_tdnet_untraced", False):
        forward = torch.compiler.disable(WinogradConv2d.forward)
        forward._tdnet_untraced = True
        WinogradConv2d.forward = forward


# Block rows are processed a few at a time so that each scratch buffer stays under this many
# values (64 MB). Whole 769x1537 images need ~350 MB per thread; 512->512 dilation 4 at 97x193
# took 173-175 ms whole, 179-181 ms in chunks of this size, 185-188 ms at half of it.
_CHUNK_VALUES = 16_000_000


def _winograd_one(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, d: int, out: torch.Tensor) -> None:
    """One (H, W, C) image -> ``out`` (H, W, K), padding d, dilation d."""
    h, w, c = x.shape
    k = u.shape[2]
    ty, tx = -(-h // (4 * d)), -(-w // (4 * d))  # output blocks of 4 rows (cols), d apart
    hb, wb = 4 * ty + 2, 4 * tx + 2  # in units of d rows (cols), with the padding
    padded = _buffer("padded", (hb * d, wb * d, c))
    padded[:d].zero_()
    padded[d + h :].zero_()
    padded[:, :d].zero_()
    padded[:, d + w :].zero_()
    padded[d : d + h, d : d + w] = x
    # Row r of the padded image is (r // d, r % d) here; block (t, i) starts at row d*4t + i.
    grid = padded.view(hb, d, wb, d, c)
    per_row = d * tx * d  # blocks in one block row
    step = max(1, _CHUNK_VALUES // (36 * per_row * max(c, k)))
    for t0 in range(0, ty, step):
        n = min(step, ty - t0)
        tiles = n * per_row
        blocks = _buffer("blocks", (6, 6, n, d, tx, d, c))
        for i in range(6):
            rows = grid[4 * t0 + i : 4 * (t0 + n) + i : 4]
            for j in range(6):
                blocks[i, j].copy_(rows[:, :, j : j + 4 * tx : 4])
        transformed = _buffer("transformed", (36, tiles, c))
        torch.mm(_INPUT_T, blocks.view(36, -1), out=transformed.view(36, -1))
        products = _buffer("blocks", (36, tiles, k))  # the gathered blocks are no longer needed
        for m in range(36):
            torch.mm(transformed[m], u[m], out=products[m])
        result = _buffer("result", (16, tiles * k))
        torch.mm(_OUTPUT_T, products.view(36, -1), out=result)
        # (a, b, block row, row offset, block col, col offset, K) -> image rows (block, a, offset)
        blocks_out = result.view(4, 4, n, d, tx, d, k).permute(2, 0, 3, 4, 1, 5, 6)
        full = _buffer("full", (n, 4, d, tx, 4, d, k))
        if bias is None:
            full.copy_(blocks_out)
        else:
            torch.add(blocks_out, bias, out=full)
        r0 = 4 * d * t0
        r1 = min(h, r0 + 4 * d * n)
        out[r0:r1].copy_(full.view(n * 4 * d, tx * 4 * d, k)[: r1 - r0, :w])
