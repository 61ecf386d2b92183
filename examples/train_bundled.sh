#!/usr/bin/env bash
# How weights/td4-mini-synth.pt is made. Timed end to end on a fresh clone of this repo, on
# the project's 2-core CPU: 57:46 wall, 47 minutes of it training (weights/README.md). The
# runs are deterministic there: a rerun gives the same weights. On a GPU add
# --set run.device="cuda".
set -euo pipefail
cd "$(dirname "$0")/.."
tdnet synth data/synth --split train --sequences 120 --size 512x1024 --frames 20 --seed 1 --quiet
tdnet synth data/synth --split val --sequences 20 --size 512x1024 --frames 20 --seed 2 --overwrite --quiet
tdnet train --config examples/train-psp-mini.toml "$@"
tdnet train --config examples/train-gpsp-mini.toml "$@"
tdnet train --config examples/train-td4-mini.toml "$@"
cp runs/td4-mini/model.pt weights/td4-mini-synth.pt
# 200 unseen annotated frames, each scored with all four paths, with and without the memory.
tdnet synth data/synth-test3 --split val --sequences 200 --size 512x1024 --frames 20 --seed 5 --quiet
tdnet eval data/synth-test3 --weights weights/td4-mini-synth.pt --all-paths --json-file runs/td4-mini/eval-test3.json --overwrite --quiet
tdnet eval data/synth-test3 --weights weights/td4-mini-synth.pt --all-paths --no-propagation --json-file runs/td4-mini/eval-test3-sub.json --overwrite --quiet
