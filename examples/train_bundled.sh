#!/usr/bin/env bash
# How weights/td4-mini-synth.pt is made (51 minutes in all on a quiet 2-core CPU, data and evaluations included;
# see weights/README.md; --set run.device="cuda" on a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
tdnet synth data/synth --split train --sequences 120 --size 512x1024 --frames 20 --seed 1 --quiet
tdnet synth data/synth --split val --sequences 20 --size 512x1024 --frames 20 --seed 2 --overwrite --quiet
tdnet train --config examples/train-psp-mini.toml "$@"
tdnet train --config examples/train-gpsp-mini.toml "$@"
tdnet train --config examples/train-td4-mini.toml "$@"
cp runs/td4-mini/model.pt weights/td4-mini-synth.pt
tdnet synth data/synth-test --split val --sequences 20 --size 512x1024 --frames 20 --seed 3 --quiet
tdnet eval data/synth-test --weights weights/td4-mini-synth.pt --json runs/td4-mini/eval-test.json --overwrite
tdnet eval data/synth-test --weights weights/td4-mini-synth.pt --no-propagation --json runs/td4-mini/eval-test-sub.json --overwrite
tdnet synth data/synth-test2 --split val --sequences 20 --size 512x1024 --frames 20 --seed 4 --quiet
tdnet eval data/synth-test2 --weights weights/td4-mini-synth.pt --json runs/td4-mini/eval-test2.json --overwrite
tdnet eval data/synth-test2 --weights weights/td4-mini-synth.pt --no-propagation --json runs/td4-mini/eval-test2-sub.json --overwrite
