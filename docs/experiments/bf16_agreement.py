"""Argmax agreement of CPU bf16 autocast with the authors' reference outputs, per frame.

usage: python docs/experiments/bf16_agreement.py all|head32|tail32
  all: everything under bf16 autocast; head32: LayerNorm + head in fp32;
  tail32: attention propagation, LayerNorm and head in fp32.
"""

import sys

import torch
import torch.nn.functional as F
from common import expected, recipe_model  # docs/experiments/, beside this script

from tdnet_cli.conformance import check_frame, normalise
from tdnet_cli.models import optimize_for_inference

mode = sys.argv[1]
for preset in ("td4-psp18", "td2-psp50"):
    ref = expected(preset)
    m = optimize_for_inference(recipe_model(preset))
    if mode in ("head32", "tail32"):
        orig_decode, orig_fuse = m.decode, m.fuse

        def decode(feat, path):
            with torch.autocast("cpu", enabled=False):
                return orig_decode(feat.float(), path)

        def fuse(v, q, mem, path):
            with torch.autocast("cpu", enabled=False):
                return orig_fuse(v.float(), q.float(), tuple(type(x)(*(t.float() for t in x)) for x in mem), path)

        m.decode = decode
        if mode == "tail32":
            m.fuse = fuse
    s = m.new_state()
    ags = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(6):
            x = normalise(ref["inputs"][i : i + 1]).contiguous(memory_format=torch.channels_last)
            lg, s = m.step(x, s)
            up = F.interpolate(lg.float(), (129, 257), mode="bilinear", align_corners=True)[0]
            ags.append(check_frame(up, ref, i)["agree"])
    print(mode, preset, [round(a, 4) for a in ags])
