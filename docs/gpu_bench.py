"""GPU benchmark and conformance run, one process (what docs/benchmarks.md reports for GPUs).

usage: python docs/gpu_bench.py OUT_DIR   (on a machine with CUDA; writes OUT_DIR/gpu_bench.json)
       python docs/gpu_bench.py OUT_DIR --smoke   (the same steps on the CPU, tiny: checks the
       script itself before a GPU's short lease is spent on it; its figures mean nothing)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from tdnet_cli.conformance import SMALL_SIZE, check_frame, expected, recipe_model
from tdnet_cli.inference import Predictor
from tdnet_cli.models import LoadedModel
from tdnet_cli.pipeline.bench import run_bench

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "conformance"  # data, not code
out_dir = Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)
SMOKE = "--smoke" in sys.argv[2:]
DEVICE = "cpu" if SMOKE else "cuda"
PRECISIONS = ("fp32", "bf16") if SMOKE else ("fp32", "fp16", "bf16")
results: dict = {
    "device": "cpu (smoke)" if SMOKE else torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "runs": [],
    "conformance": [],
}


def save() -> None:
    (out_dir / "gpu_bench.json").write_text(json.dumps(results, indent=2))


# 1. Conformance of the fast path on the GPU, per precision.
for preset in ("td4-psp18", "td2-psp50"):
    ref = expected(FIXTURES, preset)
    model = recipe_model(FIXTURES, preset)
    for precision in PRECISIONS:
        pred = Predictor(LoadedModel(model=model, preset=preset), device=DEVICE, precision=precision)
        stream = pred.new_stream()
        figs = []
        for i in range(len(ref["inputs"])):
            up = F.interpolate(
                pred.logits(ref["inputs"][i], stream), size=SMALL_SIZE, mode="bilinear", align_corners=True
            )[0].cpu()
            figs.append(check_frame(up, ref, i))
        row = {
            "preset": preset,
            "precision": precision,
            "min_agree": min(f["agree"] for f in figs),
            "max_logit_err": max(f["logit_err"] for f in figs),
        }
        results["conformance"].append(row)
        print("conformance", row, flush=True)
save()

# 2. Model-only speed at 769x1537.
RUNS = [
    dict(model="td4-psp18", precision="fp16", frames=300, warmup=30, baseline="reference"),
    dict(model="td4-psp18", precision="bf16", frames=300, warmup=30),
    dict(model="td4-psp18", precision="fp32", frames=200, warmup=20),
    dict(model="td4-psp18", precision="fp16", frames=100, warmup=10, streams=4),
    dict(model="td4-psp18", precision="fp16", frames=300, warmup=30, compile=True),
    dict(model="td4-psp18", precision="fp16", frames=300, warmup=30, compile="reduce-overhead"),
    dict(model="td2-psp50", precision="fp16", frames=200, warmup=20, baseline="reference"),
    dict(model="td2-psp50", precision="fp32", frames=100, warmup=10),
    dict(model="td2-psp50", precision="fp16", frames=60, warmup=10, streams=4),
    dict(model="psp101", precision="fp16", frames=100, warmup=10),
]
if SMOKE:  # every mode once, tiny; compiling (minutes on a CPU) and fp16 (CUDA only) left out
    RUNS = [
        dict(kw, frames=2, warmup=1, size=(65, 129), precision="fp32" if kw["precision"] == "fp16" else kw["precision"])
        for kw in RUNS
        if not kw.get("compile")
    ]
for kw in RUNS:
    t0 = time.time()
    try:
        rep = run_bench(device=DEVICE, **kw).to_dict()
        r = rep["result"]
        line = {k: kw.get(k) for k in ("model", "precision", "streams", "compile")}
        line.update(
            fps_total=r["fps_total"],
            median_ms=r["steady"]["median_ms"],
            p95_ms=r["steady"]["p95_ms"],
            gflops=r["achieved_gflops"],
            ceiling=rep["ceiling"],
            speedup=rep["speedup_vs_baseline"],
            peak_cuda_mb=r["peak_cuda_mb"],
            wall_s=time.time() - t0,
        )
        results["runs"].append({"args": {k: str(v) for k, v in kw.items()}, "summary": line, "report": rep})
        print("bench", line, flush=True)
    except Exception as exc:  # noqa: BLE001 - record and go on: one failing mode must not lose the rest
        results["runs"].append({"args": {k: str(v) for k, v in kw.items()}, "error": traceback.format_exc()[-2000:]})
        print("bench FAILED", kw, exc, flush=True)
    save()
    if not SMOKE:
        torch.cuda.empty_cache()

# 3. End to end: a 2048x1024 H.264 clip through `tdnet segment` on the GPU.
import imageio_ffmpeg

ff = imageio_ffmpeg.get_ffmpeg_exe()
clip = Path("/tmp/tdnet-clip2048.mp4")  # kept out of OUT_DIR: large
subprocess.run(
    [
        ff,
        "-y",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={'256x128' if SMOKE else '2048x1024'}:rate=17",
        "-t",
        "1" if SMOKE else "12",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        str(clip),
    ],
    check=True,
)
# the CPU route, then NVDEC decoding, then NVENC encoding too (data-centre GPUs such as the
# H100/H200 have no NVENC: then the run records tdnet's one-line refusal), then CUDA graphs
# (one launch per step, so the reader and writer threads cannot delay the model's launches)
VIDEO_ROUTES = ([], ["--hw-decode"], ["--hw-decode", "--encoder", "nvenc"], ["--compile-mode", "reduce-overhead"])
for route in VIDEO_ROUTES:
    for save_kind in ("overlay", "labels") if not route else ("overlay",):
        cmd = [
            sys.executable,
            "-m",
            "tdnet_cli",
            "segment",
            str(clip),
            "--model",
            "td4-psp18",
            "--device",
            DEVICE,
            "--precision",
            "fp32" if SMOKE else "fp16",
            "--save",
            save_kind,
            "--out-dir",
            "/tmp/tdnet-seg",
            "--overwrite",
            "--json",
            "--quiet",
            *route,
            *(["--input-size", "65x129"] if SMOKE else []),
        ]
        if SMOKE and "--compile-mode" in route:
            continue
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, check=False, text=True)
        row = {"cmd": " ".join(cmd[1:]), "rc": proc.returncode, "wall_s": time.time() - t0}
        try:
            row["report"] = json.loads(proc.stdout)
        except json.JSONDecodeError:
            row["stdout"], row["stderr"] = proc.stdout[-1500:], proc.stderr[-1500:]
        results.setdefault("end_to_end", []).append(row)
        print("segment", {k: v for k, v in row.items() if k != "report"}, row.get("report", {}).get("fps"), flush=True)
        save()
