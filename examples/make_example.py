"""Make examples/street.mp4: a few seconds of a generated street scene, H.264.

    python examples/make_example.py [--seed 4] [--seconds 3.5] [--size 512x1024] [--out examples/street.mp4]

The frames come from ``tdnet_cli.data.synth.render_sequence`` (the generator behind
``tdnet synth``), at the Cityscapes frame rate of 17 fps, encoded with the ffmpeg that
imageio-ffmpeg bundles (libx264, yuv420p, so every player opens it).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import imageio_ffmpeg

from tdnet_cli.data.synth import FPS, render_sequence


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.5)
    ap.add_argument("--size", default="512x1024", help="HxW (both multiples of 16 for H.264)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("street.mp4"))
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    n = round(args.seconds * FPS)

    tmp = args.out.with_name(f".{args.out.stem}.partial{args.out.suffix}")
    writer = imageio_ffmpeg.write_frames(
        str(tmp),
        (w, h),
        fps=FPS,
        codec="libx264",
        pix_fmt_out="yuv420p",
        quality=None,
        output_params=["-preset", "veryfast", "-crf", "26", "-movflags", "+faststart"],
    )
    writer.send(None)  # start ffmpeg
    t0 = time.perf_counter()
    for frame in render_sequence(args.seed, (h, w), n):
        writer.send(frame.rgb)  # already RGB, contiguous uint8
    writer.close()
    os.replace(tmp, args.out)
    print(
        f"{args.out}: {n} frames {h}x{w} at {FPS:g} fps, {args.out.stat().st_size / 1e6:.2f} MB, "
        f"rendered and encoded in {time.perf_counter() - t0:.1f} s"
    )


if __name__ == "__main__":
    main()
