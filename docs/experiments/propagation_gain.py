"""What a TDNet checkpoint's temporal propagation adds, with a confidence interval.

usage: python docs/experiments/propagation_gain.py CHECKPOINT ROOT [ROOT ...] [--boot 2000] [--json OUT] [--headroom]

`tdnet eval` scores the annotated frame after three preceding frames, so it always runs
the last path. Here every annotated frame is scored in all four phases of the stream
(its path 1, 2, 3 or 4, memory from the three frames before it, as `segment` runs every
path equally), with and without the memory (`--no-propagation`'s sub-feature output).
Encodings are cached per (frame, path): 16 encodes per annotated frame cover all phases.

Reported per data root and over all roots together: mIoU of the full and sub-only outputs
(confusion matrices summed over frames and phases), the gain, and a paired bootstrap over
annotated frames (each resampled frame brings its four phases, full and sub together):
the gain's 2.5/97.5 percentiles and the share of resamples where it is > 0. The phase
that `tdnet eval` scores is reported alone too; it matches `tdnet eval` exactly.

--headroom adds two bounds on what the other paths can add to a frame, from the same
encodings: `ensemble`, each phase's sub output averaged (softmax) with the other three
paths' sub outputs on the *same* frame (no motion, full resolution), and
`ensemble_memory_grid`, the same with the other paths' outputs kept only on the memory's
grid (every memory_stride-th row and column, upsampled bilinearly), which is all the
resolution the propagation carries.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from tdnet_cli.data.cityscapes import label_id_to_train_id
from tdnet_cli.inference import Predictor
from tdnet_cli.metrics import ConfusionMatrix, scores
from tdnet_cli.pipeline.evaluate import _load, plan_samples
from tdnet_cli.upsample import upsample_argmax


def miou(conf: np.ndarray) -> float:
    """mIoU of a (C, C) count matrix, by the project's own metrics.scores."""
    cm = ConfusionMatrix(len(conf))
    cm.matrix = torch.from_numpy(np.ascontiguousarray(conf, dtype=np.int64).reshape(-1))
    return scores(cm).miou


def score_root(pred: Predictor, root: str, headroom: bool = False) -> dict[str, np.ndarray]:
    """Per annotated frame and phase, the confusion matrices of the full and sub outputs
    (and with ``headroom`` of the two ensembles, see the module docstring)."""
    model = pred.model
    n = model.num_paths
    samples, *_ = plan_samples(root, "val", history=n - 1)
    c = len(pred.classes)
    names = ["full", "sub"] + (["ensemble", "ensemble_memory_grid"] if headroom else [])
    cms = {name: np.zeros((len(samples), n, c, c), np.int64) for name in names}
    stride = model.config.memory_stride
    for i, sample in enumerate(samples):
        frames, gt, _ = _load(sample)
        gt_t = torch.from_numpy(label_id_to_train_id(gt))
        with torch.inference_mode():
            x = pred.preprocess(np.stack(frames))
            enc = {(t, p): model.encode(x[t : t + 1], p) for t in range(n) for p in range(n)}
            # Each path's sub output on the annotated frame: scored below, and the ensembles' members.
            subs = [model.decode(enc[(n - 1, p)][0], p) for p in range(n)]
            probs = [s.float().softmax(1) for s in subs] if headroom else []
            for path in range(n):  # path of the annotated frame (the last of the n frames)
                mems = tuple(enc[(t, (path - (n - 1) + t) % n)][2] for t in range(n - 1))
                v, q, _, _ = enc[(n - 1, path)]
                outs = {"full": model.decode(model.fuse(v, q, mems, path), path), "sub": subs[path]}
                if headroom:
                    others = [probs[p] for p in range(n) if p != path]
                    size = probs[path].shape[-2:]
                    grid = [
                        F.interpolate(o[:, :, ::stride, ::stride], size, mode="bilinear", align_corners=True)
                        for o in others
                    ]
                    outs["ensemble"] = torch.stack([probs[path], *others]).mean(0)
                    outs["ensemble_memory_grid"] = torch.stack([probs[path], *grid]).mean(0)
                for name, logits in outs.items():
                    cm = ConfusionMatrix(c)
                    cm.update(upsample_argmax(logits.float(), gt.shape)[0], gt_t)
                    cms[name][i, path] = cm.numpy()
    return cms


def summarise(
    full: np.ndarray, sub: np.ndarray, boot: int, rng: np.random.Generator, extra: dict[str, np.ndarray] | None = None
) -> dict:
    n = full.shape[1]
    f_all, s_all = full.sum(1), sub.sum(1)  # (frames, C, C): all phases of each frame
    gains = []
    for _ in range(boot):
        idx = rng.integers(0, len(f_all), len(f_all))
        gains.append(miou(f_all[idx].sum(0)) - miou(s_all[idx].sum(0)))
    gains = np.array(gains) * 100
    out = {
        "frames": int(full.shape[0]),
        "full_miou": round(100 * miou(f_all.sum(0)), 2),
        "sub_miou": round(100 * miou(s_all.sum(0)), 2),
        "gain_ci95": [round(float(np.percentile(gains, 2.5)), 2), round(float(np.percentile(gains, 97.5)), 2)],
        "gain_positive_share": round(float((gains > 0).mean()), 3),
        "per_path": {
            f"path{p + 1}": [round(100 * miou(full[:, p].sum(0)), 2), round(100 * miou(sub[:, p].sum(0)), 2)]
            for p in range(n)
        },
    }
    out["gain"] = round(out["full_miou"] - out["sub_miou"], 2)
    for name, cm in (extra or {}).items():
        out[f"{name}_miou"] = round(100 * miou(cm.sum((0, 1))), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("roots", nargs="+")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--json", default=None)
    ap.add_argument("--headroom", action="store_true", help="also score the two same-frame ensembles")
    args = ap.parse_args()
    torch.manual_seed(0)
    pred = Predictor.create(weights=args.checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    result, fulls, subs = {"checkpoint": args.checkpoint, "roots": {}}, [], []
    for root in args.roots:
        t0 = time.perf_counter()
        cms = score_root(pred, root, args.headroom)
        fulls.append(cms["full"])
        subs.append(cms["sub"])
        extra = {k: v for k, v in cms.items() if k not in ("full", "sub")}
        result["roots"][root] = summarise(cms["full"], cms["sub"], args.boot, rng, extra)
        result["roots"][root]["seconds"] = round(time.perf_counter() - t0, 1)
        print(root, json.dumps(result["roots"][root]), file=sys.stderr)
    if len(args.roots) > 1:
        result["all"] = summarise(np.concatenate(fulls), np.concatenate(subs), args.boot, rng)
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
