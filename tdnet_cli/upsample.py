"""Labels of bilinearly upsampled logits, without upsampling every class at every pixel.

``upsample_argmax(logits, size)`` is ``F.interpolate(logits, size, mode="bilinear",
align_corners=True).argmax(1)`` as uint8, computed exactly (up to float rounding at
near-ties) with a small fraction of the work on the CPU:

1. Each output pixel is a convex combination of the logits at the four corners of its
   low-resolution cell. Where all four corners have the same argmax k, k is also the argmax
   of any convex combination (ties included: the lowest index wins in both). So a cell's
   label is known wherever its corners agree, and only cells on class boundaries need work.
2. Cells that span many output pixels are first split into 2-4 x 2-4 sub-cells by sampling
   the same bilinear surface at their corners (only inside boundary cells: elsewhere rule 1
   gives the label). Inside a sub-cell the surface is still the bilinear interpolation of
   its corners, so the rule holds again and narrows the band of pixels left.
3. The pixels of a boundary sub-cell are handled as runs down each output column: along a
   run the logits are linear in the row weight, so a class that wins at both ends wins all
   the way, and where two classes swap the crossing row is solved for. Only runs where a
   third class may win in between are interpolated pixel by pixel.

Argmax over classes is done class-major (a max, a compare, a max over uint8), about four
times numpy's own argmax for 19 classes. A GPU interpolates every pixel in one pass instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["upsample_argmax", "argmax_classes"]


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
        rows = table[i * points:(i + 1) * points]
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
    """Sub-cells per cell along one axis: 4 or 2 where cells span many output pixels."""
    span = (out - 1) / max(n - 1, 1)
    return 4 if n > 1 and span >= 16 else 2 if n > 1 and span >= 8 else 1


def _cells(n: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``out`` output positions (align_corners=True) over ``n`` inputs: each one's cell
    (top/left corner, at most n-2), its weight towards the far corner, and how many output
    positions each cell holds."""
    pos = np.linspace(0, n - 1, out) if out > 1 else np.zeros(1)
    cell = np.minimum(np.floor(pos).astype(np.int64), max(n - 2, 0))
    counts = np.bincount(cell, minlength=max(n - 1, 1))
    return cell, (pos - cell).astype(np.float32), counts


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
    row_cell: np.ndarray  # each output row's cell on the fine grid, and its weight in it
    wy: np.ndarray
    col_cell: np.ndarray
    wx: np.ndarray
    ny: np.ndarray  # output rows per fine cell row, and the first of them
    first_row: np.ndarray
    nx: np.ndarray
    far_row: np.ndarray  # far corner of each fine cell row / column
    far_col: np.ndarray


@functools.lru_cache(maxsize=16)
def _plan(h: int, w: int, out_h: int, out_w: int) -> _Plan:
    sy, sx = _subdivision(h, out_h), _subdivision(w, out_w)
    fh, fw = (h - 1) * sy + 1, (w - 1) * sx + 1
    row_cell, wy, ny = _cells(fh, out_h)
    col_cell, wx, nx = _cells(fw, out_w)
    return _Plan(
        fh, fw,
        np.minimum(np.arange(fh) // sy, max(h - 2, 0)), np.minimum(np.arange(fw) // sx, max(w - 2, 0)),
        row_cell, wy, col_cell, wx, ny, np.concatenate(([0], np.cumsum(ny)[:-1])), nx, _far(fh), _far(fw),
    )  # fmt: skip


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
    mixed = _mixed(coarse, _far(h), _far(w))
    labels = np.ascontiguousarray(coarse[p.coarse_row][:, p.coarse_col])  # each cell's top-left corner
    need = np.ascontiguousarray(mixed[p.coarse_row][:, p.coarse_col]).reshape(-1).nonzero()[0]
    if len(need):
        labels.reshape(-1)[need] = _argmax_rows(table.index_select(0, torch.from_numpy(need)))
    return labels


def _fill(table: torch.Tensor, fine: np.ndarray, p: _Plan, out: np.ndarray) -> None:
    """Write one image's labels into ``out`` (H, W) from its fine-grid logits ``table``
    (fine_h * fine_w, C) and labels ``fine``."""
    fw, out_w = p.fine_w, out.shape[1]
    mixed = _mixed(fine, p.far_row, p.far_col)
    # Every pixel gets its cell's corner label (rows of cells repeat whole rows: fast copies).
    out[:] = np.repeat(np.repeat(fine[: len(p.ny), : len(p.nx)], p.nx, axis=1), p.ny, axis=0)
    # Runs: (fine cell row, output column) of mixed cells that hold output rows.
    cell_row, col = (np.repeat(mixed, p.nx, axis=1) & (p.ny > 0)[:, None]).nonzero()
    if not len(cell_row):
        return
    near, far = p.col_cell[col], p.far_col[p.col_cell[col]]
    wx = torch.from_numpy(p.wx[col]).unsqueeze(1)

    def along_row(base: np.ndarray) -> torch.Tensor:  # (runs, C): a fine row's logits at each run's column
        left = table.index_select(0, torch.from_numpy(base + near))
        return torch.lerp(left, table.index_select(0, torch.from_numpy(base + far)), wx)

    top = along_row(cell_row * fw)
    slope = along_row(p.far_row[cell_row] * fw).sub_(top)  # logits along a run: top + t * slope
    counts, first = p.ny[cell_row], p.first_row[cell_row]

    def at(t: np.ndarray, rows: torch.Tensor | None = None) -> np.ndarray:
        tops, slopes = (top, slope) if rows is None else (top.index_select(0, rows), slope.index_select(0, rows))
        return _argmax_rows(torch.addcmul(tops, slopes, torch.from_numpy(t).unsqueeze(1)))

    k0, k1 = at(p.wy[first]), at(p.wy[first + counts - 1])  # the class at each run's ends
    cross, sure = _settle(top, slope, k0, k1)
    # every pixel of every run: its run and its output row
    run = np.repeat(np.arange(len(cell_row)), counts)
    row = np.arange(len(run)) - np.repeat(np.cumsum(counts) - counts - first, counts)
    t = p.wy[row]
    labels = np.where(t < cross[run], k0[run], k1[run])
    tie = t == cross[run]  # exactly on the crossing: the lower class index, as argmax picks
    if tie.any():
        labels[tie] = np.minimum(k0[run][tie], k1[run][tie])
    doubt = ~sure[run]
    if doubt.any():
        labels[doubt] = at(t[doubt], torch.from_numpy(run[doubt]))
    out.reshape(-1)[row * out_w + col[run]] = labels


def _settle(top: torch.Tensor, slope: torch.Tensor, k0: np.ndarray, k1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which class each run (logits ``top + t * slope`` down one cell) takes, without
    interpolating its pixels: ``(cross, sure)``.

    A class that wins at both ends (k0 at the first pixel, k1 at the last) wins all the
    way (ties too): sure, no crossing (inf). Where the ends differ and nothing beats both
    classes where their lines cross, at t*, the run is k0 before t* and k1 after it (sure,
    cross = t*). Runs still in doubt are interpolated pixel by pixel by the caller.
    """
    cross = np.full(len(k0), np.inf, np.float32)
    sure = k0 == k1
    split = (~sure).nonzero()[0]
    if len(split):
        rows = torch.from_numpy(split)
        tops, slopes = top.index_select(0, rows), slope.index_select(0, rows)
        c0 = torch.from_numpy(k0[split].astype(np.int64)).unsqueeze(1)
        c1 = torch.from_numpy(k1[split].astype(np.int64)).unsqueeze(1)
        a0, a1 = tops.gather(1, c0)[:, 0], tops.gather(1, c1)[:, 0]
        s0, s1 = slopes.gather(1, c0)[:, 0], slopes.gather(1, c1)[:, 0]
        t_star = (a0 - a1) / (s1 - s0)
        level = torch.maximum(a0 + s0 * t_star, a1 + s1 * t_star)
        best = torch.addcmul(tops, slopes, t_star.unsqueeze(1)).max(1).values
        clear = (torch.isfinite(t_star) & (best <= level + 1e-6 * level.abs().clamp(min=1.0))).numpy()
        cross[split[clear]] = t_star.numpy()[clear]
        sure[split[clear]] = True
    return cross, sure
