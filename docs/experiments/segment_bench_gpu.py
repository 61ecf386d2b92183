"""segment end-to-end fps vs predictor-only fps on one device (run from the repo root).

usage: python docs/experiments/segment_bench_gpu.py DEVICE FRAMES WxH[,WxH...] MODEL:PRECISION[,...] OUT_DIR
"""

import json
import subprocess
import sys
import time

import numpy as np
import torch

from tdnet_cli.inference import Predictor
from tdnet_cli.pipeline import SegmentOptions, segment
from tdnet_cli.video import VideoReader, ffmpeg_exe

device = sys.argv[1]
frames_n = int(sys.argv[2])
sizes = sys.argv[3].split(",")  # ffmpeg WxH
configs = [c.split(":") for c in sys.argv[4].split(",")]  # model:precision
out = sys.argv[5]


class NullPredictor:
    """IO ceiling: the pipeline with a model that costs nothing (a StreamPredictor)."""

    device = torch.device("cpu")
    num_paths = 1
    encodes_ahead = False
    notes = []

    def __init__(self, p):
        self.classes, self.palette, self.input_size = p.classes, p.palette, p.input_size

    def new_stream(self, batch=1):
        return None

    def reset(self, s):
        pass

    def prepare(self, f):
        return torch.from_numpy(f)

    def logits(self, x, s):
        return x[..., 0] >> 4

    def encode(self, x, path):
        raise NotImplementedError

    def finish(self, e, s):
        raise NotImplementedError

    def to_labels(self, x, size):
        import cv2

        return np.stack([cv2.resize(a, (size[1], size[0]), interpolation=cv2.INTER_NEAREST) for a in x.numpy()])


rows = []
for size in sizes:
    clip = f"{out}/clip_{size}.mp4"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=25",
            "-frames:v",
            str(frames_n),
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            clip,
        ],
        check=True,
    )
    t = time.perf_counter()
    n = sum(1 for _ in VideoReader(clip))
    dec = n / (time.perf_counter() - t)
    frames = [f.image for f, _ in zip(VideoReader(clip), range(40))]
    for model, prec in configs:
        torch.manual_seed(0)
        pred = Predictor.create(model=model, device=device, precision=prec)
        s = pred.new_stream()
        for f in frames[:8]:
            pred.segment(f, s)
        t = time.perf_counter()
        k = 0
        while time.perf_counter() - t < 4 and k < 400:
            pred.segment(frames[k % len(frames)], s)
            k += 1
        model_fps = k / (time.perf_counter() - t)
        res = {}
        for save in (["overlay"], ["overlay", "labels"]):
            r = segment(
                [clip], predictor=pred, options=SegmentOptions(save=tuple(save), out_dir=f"{out}/o", overwrite=True)
            ).results[0]
            assert r.status == "ok", r.error
            res["+".join(save)] = (round(r.fps, 1), round(r.model_fps, 1))
        row = dict(
            size=size,
            model=model,
            precision=prec,
            device=str(pred.device),
            input=pred.input_size,
            decode_only_fps=round(dec, 1),
            model_only_fps=round(model_fps, 1),
            e2e=res,
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    null = NullPredictor(pred)
    for save in (["overlay"], ["overlay", "labels"]):
        r = segment(
            [clip], predictor=null, options=SegmentOptions(save=tuple(save), out_dir=f"{out}/o", overwrite=True)
        ).results[0]
        print(json.dumps(dict(size=size, save=save, io_only_fps=round(r.fps, 1))), flush=True)
