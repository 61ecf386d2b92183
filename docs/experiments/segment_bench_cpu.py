"""CPU: `segment` end-to-end fps vs predictor-only fps on the same decoded frames, interleaved.

usage: python docs/experiments/segment_bench_cpu.py WxH FRAMES REPS [model]
"""

import json
import statistics as st
import subprocess
import sys
import time

import torch

from tdnet_cli.inference import Predictor
from tdnet_cli.pipeline import SegmentOptions, segment
from tdnet_cli.video import VideoReader, ffmpeg_exe

size, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = sys.argv[4] if len(sys.argv) > 4 else None
clip = f"/tmp/seg4_bench_{size}.mp4"
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
        str(n),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        clip,
    ],
    check=True,
)
torch.manual_seed(0)
pred = Predictor.create(model=model, device="cpu")
frames = [f.image for f in VideoReader(clip)]
default = torch.get_num_threads()


def model_only(threads):
    torch.set_num_threads(threads)
    s = pred.new_stream()
    for f in frames[:6]:
        pred.segment(f, s)
    t = time.perf_counter()
    for f in frames[6:]:
        pred.segment(f, s)
    torch.set_num_threads(default)
    return (len(frames) - 6) / (time.perf_counter() - t)


def e2e(threads):
    options = SegmentOptions(save=("overlay",), out_dir="/tmp/seg4_bench_out", overwrite=True, threads=threads)
    r = segment([clip], predictor=pred, options=options).results[0]
    assert r.status == "ok", r.error
    return r.fps


rows = {k: [] for k in ("model_2t", "model_1t", "e2e_auto", "e2e_2t", "e2e_1t")}
for _ in range(reps):
    rows["model_2t"].append(model_only(default))
    rows["model_1t"].append(model_only(1))
    rows["e2e_auto"].append(e2e(None))
    rows["e2e_2t"].append(e2e(default))
    rows["e2e_1t"].append(e2e(1))
    print(json.dumps({k: [round(x, 2) for x in v] for k, v in rows.items()}), flush=True)
print(
    json.dumps(
        {
            "clip": size,
            "frames": n,
            "model": pred.name,
            "input": pred.input_size,
            "median_fps": {k: round(st.median(v), 2) for k, v in rows.items()},
        }
    )
)
