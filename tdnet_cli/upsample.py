"""Labels of bilinearly upsampled logits, without upsampling every class at every pixel.

``upsample_argmax(logits, size)`` is ``F.interpolate(logits, size, mode="bilinear",
align_corners=True).argmax(1)`` as uint8, computed exactly (up to float rounding at
near-ties) with a small fraction of the work on the CPU:

1. Each output pixel is a convex combination of the logits at the four corners of its
   low-resolution cell. Where all four corners have the same argmax k, k is also the argmax
   of any convex combination (ties included: the lowest index wins in both). So a cell's
   label is known wherever its corners agree, and only cells on class boundaries need work.
2. Cells that span 16 or more output pixels are first split into 2 x 2 (from 32: 4 x 4)
   sub-cells by sampling the same bilinear surface at their corners (only inside boundary cells:
   elsewhere rule 1 gives the label). Inside a sub-cell the surface is still the bilinear
   interpolation of its corners, so the rule holds again and narrows the band left.
3. In a boundary (sub-)cell each class's logit stays between its smallest and largest
   corner value, so a class whose largest is below the largest of the classes' smallest
   never wins there. Usually two classes are left: then a pixel's label is the sign of
   their difference, one bilinear value; otherwise the few candidates are compared pixel by
   pixel. No pixel ever interpolates all classes.

Argmax over classes is done class-major (a max, a compare, a max over uint8), about four
times numpy's own argmax for 19 classes. A GPU interpolates every pixel in one pass instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["argmax_classes", "upsample_argmax"]


def upsample_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Labels (B, H, W) uint8 of logits (B, C, h, w) resized bilinearly (align_corners=True)."""
    logits = logits.float()
    b, c, h, w = logits.shape
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return logits.argmax(1).to(torch.uint8)
    if logits.device.type != "cpu" or c > 255:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True).argmax(1).to(torch.uint8)
    plan = _plan(h, w, out_h, out_w)
    coarse = argmax_classes(logits.transpose(0, 1).reshape(c, -1).numpy()).reshape(b, h, w)
    # Pixel-major (channels_last) tables: gathering a point's classes is one contiguous row.
    grid = logits.contiguous(memory_format=torch.channels_last)
    if (plan.fine_h, plan.fine_w) != (h, w):
        grid = F.interpolate(grid, size=(plan.fine_h, plan.fine_w), mode="bilinear", align_corners=True)
    points = plan.fine_h * plan.fine_w
    table = grid.permute(0, 2, 3, 1).reshape(b * points, c)  # a view
    out = np.empty((b, out_h, out_w), np.uint8)
    for i in range(b):
        rows = table[i * points : (i + 1) * points]
        _fill(rows, _fine_labels(coarse[i], rows, plan), plan, out[i])
    return torch.from_numpy(out)


def argmax_classes(x: np.ndarray) -> np.ndarray:
    """Argmax over axis 0 of (C, N) values (C < 256) as uint8; the lowest index on ties."""
    c = x.shape[0]
    top = (x == x.max(0)).view(np.uint8)
    top *= _descending(c)  # the lowest winning index gets the highest weight
    return c - top.max(0)


def _argmax_rows(x: torch.Tensor) -> np.ndarray:
    """:func:`argmax_classes` of (N, C) rows."""
    return argmax_classes(np.ascontiguousarray(x.numpy().T))


@functools.lru_cache(maxsize=8)
def _descending(c: int) -> np.ndarray:
    return np.arange(c, 0, -1, dtype=np.uint8)[:, None]


# --------------------------------------------------------------------------- geometry


def _subdivision(n: int, out: int) -> int:
    """Sub-cells per cell along one axis: 2 where cells span 16 or more output pixels, 4 from
    32 (the fastest of 1-8 on real logits at 1024x512 and 2048x1024)."""
    span = (out - 1) / max(n - 1, 1)
    return 1 if n <= 1 or span < 16 else 2 if span < 32 else 4


def _cells(n: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """For ``out`` output positions (align_corners=True) over ``n`` inputs: each one's weight
    towards the far corner of its cell (cells are the top/left corners 0..n-2), and how many
    output positions each cell holds."""
    pos = np.linspace(0, n - 1, out) if out > 1 else np.zeros(1)
    cell = np.minimum(np.floor(pos).astype(np.int64), max(n - 2, 0))
    return (pos - cell).astype(np.float32), np.bincount(cell, minlength=max(n - 1, 1))


def _far(n: int) -> np.ndarray:
    """The far corner of each of the cells of ``n`` points (the same point when n is 1)."""
    return np.minimum(np.arange(max(n - 1, 1)) + 1, n - 1)


@dataclass(frozen=True)
class _Plan:
    """Everything about one (logits size, output size) pair that does not depend on values."""

    fine_h: int  # the subdivided grid
    fine_w: int
    coarse_row: np.ndarray  # each fine row's / column's cell on the logits grid
    coarse_col: np.ndarray
    coarse_far_row: np.ndarray  # far corner of each logits-grid cell row / column
    coarse_far_col: np.ndarray
    wy: np.ndarray  # each output row's / column's weight towards the far side of its fine cell
    wx: np.ndarray
    ny: np.ndarray  # output rows per fine cell row, and the first of them
    first_row: np.ndarray
    nx: np.ndarray
    first_col: np.ndarray
    far_row: np.ndarray  # far corner of each fine cell row / column
    far_col: np.ndarray
    has_pixels: np.ndarray  # (cells_y, cells_x): fine cells that hold output pixels


@functools.lru_cache(maxsize=16)
def _plan(h: int, w: int, out_h: int, out_w: int) -> _Plan:
    sy, sx = _subdivision(h, out_h), _subdivision(w, out_w)
    fh, fw = (h - 1) * sy + 1, (w - 1) * sx + 1
    wy, ny = _cells(fh, out_h)
    wx, nx = _cells(fw, out_w)
    return _Plan(
        fine_h=fh,
        fine_w=fw,
        coarse_row=np.minimum(np.arange(fh) // sy, max(h - 2, 0)),
        coarse_col=np.minimum(np.arange(fw) // sx, max(w - 2, 0)),
        coarse_far_row=_far(h),
        coarse_far_col=_far(w),
        wy=wy,
        wx=wx,
        ny=ny,
        first_row=np.concatenate(([0], np.cumsum(ny)[:-1])),
        nx=nx,
        first_col=np.concatenate(([0], np.cumsum(nx)[:-1])),
        far_row=_far(fh),
        far_col=_far(fw),
        has_pixels=(ny > 0)[:, None] & (nx > 0)[None, :],
    )


def _mixed(labels: np.ndarray, far_row: np.ndarray, far_col: np.ndarray) -> np.ndarray:
    """(cells_y, cells_x): cells whose four corners do not all have the same label."""
    a = labels[: len(far_row), : len(far_col)]
    right, down = labels[: len(far_row)][:, far_col], labels[far_row][:, : len(far_col)]
    return (a != right) | (a != down) | (a != labels[far_row][:, far_col])


# --------------------------------------------------------------------------- one image


def _fine_labels(coarse: np.ndarray, table: torch.Tensor, p: _Plan) -> np.ndarray:
    """Labels of the fine grid: a point in (or on the edge of) a cell whose corners agree
    takes their label; only the points of mixed cells are looked up in ``table``."""
    h, w = coarse.shape
    if (p.fine_h, p.fine_w) == (h, w):
        return coarse
    mixed = _mixed(coarse, p.coarse_far_row, p.coarse_far_col)
    labels = np.ascontiguousarray(coarse[p.coarse_row][:, p.coarse_col])  # each cell's top-left corner
    need = np.ascontiguousarray(mixed[p.coarse_row][:, p.coarse_col]).reshape(-1).nonzero()[0]
    if len(need):
        labels.reshape(-1)[need] = _argmax_rows(table.index_select(0, torch.from_numpy(need)))
    return labels


def _candidates(
    table: torch.Tensor, cell_row: np.ndarray, cell_col: np.ndarray, p: _Plan
) -> tuple[np.ndarray, list[np.ndarray]]:
    """For each fine cell: which classes can win anywhere inside it ((cells, C) bool), and
    the logits at its corners (top-left, top-right, bottom-left, bottom-right; (cells, C)).

    Anywhere in a cell each class's logit lies between its smallest and largest corner value
    (the surface is a convex combination of the corners), so the winner's logit is at least
    the largest of the classes' minima, and a class whose maximum is below that never wins.
    On real segmentations 2 classes are left in ~3/4 of the boundary cells, 3-4 in most others.
    """
    fw = p.fine_w
    top, bottom = cell_row * fw, p.far_row[cell_row] * fw
    left, right = cell_col, p.far_col[cell_col]
    corners = [
        table.index_select(0, torch.from_numpy(r + c)).numpy()
        for r, c in ((top, left), (top, right), (bottom, left), (bottom, right))
    ]
    low = np.minimum(np.minimum(corners[0], corners[1]), np.minimum(corners[2], corners[3]))
    high = np.maximum(np.maximum(corners[0], corners[1]), np.maximum(corners[2], corners[3]))
    return high >= low.max(1, keepdims=True), corners


def _fill(table: torch.Tensor, fine: np.ndarray, p: _Plan, out: np.ndarray) -> None:
    """Write one image's labels into ``out`` (H, W) from its fine-grid logits ``table``
    (fine_h * fine_w, C) and labels ``fine``."""
    # Every pixel gets its cell's corner label (rows of cells repeat whole rows: fast copies).
    out[:] = np.repeat(np.repeat(fine[: len(p.ny), : len(p.nx)], p.nx, axis=1), p.ny, axis=0)
    mixed = _mixed(fine, p.far_row, p.far_col) & p.has_pixels
    cell_row, cell_col = mixed.nonzero()
    if not len(cell_row):
        return
    can, corners = _candidates(table, cell_row, cell_col, p)
    count = can.sum(1)
    block = int(p.ny.max()) * int(p.nx.max())
    for group in (count == 2, count > 2):  # two classes: the sign of one difference suffices
        cells = group.nonzero()[0]
        # in chunks, so that a map with boundaries everywhere stays within ~1M values at once
        for chunk in np.array_split(cells, -(-len(cells) * block // 1_000_000)) if len(cells) else ():
            k = int(count[chunk].max())
            # each cell's candidate classes in ascending order, padded to k by repeating the
            # first (a tie with itself gives the same label)
            owner, classes = can[chunk].nonzero()
            slot = np.arange(k)
            slot = np.where(slot < count[chunk][:, None], slot, 0)
            classes = classes[np.searchsorted(owner, np.arange(len(chunk)))[:, None] + slot]  # (cells, k)
            values = np.stack([np.take_along_axis(c[chunk], classes, 1) for c in corners], axis=1)  # (cells, 4, k)
            _fill_few(out, p, cell_row[chunk], cell_col[chunk], classes.astype(np.uint8), values)


def _fill_few(
    out: np.ndarray, p: _Plan, cell_row: np.ndarray, cell_col: np.ndarray, classes: np.ndarray, values: np.ndarray
) -> None:
    """Cells where only a few classes (ascending, (cells, K)) can win, with their corner
    logits (cells, 4, K): every pixel's K bilinear values, the first best wins (the lowest
    class on ties); for K = 2 only the sign of the difference. Cells are handled as blocks
    of the largest cell size; pixels past a smaller cell's edge are dropped."""
    out_h, out_w = out.shape
    n_y, n_x = p.ny[cell_row], p.nx[cell_col]
    rows = p.first_row[cell_row][:, None] + np.arange(n_y.max())  # (cells, NY)
    cols = p.first_col[cell_col][:, None] + np.arange(n_x.max())  # (cells, NX)
    wy, wx = p.wy[np.minimum(rows, out_h - 1)][:, :, None], p.wx[np.minimum(cols, out_w - 1)]

    def surface(v: np.ndarray) -> np.ndarray:  # (cells, 4) corner values -> (cells, NY, NX)
        top = v[:, :1] + (v[:, 1:2] - v[:, :1]) * wx
        bottom = v[:, 2:3] + (v[:, 3:4] - v[:, 2:3]) * wx
        return top[:, None, :] + (bottom - top)[:, None, :] * wy

    if classes.shape[1] == 2:
        labels = np.where(surface(values[:, :, 0] - values[:, :, 1]) >= 0, classes[:, :1, None], classes[:, 1:, None])
    else:
        best = surface(values[:, :, 0])
        labels = np.broadcast_to(classes[:, :1, None], best.shape)
        for k in range(1, classes.shape[1]):
            value = surface(values[:, :, k])
            wins = value > best  # strictly: on a tie the earlier (lower) class stays
            best = np.where(wins, value, best)
            labels = np.where(wins, classes[:, k : k + 1, None], labels)
    inside = (rows < (p.first_row[cell_row] + n_y)[:, None])[:, :, None] & (
        cols < (p.first_col[cell_col] + n_x)[:, None]
    )[:, None, :]
    out.reshape(-1)[(rows[:, :, None] * out_w + cols[:, None, :])[inside]] = labels[inside]
