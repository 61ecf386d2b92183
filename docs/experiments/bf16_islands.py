"""Which parts must stay fp32 for >= 99% argmax agreement with the authors' reference under CPU bf16?

usage: python docs/experiments/bf16_islands.py MODE...   e.g. fp32 none conv1,layer1,head,atn,enc,psp
  each MODE is a comma list of parts kept in fp32 (conv1 layer1..4 psp enc head atn), "none"
  (everything bf16) or "fp32" (no autocast); prints per-frame agreement on the 6 conformance frames.
"""

import sys

import torch
import torch.nn.functional as F
from common import expected, recipe_model  # docs/experiments/, beside this script

from tdnet_cli.conformance import check_frame, normalise
from tdnet_cli.models import optimize_for_inference

torch.set_num_threads(1)


def fp32(mod):
    f = mod.forward

    def fwd(*a, **k):
        with torch.autocast("cpu", enabled=False):
            return f(*[x.float() if torch.is_tensor(x) else x for x in a], **k)

    mod.forward = fwd


modes = sys.argv[1:]
for preset in ("td4-psp18", "td2-psp50"):
    ref = expected(preset)
    for mode in modes:
        m = optimize_for_inference(recipe_model(preset))
        parts = mode.split(",")
        for p in range(m.num_paths):
            bb = getattr(m, f"pretrained{p + 1}")
            for part in parts:
                if part in ("conv1", "layer1", "layer2", "layer3", "layer4"):
                    fp32(getattr(bb, part))
                if part == "psp":
                    fp32(getattr(m, f"psp{p + 1}"))
                if part == "enc":
                    fp32(getattr(m, f"enc{p + 1}"))
                if part == "head":
                    fp32(getattr(m, f"head{p + 1}"))
                    fp32(getattr(m, f"layer_norm{p + 1}"))
        if "atn" in parts:
            for name, mod in m.named_modules():
                if name.startswith("atn"):
                    fp32(mod)
        s = m.new_state()
        ags = []
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
            for i in range(6):
                x = normalise(ref["inputs"][i : i + 1]).contiguous(memory_format=torch.channels_last)
                lg, s = m.step(x, s)
                up = F.interpolate(lg.float(), (129, 257), mode="bilinear", align_corners=True)[0]
                ags.append(check_frame(up, ref, i)["agree"])
        print(preset, mode, "min %.4f" % min(ags), [round(a, 4) for a in ags], flush=True)
