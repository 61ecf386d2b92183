"""Where CPU bf16 loses argmax agreement on the conformance frames, and what no bf16 scheme can fix.

usage: python docs/experiments/bf16_error_sources.py

For td4-psp18 and td2-psp50 (the conformance recipe weights, 129x257 frames, 6 frames each)
it prints the fp32 logits' top-1/top-2 margins against bf16's per-pixel error, then the
share of pixels whose argmax differs from our fp32 output when only one source of bf16
error is emulated in every convolution (everything else stays fp32):
  inputs+weights   conv inputs and weights rounded to bf16, fp32 arithmetic and output
  weights          weights rounded only
  inputs           inputs rounded only
  outputs          exact inputs and weights, the conv output rounded to bf16 (what a bf16
                   conv kernel returns)
  bf16 kernels     real bf16 convolutions (all three roundings), output cast back to fp32
  bf16 layer2-4    the same on the backbone's layer2-4 convs only (most of the FLOPs)
  3-term split     x_hi*w_hi + x_lo*w_hi + x_hi*w_lo in bf16 kernels (3x the convs): the
                   input and weight rounding removed, the bf16 outputs kept
and the plain `torch.autocast("cpu", bfloat16)` run (what `--precision bf16` does).
Disagreement is given as mean / worst over the 6 frames.
"""

import torch
import torch.nn.functional as F
from common import expected, recipe_model  # docs/experiments/, beside this script
from torch import nn

from tdnet_cli.conformance import SMALL_SIZE, normalise
from tdnet_cli.models import optimize_for_inference

BF = torch.bfloat16
SIZE = SMALL_SIZE


def rounded(t):
    return t.to(BF).float()


def with_bias(mod, y):
    return y if mod.bias is None else y + mod.bias.view(1, -1, 1, 1)


def conv(mod, x, w, out_dtype=None):
    y = mod._conv_forward(x, w, None)
    return with_bias(mod, y.float() if out_dtype is None else y.to(out_dtype).float())


def conv3(mod, x):
    wh = mod.weight.to(BF)
    wl = (mod.weight - wh.float()).to(BF)
    xh = x.to(BF)
    xl = (x - xh.float()).to(BF)
    return with_bias(mod, sum(mod._conv_forward(a, b, None).float() for a, b in ((xh, wh), (xl, wh), (xh, wl))))


def every_conv(name):
    return True


def layer2_to_4(name):
    return any(f".layer{k}." in name for k in (2, 3, 4))


def bf16_kernel(m, x):
    return conv(m, x.to(BF), m.weight.to(BF))


# name -> (the conv's replacement forward, which convs get it)
VARIANTS = {
    "inputs+weights": (lambda m, x: conv(m, rounded(x), rounded(m.weight)), every_conv),
    "weights": (lambda m, x: conv(m, x, rounded(m.weight)), every_conv),
    "inputs": (lambda m, x: conv(m, rounded(x), m.weight), every_conv),
    "outputs": (lambda m, x: conv(m, x, m.weight, BF), every_conv),
    "bf16 kernels": (bf16_kernel, every_conv),
    "bf16 layer2-4": (bf16_kernel, layer2_to_4),
    "3-term split": (conv3, every_conv),
}


def build(preset):
    return optimize_for_inference(recipe_model(preset))


def logits(model, ref, autocast=False):
    state, ups = model.new_state(), []
    with torch.inference_mode(), torch.autocast("cpu", dtype=BF, enabled=autocast):
        for i in range(len(ref["inputs"])):
            x = normalise(ref["inputs"][i : i + 1]).contiguous(memory_format=torch.channels_last)
            out, state = model.step(x, state)
            ups.append(F.interpolate(out.float(), SIZE, mode="bilinear", align_corners=True)[0])
    return torch.stack(ups)


def disagreement(a, b):
    d = (a.argmax(1) != b.argmax(1)).float().mean(dim=(1, 2))
    return f"{100 * d.mean():.2f}% / {100 * d.max():.2f}%"


def main():
    torch.manual_seed(0)
    for preset in ("td4-psp18", "td2-psp50"):
        ref = expected(preset)
        base = logits(build(preset), ref)
        auto = logits(build(preset), ref, autocast=True)
        top2 = base.topk(2, dim=1).values
        margin = (top2[:, 0] - top2[:, 1]).flatten()
        err = (auto - base).abs().amax(dim=1).flatten()
        qs = ", ".join(f"{q:.1%}: {torch.quantile(margin, q):.4f}" for q in (0.005, 0.01, 0.02, 0.05))
        print(
            f"{preset}: fp32 top-1 minus top-2 logit, quantiles {qs}; "
            f"bf16 autocast's per-pixel error (max over classes), median {err.median():.4f}"
        )
        print(f"  autocast bf16 (--precision bf16): {disagreement(base, auto)}")
        for name, (fn, selected) in VARIANTS.items():
            model = build(preset)
            for mod_name, mod in model.named_modules():
                if isinstance(mod, nn.Conv2d) and selected(mod_name):
                    mod.forward = (lambda mod: lambda x: fn(mod, x))(mod)
            print(f"  {name}: {disagreement(base, logits(model, ref))}")


if __name__ == "__main__":
    main()
