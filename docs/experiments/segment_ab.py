"""`tdnet segment` end to end with two checkouts of this repository, alternating (ABAB...).

usage: python docs/experiments/segment_ab.py OUT_DIR CHECKOUT_A CHECKOUT_B [REPEATS] [PRESETS]

Each run is a fresh process importing `tdnet_cli` from one checkout, segmenting the street
clip (docs/experiments/common.py, 240 frames) with the bundled model, overlay output.
Per run: end-to-end fps, the model stage's fps, and CPU seconds per frame of the process
and of its ffmpeg children (getrusage), so a change that saves CPU shows even where the
wall clock is noisy. Alternating puts machine noise on both alike. Writes
OUT_DIR/segment_ab.json and prints medians. PRESETS: comma-separated x264 presets
(default "ultrafast,veryfast").
"""

import json
import pathlib
import statistics
import subprocess
import sys

from common import street_clips  # docs/experiments/, beside this script

FRAMES = 240
RUN = r"""
import json, resource, sys, time
import tdnet_cli
from tdnet_cli.inference import Predictor
from tdnet_cli.pipeline.segment import segment

try:  # checkouts since segment() takes its options as one object
    from tdnet_cli.pipeline import SegmentOptions
    from tdnet_cli.video import Encoding
except ImportError:
    SegmentOptions = None
clip, out, preset = sys.argv[1:4]
pred = Predictor.create(device="cpu")
t0 = time.perf_counter()
if SegmentOptions is None:
    r = segment([clip], predictor=pred, save=["overlay"], out_dir=out, overwrite=True, x264_preset=preset).results[0]
else:
    options = SegmentOptions(save=("overlay",), out_dir=out, overwrite=True, encoding=Encoding(preset))
    r = segment([clip], predictor=pred, options=options).results[0]
wall = time.perf_counter() - t0
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
assert r.status == "ok", r.error
print(json.dumps({"fps": r.frames / wall, "model_fps": r.model_fps, "frames": r.frames, "threads": r.threads,
                  "module": tdnet_cli.__file__,
                  "cpu_ms_python": 1000 * (me.ru_utime + me.ru_stime) / r.frames,
                  "cpu_ms_ffmpeg": 1000 * (kids.ru_utime + kids.ru_stime) / r.frames}))
"""


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    checkouts = {"A": sys.argv[2], "B": sys.argv[3]}
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    presets = sys.argv[5].split(",") if len(sys.argv) > 5 else ["ultrafast", "veryfast"]
    out.mkdir(parents=True, exist_ok=True)
    clips = street_clips(out, FRAMES)
    runs = []
    for size, clip in clips.items():
        for preset in presets:
            for rep in range(repeats):
                for name, repo in checkouts.items():
                    proc = subprocess.run(
                        [sys.executable, "-c", RUN, clip, str(out / f"seg_{name}"), preset],
                        cwd=repo,
                        env={"PYTHONPATH": repo, "PATH": "/usr/bin:/bin"},
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    res = json.loads(proc.stdout.strip().splitlines()[-1])
                    assert res["module"].startswith(str(pathlib.Path(repo).resolve())), res["module"]
                    runs.append({"size": size, "preset": preset, "rep": rep, "checkout": name, "repo": repo, **res})
                    print(
                        f"{size} {preset} {name}: {res['fps']:.1f} fps (model {res['model_fps']:.1f}), CPU/frame "
                        f"python {res['cpu_ms_python']:.1f} ms + ffmpeg {res['cpu_ms_ffmpeg']:.1f} ms",
                        flush=True,
                    )
    (out / "segment_ab.json").write_text(json.dumps({"checkouts": checkouts, "runs": runs}, indent=1))
    print("\nmedians: size preset | A fps, B fps (B/A) | CPU ms/frame A, B")
    for size in clips:
        for preset in presets:
            med = {}
            for name in checkouts:
                sel = [r for r in runs if r["size"] == size and r["preset"] == preset and r["checkout"] == name]
                med[name] = (
                    statistics.median(r["fps"] for r in sel),
                    statistics.median(r["cpu_ms_python"] + r["cpu_ms_ffmpeg"] for r in sel),
                )
            print(
                f"{size} {preset} | {med['A'][0]:.1f}, {med['B'][0]:.1f} ({med['B'][0] / med['A'][0]:.2f}x) | "
                f"{med['A'][1]:.1f}, {med['B'][1]:.1f}"
            )


if __name__ == "__main__":
    main()
