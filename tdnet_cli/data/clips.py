"""Training clips from a Cityscapes-layout folder, augmented identically across frames.

A sample is ``clip_len`` frames ending at an annotated frame t (from ``leftImg8bit_sequence``)
plus that frame's labels; each earlier frame lies 1..``max_gap`` frames (uniform, independent
draws) before the next, as the authors train: t, t - a, t - a - b, ... Sampling is stateless: sample
``index`` is fully determined by (seed, index) — which annotated frame (an epoch-wise
permutation) and every augmentation parameter — so a resumed or re-sharded run sees
exactly the same data, whatever the number of DataLoader workers.

Augmentation is one draw per clip, applied alike to every frame (the authors' recipe): the
frame resized to cover the crop, rotated within +-rotate degrees about its centre (image
fill black, label fill 255), scaled by one factor of ``scale`` (a frame then smaller than
the crop is resized up to it), cropped at a random place, flipped with p 0.5, and its
brightness, contrast and saturation each multiplied by a factor in [1 - j, 1 + j].
Resize, rotation, scale, crop and flip are composed into one affine map and applied with a
single ``cv2.warpAffine`` per frame directly at the crop size (labels: nearest neighbour).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from tdnet_cli.data.cityscapes import IGNORE_INDEX, label_id_to_train_id
from tdnet_cli.data.layout import FrameId, gt_path, list_annotated, sequence_path
from tdnet_cli.errors import DataError, few
from tdnet_cli.models.checkpoint import MEAN, STD

__all__ = ["AugmentConfig", "ClipDataset", "IterationSampler", "check_dataset", "clip_offsets"]


@dataclass(frozen=True)
class AugmentConfig:
    crop: tuple[int, int]  # (H, W): the model's input size (TDNet's LayerNorm fixes it)
    scale: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # of the size that covers the crop; one drawn
    flip: bool = True
    rotate: float = 5.0  # degrees, uniform in [-rotate, rotate]
    color_jitter: float = 0.5  # brightness, contrast and saturation factors uniform in [1 - j, 1 + j]


def check_dataset(root: str | Path, split: str, clip_len: int, max_gap: int = 1) -> list[FrameId]:
    """Every annotated frame with its labels and the frames any clip of it may take (up to
    ``(clip_len - 1) * max_gap`` before it); a DataError before any work."""
    fids = list_annotated(root, split)
    reach = (clip_len - 1) * max_gap
    missing = []
    for fid in fids:
        if fid.frame < reach:
            missing.append(f"{fid.stem} (only {fid.frame} frames before it)")
            continue
        paths = [sequence_path(root, split, fid.shifted(-d)) for d in range(reach + 1)]
        missing += [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} clip frames missing under {root}: {few(missing, 2)}",
            hint=f"training needs leftImg8bit_sequence/ with the {reach} frames before each annotated one"
            + (" (data.max_gap=1 needs fewer)" if max_gap > 1 else ""),
        )
    return fids


def clip_offsets(seed: int, index: int, clip_len: int, max_gap: int) -> list[int]:
    """The frame offsets of sample ``index``'s clip relative to its annotated frame, oldest
    first, ending with 0: each gap drawn uniformly from 1..max_gap. A stream of its own, so
    the augmentation draws do not depend on max_gap."""
    gaps = np.random.default_rng([seed, 13, index]).integers(1, max_gap + 1, size=clip_len - 1)
    return [-int(v) for v in np.cumsum(gaps[::-1])[::-1]] + [0]


def _read_bgr(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read {path}")
    return img


def _jitter_matrix(bright: float, contrast: float, sat: float, mean: float) -> np.ndarray:
    """The colour jitter as one (3, 4) affine map of BGR pixels to RGB.

    Saturation blends each pixel with its grey (channel mean), contrast scales about the
    image mean (which saturation leaves unchanged) and brightness scales the result; all
    three are linear, so they compose into one matrix and the frame is touched once.
    """
    s = sat * np.eye(3) + (1.0 - sat) / 3.0
    a = bright * contrast * s
    offset = bright * mean * (1.0 - contrast)
    return np.hstack([a[:, ::-1], np.full((3, 1), offset)]).astype(np.float32)  # [:, ::-1]: BGR in


class ClipDataset(Dataset):
    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        clip_len: int,
        augment: AugmentConfig,
        max_gap: int = 2,
        seed: int = 0,
        train: bool = True,
        mean: Sequence[float] = MEAN,
        std: Sequence[float] = STD,
    ) -> None:
        """``mean``/``std`` (RGB, of [0, 1] pixels): the normalisation of the model being trained,
        which its checkpoint records (LoadedModel.mean/std) and inference applies."""
        self.root = Path(root)
        self.split = split
        self.clip_len = clip_len
        self.max_gap = max_gap
        self.augment = augment
        self.seed = seed
        self.train = train
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3)
        self.std = np.asarray(std, dtype=np.float32).reshape(3)
        self.fids = check_dataset(root, split, clip_len, max_gap)

    def __len__(self) -> int:
        return len(self.fids)

    def _fid(self, index: int) -> FrameId:
        n = len(self.fids)
        epoch, pos = divmod(index, n)
        return self.fids[int(np.random.default_rng([self.seed, 7, epoch]).permutation(n)[pos])]

    def _affine(self, rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, bool]:
        """The clip's src -> crop affine map: resize to cover the crop, rotate about the frame's
        centre, scale (never below the crop), crop, flip. Evaluation: resize and centre crop."""
        a = self.augment
        ch, cw = a.crop
        cover = max(ch / h, cw / w)  # the smallest size that covers the crop, keeping the aspect
        s = float(rng.choice(a.scale)) if self.train else 1.0
        f = cover * max(s, 1.0)  # scaled smaller than the crop: resized up to it
        sh, sw = h * f, w * f
        m = np.array([[f, 0, 0], [0, f, 0], [0, 0, 1]], dtype=np.float64)
        if self.train and a.rotate > 0:
            angle = rng.uniform(-a.rotate, a.rotate)
            m = np.vstack([cv2.getRotationMatrix2D(((sw - 1) / 2, (sh - 1) / 2), angle, 1.0), [0, 0, 1]]) @ m
        oy = rng.uniform(0.0, sh - ch) if self.train else (sh - ch) / 2
        ox = rng.uniform(0.0, sw - cw) if self.train else (sw - cw) / 2
        m = np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]], dtype=np.float64) @ m
        flip = bool(self.train and a.flip and rng.random() < 0.5)
        if flip:
            m = np.array([[-1, 0, cw - 1], [0, 1, 0], [0, 0, 1]], dtype=np.float64) @ m
        return m[:2], flip

    def _jitter(self, rng: np.random.Generator) -> tuple[float, float, float]:
        j = self.augment.color_jitter if self.train else 0.0
        return tuple(1.0 + rng.uniform(-j, j) for _ in range(3))  # brightness, contrast, saturation

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, 11, index])
        fid = self._fid(index)
        offsets = clip_offsets(self.seed, index, self.clip_len, self.max_gap)
        frames = [_read_bgr(sequence_path(self.root, self.split, fid.shifted(d))) for d in offsets]
        label_ids = cv2.imread(str(gt_path(self.root, self.split, fid)), cv2.IMREAD_UNCHANGED)
        if label_ids is None:
            raise DataError(f"cannot read labels of {fid.stem}")
        h, w = label_ids.shape
        m, _ = self._affine(rng, h, w)
        ch, cw = self.augment.crop
        bright, contrast, sat = self._jitter(rng)
        out = np.empty((self.clip_len, ch, cw, 3), dtype=np.float32)
        scale, shift = 1.0 / (255.0 * self.std), self.mean / self.std
        for i, frame in enumerate(frames):
            if frame.shape[:2] != (h, w):
                raise DataError(f"{fid.stem}: frames and labels differ in size")
            img = cv2.warpAffine(frame, m, (cw, ch), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
            mean = float(np.mean(cv2.mean(img)[:3]))
            rgb = cv2.transform(img.astype(np.float32), _jitter_matrix(bright, contrast, sat, mean))
            np.clip(rgb, 0.0, 255.0, out=rgb)
            np.multiply(rgb, scale, out=rgb)
            np.subtract(rgb, shift, out=out[i])
        train_ids = label_id_to_train_id(label_ids)
        label = cv2.warpAffine(train_ids, m, (cw, ch), flags=cv2.INTER_NEAREST, borderValue=IGNORE_INDEX)
        return {
            "frames": torch.from_numpy(out).permute(0, 3, 1, 2),  # a view: collation copies it anyway
            "label": torch.from_numpy(label.astype(np.int64)),
            "index": index,
            "offsets": torch.tensor(offsets),
        }


class IterationSampler(Sampler[int]):
    """Sample indices for iterations [start, stop) of one rank: (it * world + rank) * batch + slot."""

    def __init__(self, start: int, stop: int, batch: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch, rank, world

    def __iter__(self):
        for it in range(self.start, self.stop):
            base = (it * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch
