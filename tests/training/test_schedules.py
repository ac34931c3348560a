"""The warm-up + cosine schedule reproduces WiSE-FT's cosine_lr, per optimisation step."""

from __future__ import annotations

import math

import pytest
import torch

from wiseft_lab.training.schedules import Constant, WarmupCosine, warmup_cosine_factor


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1 / 4), (1, 2 / 4), (3, 1.0), (4, 1.0), (8, 0.5), (12 - 1, 0.5 * (1 + math.cos(math.pi * 7 / 8)))],
)
def test_warmup_cosine_values(step, expected):
    # warmup 4, total 12: lr = base*(step+1)/4 for step < 4, then 0.5*(1+cos(pi*(step-4)/8))*base.
    assert warmup_cosine_factor(step, warmup_steps=4, total_steps=12) == pytest.approx(expected)


def test_scheduler_sets_every_param_group():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.AdamW([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 0.1}])
    sched = WarmupCosine(opt, total_steps=10, warmup_steps=2)
    assert sched.set_step(0) == pytest.approx(0.5)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.05)
    sched.set_step(6)  # halfway through the cosine part
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.05])
    assert sched.set_step(10) == pytest.approx(0.0)


def test_constant_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    sched = Constant(opt, total_steps=5, warmup_steps=0)
    assert [sched.set_step(s) for s in range(5)] == pytest.approx([0.3] * 5)
