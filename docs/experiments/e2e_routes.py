"""`segment` end to end on the CPU: YUV 4:2:0 route against the RGB route, in one process.

usage: python docs/experiments/e2e_routes.py OUT_DIR [REPEATS]
Makes 60-frame H.264 clips of the bundled street scene (1024x512 and 2048x1024), then per
clip and x264 preset times the bundled model alone and `bench_end_to_end` with
``decode_yuv`` True and False, alternating (ABAB...) so machine noise hits both alike.
Writes OUT_DIR/e2e_routes.json and prints a table.
"""

import json
import pathlib
import sys

import torch
from common import street_clips  # docs/experiments/, beside this script

from tdnet_cli.inference import Predictor
from tdnet_cli.pipeline.bench import bench_end_to_end, bench_predictor, environment
from tdnet_cli.video import Encoding

out = pathlib.Path(sys.argv[1])
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
out.mkdir(parents=True, exist_ok=True)
clips = street_clips(out)

pred = Predictor.create(device="cpu")
model_only = bench_predictor(pred, frames=20, warmup=4).fps_per_stream
rows = []
for size, path in clips.items():
    for preset in ("veryfast", "ultrafast"):
        for rep in range(repeats):
            for yuv in (True, False):
                e = bench_end_to_end(pred, path, encoding=Encoding(preset, 20), decode_yuv=yuv)
                rows.append(
                    {
                        "clip": size,
                        "x264_preset": preset,
                        "repeat": rep,
                        "route": e["decode"],
                        "fps": e["fps"],
                        "model_stage_fps": e["model_stage_fps"],
                        "stage_ms_per_frame": e["stage_ms_per_frame"],
                        "threads": e["threads"],
                    }
                )
                ms = e["stage_ms_per_frame"]
                print(
                    f"{size} {preset:9s} {e['decode']:8s} {e['fps']:6.2f} fps  "
                    + " ".join(f"{k} {v:.1f}" for k, v in ms.items()),
                    flush=True,
                )
model_only_after = bench_predictor(pred, frames=20, warmup=4).fps_per_stream
report = {"env": environment(torch.device("cpu")), "model_only_fps": [model_only, model_only_after], "runs": rows}
(out / "e2e_routes.json").write_text(json.dumps(report, indent=1))
print(f"model only: {model_only:.1f} fps before, {model_only_after:.1f} fps after")
for size in clips:
    for preset in ("veryfast", "ultrafast"):
        med = {}
        for route in ("yuv420p", "rgb24"):
            fps = sorted(
                r["fps"] for r in rows if r["clip"] == size and r["x264_preset"] == preset and r["route"] == route
            )
            med[route] = fps[len(fps) // 2]
        print(
            f"{size} {preset}: yuv {med['yuv420p']:.2f} fps vs rgb {med['rgb24']:.2f} fps "
            f"({med['yuv420p'] / med['rgb24']:.2f}x); model only {model_only:.1f} fps"
        )
