"""What the run context resolves once: DataLoader worker counts from ``auto`` and the cores this process has."""

from __future__ import annotations

import pytest
import torch

from wiseft_lab.config import ConfigError
from wiseft_lab.pipeline import context
from wiseft_lab.pipeline.context import apply_threads, resolve_workers


@pytest.mark.parametrize(("cores", "expected"), [(1, 0), (2, 1), (16, 8), (64, 8)])
def test_auto_workers_leave_a_core_to_the_main_process(monkeypatch, cores, expected):
    monkeypatch.setattr(context.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert resolve_workers("auto", "data.num_workers") == expected
    assert resolve_workers(3, "data.num_workers") == 3  # an explicit count is kept


@pytest.mark.parametrize("value", [-1, "four", 1.5, True])
def test_a_bad_worker_count_names_the_key(value):
    with pytest.raises(ConfigError, match=r"eval\.num_workers=.*>= 0, or auto"):
        resolve_workers(value, "eval.num_workers")


def test_threads_cap_torch_and_null_keeps_its_choice():
    before = torch.get_num_threads()
    try:
        assert apply_threads(None) == before
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
