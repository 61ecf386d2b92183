"""The distillation term is KL(teacher || student), as the authors train (issue 20, item 3)."""

from __future__ import annotations

import math

import pytest
import torch

from tdnet_cli.config import DEFAULTS
from tdnet_cli.losses import KD_EPS, Criterion, distillation_kl

EPS = KD_EPS


def _logits(*probs: tuple[float, ...]) -> torch.Tensor:
    """(1, C, 1, n) logits whose softmax at pixel i is probs[i]."""
    return torch.log(torch.tensor(probs, dtype=torch.float64)).T.reshape(1, len(probs[0]), 1, len(probs)).float()


def _kl(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    """sum_c P log(P / Q) with 1e-8 added to both, in float64."""
    return sum((a + EPS) * math.log((a + EPS) / (b + EPS)) for a, b in zip(p, q, strict=True))


def test_kl_is_teacher_weighted_and_equals_the_closed_form():
    teacher, student = (0.25, 0.75), (0.5, 0.5)
    got = distillation_kl(_logits(student), _logits(teacher)).item()
    closed = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # KL(teacher || student)
    reversed_ = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # KL(student || teacher)
    assert got == pytest.approx(closed, rel=1e-6) and got == pytest.approx(_kl(teacher, student), rel=1e-6)
    assert abs(got - reversed_) > 0.01  # 0.1308 against 0.1438: the direction is visible


def test_kl_is_the_mean_over_pixels_of_the_per_pixel_sum():
    teacher = [(0.1, 0.2, 0.7), (0.6, 0.3, 0.1)]
    student = [(0.3, 0.3, 0.4), (0.2, 0.5, 0.3)]
    got = distillation_kl(_logits(*student), _logits(*teacher)).item()
    assert got == pytest.approx(sum(_kl(t, s) for t, s in zip(teacher, student, strict=True)) / 2, rel=1e-6)
    assert distillation_kl(_logits(*teacher), _logits(*teacher)).item() == pytest.approx(0.0, abs=1e-7)


def test_the_epsilon_keeps_a_certain_teacher_finite_and_only_the_student_gets_a_gradient():
    teacher = torch.tensor([[[[60.0]], [[-60.0]]]], requires_grad=True)  # P = (1, ~1e-52)
    student = torch.tensor([[[[-40.0]], [[40.0]]]], requires_grad=True)  # Q = (~2e-35, 1)
    loss = distillation_kl(student, teacher)
    assert math.isfinite(loss.item())
    # Q's first entry is floored at 1e-8: the loss is about (1 + 1e-8) log((1 + 1e-8) / 1e-8)
    assert loss.item() == pytest.approx(math.log(1e8), rel=1e-4)
    loss.backward()
    assert teacher.grad is None and student.grad is not None and torch.isfinite(student.grad).all()


def test_a_teacher_at_another_size_is_resized_to_the_students():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 19, 9, 17), torch.randn(2, 19, 5, 9)
    up = torch.nn.functional.interpolate(teacher, size=(9, 17), mode="bilinear", align_corners=True)
    assert distillation_kl(student, teacher).item() == pytest.approx(distillation_kl(student, up).item(), rel=1e-6)


def test_criterion_distils_teacher_to_student_with_path_ordered_groups():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (1, 4, 4))
    out = {"out": torch.randn(1, 3, 4, 4), "sub": torch.randn(1, 3, 4, 4)}
    teacher = {"out": torch.randn(1, 3, 4, 4), "groups": tuple(torch.randn(1, 3, 4, 4) for _ in range(4))}
    cfg = {**DEFAULTS["loss"], "ohem": False}
    _, terms = Criterion(cfg)(out, labels, teacher, path=2)
    assert terms["kd"] == pytest.approx(cfg["kd_weight"] * distillation_kl(out["out"], teacher["out"]).item(), rel=1e-5)
    assert terms["kd_group"] == pytest.approx(
        cfg["kd_group_weight"] * distillation_kl(out["sub"], teacher["groups"][2]).item(), rel=1e-5
    )
