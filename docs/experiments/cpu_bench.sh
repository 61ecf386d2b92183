#!/usr/bin/env bash
# The CPU figures of docs/benchmarks.md (issue 7 targets 1 and 2), run on a quiet machine.
# usage: bash docs/experiments/cpu_bench.sh OUT_DIR
set -euo pipefail
out=${1:-bench-out}; mkdir -p "$out"
# 1. fp32: optimised path vs the plain reference path (mirrors the authors' code), same run.
tdnet bench --model td4-psp18 --frames 6 --warmup 4 --baseline reference --json > "$out/td4_fp32.json"
tdnet bench --model td2-psp50 --frames 3 --warmup 2 --baseline reference --json > "$out/td2_fp32.json"
# 1b. the same with --compile (inductor, weights frozen): one graph per path, compiled during warm-up.
tdnet bench --model td4-psp18 --frames 6 --warmup 4 --compile --baseline reference --json > "$out/td4_fp32_compile.json"
tdnet bench --model td2-psp50 --frames 3 --warmup 2 --compile --baseline reference --json > "$out/td2_fp32_compile.json"
# 2. bf16 (oneDNN, avx512_bf16/AMX) vs the fp32 reference path.
tdnet bench --model td4-psp18 --precision bf16 --frames 6 --warmup 4 --baseline reference --no-ceiling --json > "$out/td4_bf16.json"
tdnet bench --model td2-psp50 --precision bf16 --frames 3 --warmup 2 --baseline reference --no-ceiling --json > "$out/td2_bf16.json"
python3 - "$out" <<'PY'
import json, sys, pathlib
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    d = json.loads(f.read_text()); r = d["result"]; b = d["baseline"]
    print(f.name, r["model"], r["precision"], "compiled" if r["compiled"] else "eager", "ours %.0f ms" % r["steady"]["median_ms"],
          "reference %.0f ms" % b["steady"]["median_ms"], "speed-up %.2fx" % d["speedup_vs_baseline"],
          "GFLOP/s %.0f" % r["achieved_gflops"],
          ("ceiling %.0f (%.0f%%)" % (d["ceiling"]["gflops"], 100 * d["fraction_of_ceiling"])) if d["ceiling"] else "",
          ("winograd layer %.0f" % d["ceiling"]["layer_gflops"]) if d["ceiling"] and d["ceiling"].get("layer_gflops") else "")
PY
