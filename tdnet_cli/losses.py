"""Training losses: (OHEM) cross-entropy and the grouped distillation objective of TDNet."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tdnet_cli.data.cityscapes import IGNORE_INDEX

__all__ = ["Criterion", "cross_entropy", "distillation_kl", "kl_divergence", "ohem_cross_entropy"]


def _resize(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def _interp_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation with aligned corners."""
    pos = torch.arange(n_out, dtype=torch.float64) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    lo = pos.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = pos - lo
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w[rows, lo] += 1 - frac
    w[rows, hi] += frac
    return w.to(dtype=like.dtype, device=like.device)


class _UpsampledCrossEntropy(torch.autograd.Function):
    """Per-pixel CE of logits bilinearly upsampled (aligned corners) to the label size.

    The same function as ``F.cross_entropy(F.interpolate(...), reduction="none")`` with 0 at
    ignored pixels (within float rounding), but the full-size (C, H, W) logits never exist
    at once: upsampling is two small matrix products, done one band of ``ROWS`` label rows
    at a time, so each band's softmax work stays in cache; the backward recomputes a band,
    forms g * (softmax - one-hot) in place and shrinks it back by the transposed products.
    On this 2-core CPU one term of a td4-mini batch (8 x 19 x 256 x 512) took 145 ms
    forward + backward as one full-size tensor and ~90 ms in bands, against ~270 ms through
    F.interpolate + F.cross_entropy, and it keeps no full-size tensor for the backward.
    """

    ROWS = 64

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(logits.device.type, enabled=False):  # the loss stays fp32 under AMP
            return _UpsampledCrossEntropy._forward(ctx, logits, labels)

    @staticmethod
    def _forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n, _, h, w = logits.shape
        oh, ow = labels.shape[-2:]
        wh, ww = _interp_matrix(h, oh, logits), _interp_matrix(w, ow, logits)
        cols = (logits @ ww.T).contiguous()  # (N, C, h, W): upsampled along the width only
        valid = labels != IGNORE_INDEX
        target = labels.masked_fill(~valid, 0).unsqueeze(1)  # (N, 1, H, W)
        lse = logits.new_empty(labels.shape)
        loss = logits.new_empty(labels.shape)
        for i in range(n):
            for r in range(0, oh, _UpsampledCrossEntropy.ROWS):
                band = slice(r, r + _UpsampledCrossEntropy.ROWS)
                up = wh[band] @ cols[i]  # (C, rows, W)
                lse[i, band] = torch.logsumexp(up, 0)
                loss[i, band] = lse[i, band] - up.gather(0, target[i, :, band]).squeeze(0)
        loss.masked_fill_(~valid, 0.0)
        ctx.save_for_backward(cols, lse, target, valid, wh, ww)
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        with torch.autocast(grad.device.type, enabled=False):
            return _UpsampledCrossEntropy._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad: torch.Tensor):
        cols, lse, target, valid, wh, ww = ctx.saved_tensors
        g = (grad * valid).unsqueeze(1)
        d_cols = torch.zeros_like(cols)
        for i in range(cols.shape[0]):
            for r in range(0, lse.shape[1], _UpsampledCrossEntropy.ROWS):
                band = slice(r, r + _UpsampledCrossEntropy.ROWS)
                up = wh[band] @ cols[i]
                d = up.sub_(lse[i, band]).exp_().mul_(g[i, :, band])  # g * softmax
                d.scatter_add_(0, target[i, :, band], -g[i, :, band])  # - g * one-hot
                d_cols[i] += wh[band].T @ d
        return d_cols @ ww, None


def _pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, H, W) CE per pixel at the label size, 0 where the label is ignored."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) == tuple(labels.shape[-2:]):
        return F.cross_entropy(logits, labels.long(), ignore_index=IGNORE_INDEX, reduction="none")
    return _UpsampledCrossEntropy.apply(logits, labels.long())


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE over non-ignored pixels; logits are resized to the label size first."""
    return _pixel_cross_entropy(logits, labels).sum() / (labels != IGNORE_INDEX).sum()


def ohem_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, thresh: float = 0.7, min_kept: int = 10000
) -> torch.Tensor:
    """Online hard example mining: the mean loss of pixels whose ground-truth probability
    is below ``thresh`` (loss above -ln thresh), or of the ``min_kept`` hardest pixels per
    image if fewer are that hard."""
    loss = _pixel_cross_entropy(logits, labels).flatten()
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
    """KL(P || Q) = sum_c P log(P / Q) per pixel, averaged over pixels (softmax, T = 1), with
    P from the first logits and Q from the second (resized to the first's size if needed)."""
    q_logits = _resize(q_logits.float(), p_logits.shape[-2:])
    log_p = F.log_softmax(p_logits.float(), dim=1)
    log_q = F.log_softmax(q_logits.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


KD_EPS = 1e-8  # added to both distributions, as the authors' training code does


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """TDNet's distillation term KL(teacher || student): the mean over pixels of
    sum_c P log(P / Q), P = softmax(teacher) + 1e-8, Q = softmax(student) + 1e-8, T = 1.

    Both are logits at feature resolution; the teacher is resized to the student's size if
    it differs, and never receives a gradient. The teacher's distribution weighs the
    log-ratio, so the student is pushed hardest where the teacher is confident.
    """
    teacher_logits = _resize(teacher_logits.detach().float(), student_logits.shape[-2:])
    p = F.softmax(teacher_logits, dim=1) + KD_EPS
    q = F.softmax(student_logits.float(), dim=1) + KD_EPS
    return (p * (p.log() - q.log())).sum(1).mean()


class Criterion:
    """Combines the loss terms for whichever model kind is being trained.

    TDNet:   CE(out) + sub_weight CE(sub) + aux_weight CE(aux)
             [+ kd_weight KL(teacher out || out) + kd_group_weight KL(teacher group p || sub)]
    PSPNet:  CE(out) + aux_weight CE(aux)
    Grouped teacher: CE(out) + group_weight mean_g CE(group g) + aux_weight CE(aux)

    ``teacher["groups"]`` is in student-path order (``Teacher`` returns it so): path p
    learns from ``teacher["groups"][p]``.
    """

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg

    def ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if c["ohem"]:
            return ohem_cross_entropy(logits, labels, c["ohem_thresh"], c["ohem_min_kept"])
        return cross_entropy(logits, labels)

    def __call__(
        self, out: dict, labels: torch.Tensor, teacher: dict | None = None, path: int | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.cfg
        terms: dict[str, torch.Tensor] = {"ce": self.ce(out["out"], labels)}
        if "sub" in out:
            terms["sub"] = c["sub_weight"] * self.ce(out["sub"], labels)
        if "aux" in out:
            terms["aux"] = c["aux_weight"] * self.ce(out["aux"], labels)
        if "groups" in out:
            terms["groups"] = c["group_weight"] * torch.stack([self.ce(g, labels) for g in out["groups"]]).mean()
        if teacher is not None:
            terms["kd"] = c["kd_weight"] * distillation_kl(out["out"], teacher["out"])
            if "sub" in out and path is not None:
                terms["kd_group"] = c["kd_group_weight"] * distillation_kl(out["sub"], teacher["groups"][path])
        total = torch.stack(list(terms.values())).sum()
        return total, {k: float(v.detach()) for k, v in terms.items()}
