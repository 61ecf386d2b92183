#!/usr/bin/env bash
# Issue 7 targets 3 and 4 on the CPU, run on a quiet machine:
#  3. `segment` end to end with the bundled model: the share of time outside the model
#     (decode, preprocess, postprocess, encode) on a 512x1024 and a 1024x2048 clip;
#  4. peak RSS of `segment` on a clip 10x longer than the short one.
# usage: bash docs/experiments/cpu_e2e.sh OUT_DIR
set -euo pipefail
out=${1:-e2e-out}; mkdir -p "$out"
ff=$(python3 -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')
# 60 frames of the bundled street scene at 1024x512 (its own size) and upscaled to 2048x1024.
"$ff" -v error -y -stream_loop 1 -i examples/street.mp4 -frames:v 60 -c:v libx264 -preset veryfast -crf 18 "$out/clip_1024x512.mp4"
"$ff" -v error -y -stream_loop 1 -i examples/street.mp4 -frames:v 60 -vf scale=2048:1024 -c:v libx264 -preset veryfast -crf 18 "$out/clip_2048x1024.mp4"
"$ff" -v error -y -stream_loop 9 -i "$out/clip_1024x512.mp4" -c copy "$out/clip_1024x512_x10.mp4"
for c in 1024x512 2048x1024; do
  tdnet bench --input "$out/clip_$c.mp4" --frames 20 --warmup 4 --no-ceiling --json > "$out/e2e_$c.json"
  tdnet bench --input "$out/clip_$c.mp4" --frames 20 --warmup 4 --no-ceiling --x264-preset ultrafast --json > "$out/e2e_${c}_ultrafast.json"
done
for c in 1024x512 1024x512_x10; do
  /usr/bin/time -v tdnet segment "$out/clip_$c.mp4" --out-dir "$out/seg" --overwrite --quiet 2> "$out/time_$c.txt"
done
python3 - "$out" <<'PY'
import json, re, sys, pathlib
out = pathlib.Path(sys.argv[1])
for c in ("1024x512", "2048x1024", "1024x512_ultrafast", "2048x1024_ultrafast"):
    e = json.loads((out / f"e2e_{c}.json").read_text())["end_to_end"]
    ms = e["stage_ms_per_frame"]
    print(f"{c}: end to end {e['fps']:.2f} fps, model stage {e['model_stage_fps']:.2f} fps, outside the model "
          f"{100 * e['non_model_share']:.1f}% ({', '.join(f'{k} {v:.1f} ms' for k, v in ms.items())})")
rss = {c: int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", (out / f"time_{c}.txt").read_text()).group(1))
       for c in ("1024x512", "1024x512_x10")}
print("peak RSS: short %.0f MB, 10x longer %.0f MB (%+.1f%%)" % (rss["1024x512"] / 1024, rss["1024x512_x10"] / 1024,
      100 * (rss["1024x512_x10"] / rss["1024x512"] - 1)))
PY
