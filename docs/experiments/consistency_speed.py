"""Cost per frame pair of temporal consistency (tdnet_cli.consistency) against the model's time.

Usage: python docs/experiments/consistency_speed.py [--frames N] [--weights W] [--threads T] [--torch-threads T]

Frames: a `tdnet synth` street (seed 7) rendered at 512x1024, and the same frames upscaled
to 1024x2048. Labels: the model's own predictions at the frame's size (``Predictor.segment``).
For every frame, the model is timed (``logits``: what `tdnet bench` calls model time; and
``segment``: model + upsample/argmax to the frame size), then each configuration's
``ConsistencyMeter.update`` (grey + resize, DIS both ways, forward-backward check, warp of
the labels at their own size, confusion) on the same frame and labels. Interleaving keeps
the ratio honest on a machine shared with other work; CPU time (all threads of the process,
``time.process_time``) is given beside wall time, as it depends less on other load. Medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import cv2
import numpy as np
import torch

from tdnet_cli.consistency import PRESETS, ConsistencyMeter, work_shape
from tdnet_cli.data.synth import render_sequence
from tdnet_cli.inference import Predictor

WORK_SIZES = (512, 768, 1024)  # long side: 512x256, 768x384, 1024x512 for 2:1 frames


def frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Synthetic street frames (RGB uint8) at ``size`` (H, W)."""
    out = [f.rgb for f in render_sequence(7, size=(512, 1024), frames=n)]
    if size != (512, 1024):
        out = [cv2.resize(f, size[::-1], interpolation=cv2.INTER_LINEAR) for f in out]
    return out


def ms(xs: list[float]) -> float:
    return 1e3 * statistics.median(xs)


def run(pred: Predictor, clip: list[np.ndarray]) -> tuple[float, float, dict]:
    """Median model ms (logits; wall, CPU), model+labels ms (segment), per config (wall, CPU ms, TC)."""
    configs = [(p, w) for p in PRESETS for w in WORK_SIZES]
    meters = {c: ConsistencyMeter(len(pred.classes), preset=c[0], work_size=c[1]) for c in configs}
    times: dict = {c: [] for c in configs}
    t_logits, t_segment = [], []
    s1, s2 = pred.new_stream(), pred.new_stream()
    for i, rgb in enumerate(clip):
        t0, c0 = time.perf_counter(), time.process_time()
        pred.logits(rgb[None], s1)
        t1, c1 = time.perf_counter(), time.process_time()
        labels = pred.segment(rgb, s2)
        t2 = time.perf_counter()
        if i >= 2:  # the first frames fill TDNet's memory and warm caches up
            t_logits.append((t1 - t0, c1 - c0))
            t_segment.append(t2 - t1)
        for c, meter in meters.items():
            t0, c0 = time.perf_counter(), time.process_time()
            meter.update(rgb, labels)
            if i >= 2:
                times[c].append((time.perf_counter() - t0, time.process_time() - c0))
    table = {c: (ms([t for t, _ in times[c]]), ms([t for _, t in times[c]]), meters[c].result().tc) for c in configs}
    return (ms([t for t, _ in t_logits]), ms([t for _, t in t_logits])), ms(t_segment), table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--weights", default="weights/td4-mini-synth.pt")
    ap.add_argument("--threads", type=int, default=-1, help="cv2.setNumThreads (-1: OpenCV's default)")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads >= 0:
        cv2.setNumThreads(args.threads)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    pred = Predictor.create(weights=args.weights, device="cpu")
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, cv2 {cv2.__version__} "
        f"({cv2.getNumThreads()} threads), torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{pred.name} at {pred.input_size[1]}x{pred.input_size[0]}, {args.frames} frames"
    )
    print(
        "| input | model ms (CPU ms) | model + labels ms | preset | working size | TC ms/pair (CPU ms) "
        "| TC / model (CPU) | TC of predictions |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in ((512, 1024), (1024, 2048)):
        t_model, t_seg, table = run(pred, frames(args.frames, size))
        for (preset, work), (t_tc, c_tc, tc) in table.items():
            h, w = work_shape(*size, work)
            print(
                f"| {size[1]}x{size[0]} | {t_model[0]:.1f} ({t_model[1]:.1f}) | {t_seg:.1f} | {preset} | {w}x{h} "
                f"| {t_tc:.1f} ({c_tc:.1f}) | {t_tc / t_model[0]:.2f} ({c_tc / t_model[1]:.2f}) | {100 * tc:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
