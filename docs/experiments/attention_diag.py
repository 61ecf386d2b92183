"""How much a td4-mini's temporal propagation carries, measured on val clips.

usage: python docs/experiments/attention_diag.py CHECKPOINT [DATA_ROOT]
For 8 clips of DATA_ROOT's val split (default data/synth) the annotated frame runs path 4
with the three preceding frames in memory. Prints, for the last attention of the chain:
its mean entropy (uniform = ln of the memory positions), the spread of its logits, the
spatial part of the propagated term relative to the current values' (per-channel means
removed, as the spatial LayerNorm removes them), and the attention mass on memory
positions whose label equals the target's (labels of the annotated frame, a proxy for
the memory frames', which are unlabelled), against the same for uniform attention.
"""

import math
import sys

import torch
import torch.nn.functional as F

from tdnet_cli.data.clips import AugmentConfig, ClipDataset
from tdnet_cli.models.checkpoint import load_checkpoint

model = load_checkpoint(sys.argv[1]).model.eval()
root = sys.argv[2] if len(sys.argv) > 2 else "data/synth"
n = model.num_paths
stride = model.config.memory_stride
ds = ClipDataset(
    root,
    "val",
    clip_len=n,
    train=False,
    augment=AugmentConfig(crop=tuple(model.input_size), scale=(1, 1), flip=False, rotate=0, color_jitter=0),
)
seen = {}


def hook(mod, inputs, out):
    k, _v, q = inputs
    logits = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(q.shape[-1])
    seen["attn"], seen["logit_std"] = logits.softmax(2), logits.std(2).mean().item()


model.attention_chain(n - 1)[-1].register_forward_hook(hook)
ent, spatial, same, uniform = [], [], [], []
with torch.no_grad():
    for i in range(0, len(ds), max(1, len(ds) // 8)):
        sample = ds[i]
        clip = sample["frames"][None]
        memories = ()
        for t in range(n - 1):
            memories += (model.encode(clip[:, t], t % n)[2],)
        v, q, _, _ = model.encode(clip[:, n - 1], n - 1)
        c = model.propagate(memories, q, n - 1).transpose(1, 2).reshape(v.shape)
        a = seen["attn"][0]
        ent.append(-(a * a.clamp_min(1e-12).log()).sum(1).mean().item())
        spatial.append(((c - c.mean((2, 3), True)).norm() / (v - v.mean((2, 3), True)).norm()).item())
        h, w = v.shape[2:]
        tgt = F.interpolate(sample["label"][None, None].float(), (h, w), mode="nearest").flatten().long()
        src = tgt.view(h, w)[::stride, ::stride].flatten()
        match = (tgt[:, None] == src[None, :]).float()
        valid = tgt != 255
        same.append((a * match).sum(1)[valid].mean().item())
        uniform.append(match[valid].mean().item())
positions = memories[0].k.shape[1]
print(
    f"attention entropy {sum(ent) / len(ent):.2f} (uniform: ln {positions} = {math.log(positions):.2f}), "
    f"logit std {seen['logit_std']:.2f}, spatial |c|/|v| {sum(spatial) / len(spatial):.3f}, "
    f"same-class mass {sum(same) / len(same):.3f} (uniform {sum(uniform) / len(uniform):.3f})"
)
