#!/usr/bin/env bash
# One lent-GPU call: the bundled ffmpeg from a carried folder, then docs/gpu_bench.py.
#
# The GPU machine has torch but no package index, and imageio-ffmpeg's binary (170 MB) is over
# the 64 MiB the working tree may carry, so carry it compressed. Once, on this machine:
#   mkdir -p .gpu && echo /.gpu/ >> .git/info/exclude
#   cp -r "$(python -c 'import imageio_ffmpeg, os; print(os.path.dirname(imageio_ffmpeg.__file__))')" .gpu/
#   rm -rf .gpu/imageio_ffmpeg/__pycache__ .gpu/imageio_ffmpeg/binaries/__pycache__
#   xz -9 -T0 .gpu/imageio_ffmpeg/binaries/ffmpeg-*
# Then the device tool's run: command "bash docs/gpu_run.sh", carry [".gpu"], timeout_s 540.
# Try it here first: OUT=/tmp/gpu-smoke bash docs/gpu_run.sh --smoke
set -euo pipefail
: "${OUT:?set OUT to the folder for results (the device tool sets it)}"
site=$(mktemp -d)
cp -r .gpu/imageio_ffmpeg "$site/"
for f in "$site"/imageio_ffmpeg/binaries/*.xz; do
    [ -e "$f" ] && xz -d -T0 "$f"
done
chmod +x "$site"/imageio_ffmpeg/binaries/ffmpeg*
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null | tee "$OUT/gpu.txt" || true
python docs/gpu_bench.py "$OUT" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
