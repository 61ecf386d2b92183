"""Training losses: (OHEM) cross-entropy and the grouped distillation objective of TDNet."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tdnet_cli.data.cityscapes import IGNORE_INDEX

__all__ = ["cross_entropy", "ohem_cross_entropy", "kl_divergence", "Criterion"]


def _resize(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE over non-ignored pixels; logits are resized to the label size first."""
    return F.cross_entropy(_resize(logits.float(), labels.shape[-2:]), labels.long(), ignore_index=IGNORE_INDEX)


def ohem_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, thresh: float = 0.7,
                       min_kept: int = 10000) -> torch.Tensor:
    """Online hard example mining: the mean loss of pixels whose ground-truth probability
    is below ``thresh`` (loss above -ln thresh), or of the ``min_kept`` hardest pixels per
    image if fewer are that hard."""
    loss = F.cross_entropy(_resize(logits.float(), labels.shape[-2:]), labels.long(),
                           ignore_index=IGNORE_INDEX, reduction="none").flatten()
    valid = labels.flatten() != IGNORE_INDEX
    loss = loss[valid]
    if loss.numel() == 0:
        return logits.sum() * 0.0
    n_min = min(min_kept * labels.shape[0], loss.numel())
    limit = -math.log(thresh)
    hard = loss[loss > limit]
    if hard.numel() >= n_min:
        return hard.mean()
    return torch.topk(loss, n_min, sorted=False).values.mean()


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) = sum_c P log(P / Q) per pixel, averaged over pixels (softmax, T = 1).

    SPEC: "KL(full output || teacher full output)": P is the student's, Q the teacher's.
    Both are at feature resolution (stride 8); the teacher is resized if it differs.
    """
    q_logits = _resize(q_logits.float(), p_logits.shape[-2:])
    log_p = F.log_softmax(p_logits.float(), dim=1)
    log_q = F.log_softmax(q_logits.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


class Criterion:
    """Combines the loss terms for whichever model kind is being trained.

    TDNet:   CE(out) + sub_weight CE(sub) + aux_weight CE(aux)
             [+ kd_weight KL(out || teacher out) + kd_group_weight KL(sub || teacher group p)]
    PSPNet:  CE(out) + aux_weight CE(aux)
    Grouped teacher: CE(out) + group_weight mean_g CE(group g) + aux_weight CE(aux)
    """

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg

    def ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if c["ohem"]:
            return ohem_cross_entropy(logits, labels, c["ohem_thresh"], c["ohem_min_kept"])
        return cross_entropy(logits, labels)

    def __call__(self, out: dict, labels: torch.Tensor, teacher: dict | None = None,
                 path: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.cfg
        terms: dict[str, torch.Tensor] = {"ce": self.ce(out["out"], labels)}
        if "sub" in out:
            terms["sub"] = c["sub_weight"] * self.ce(out["sub"], labels)
        if "aux" in out:
            terms["aux"] = c["aux_weight"] * self.ce(out["aux"], labels)
        if "groups" in out:
            terms["groups"] = c["group_weight"] * torch.stack([self.ce(g, labels) for g in out["groups"]]).mean()
        if teacher is not None:
            terms["kd"] = c["kd_weight"] * kl_divergence(out["out"], teacher["out"])
            if "sub" in out and path is not None:
                terms["kd_group"] = c["kd_group_weight"] * kl_divergence(out["sub"], teacher["groups"][path])
        total = torch.stack(list(terms.values())).sum()
        return total, {k: float(v.detach()) for k, v in terms.items()}
