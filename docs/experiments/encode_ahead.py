"""`segment` end to end on the CPU with and without encoding frames ahead, in one process.

usage: python docs/experiments/encode_ahead.py OUT_DIR [REPEATS]
Uses (or makes) the 60-frame street clips of docs/experiments/common.py. Times the bundled model
alone, one step at a time (torch's default threads) and encoded ahead (2 frames at once,
`bench_encode_ahead`); then per clip and x264 preset `bench_end_to_end` with
``Predictor.encode_ahead`` on and off, alternating (ABAB...) so machine noise hits both
alike. Writes OUT_DIR/encode_ahead.json and prints a table.
"""

import json
import pathlib
import sys

import torch
from common import street_clips  # docs/experiments/, beside this script

from tdnet_cli.inference import Predictor
from tdnet_cli.pipeline.bench import (
    bench_encode_ahead,
    bench_end_to_end,
    bench_predictor,
    environment,
)
from tdnet_cli.video import Encoding

out = pathlib.Path(sys.argv[1])
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
out.mkdir(parents=True, exist_ok=True)
clips = street_clips(out)

pred = Predictor.create(device="cpu")


def model_only() -> dict:
    return {
        "step_fps": bench_predictor(pred, frames=30, warmup=4).fps_per_stream,
        "encode_ahead_fps": bench_encode_ahead(pred, frames=30, warmup=4)["fps"],
    }


before = model_only()
print(
    f"model only: one step at a time {before['step_fps']:.1f} fps, encoded ahead {before['encode_ahead_fps']:.1f} fps",
    flush=True,
)
rows = []
for size, path in clips.items():
    for preset in ("veryfast", "ultrafast"):
        for rep in range(repeats):
            for ahead in (True, False):
                pred.encode_ahead = ahead
                e = bench_end_to_end(pred, path, encoding=Encoding(preset, 20))
                rows.append(
                    {
                        "clip": size,
                        "x264_preset": preset,
                        "repeat": rep,
                        "encode_ahead": ahead,
                        "fps": e["fps"],
                        "stage_ms_per_frame": e["stage_ms_per_frame"],
                        "threads": e["threads"],
                    }
                )
                ms = e["stage_ms_per_frame"]
                print(
                    f"{size} {preset:9s} ahead={ahead!s:5s} {e['fps']:6.2f} fps  threads {e['threads']}  "
                    + " ".join(f"{k} {v:.1f}" for k, v in ms.items()),
                    flush=True,
                )
pred.encode_ahead = True
after = model_only()
report = {"env": environment(torch.device("cpu")), "model_only": [before, after], "runs": rows}
(out / "encode_ahead.json").write_text(json.dumps(report, indent=1))
best = max(before["step_fps"], before["encode_ahead_fps"], after["step_fps"], after["encode_ahead_fps"])
print(
    f"model only after: one step at a time {after['step_fps']:.1f} fps, encoded ahead {after['encode_ahead_fps']:.1f} fps"
)
for size in clips:
    for preset in ("veryfast", "ultrafast"):
        med = {}
        for ahead in (True, False):
            fps = sorted(
                r["fps"]
                for r in rows
                if r["clip"] == size and r["x264_preset"] == preset and r["encode_ahead"] == ahead
            )
            med[ahead] = fps[len(fps) // 2]
        print(
            f"{size} {preset}: encoded ahead {med[True]:.2f} fps vs one step at a time {med[False]:.2f} fps "
            f"({med[True] / med[False]:.2f}x); outside the model vs best model-only {best:.1f} fps: "
            f"{1 - med[True] / best:.0%}"
        )
