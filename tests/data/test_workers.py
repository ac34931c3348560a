"""DataLoader workers start inside joblib's loky workers (the processes of ``hydra/launcher=joblib``)."""

from __future__ import annotations

import torch
from joblib import Parallel, delayed
from torch.utils.data import DataLoader, TensorDataset

from wiseft_lab.data.workers import worker_context


def _sum_with_workers(use_context: bool) -> str:
    data = TensorDataset(torch.arange(8.0))
    context = worker_context(2) if use_context else None
    try:
        return str(sum(float(b[0].sum()) for b in DataLoader(data, batch_size=4, num_workers=2,
                                                              multiprocessing_context=context)))
    except Exception as err:  # noqa: BLE001 - reported back to the test
        return f"{type(err).__name__}: {err}"


def test_an_ordinary_process_keeps_its_own_start_method():
    assert worker_context(0) is None and worker_context(2) is None


def test_workers_start_inside_a_loky_worker():
    plain, chosen = Parallel(n_jobs=2, backend="loky")(delayed(_sum_with_workers)(c) for c in (False, True))
    assert "no attribute 'env'" in plain  # the failure this guards against, as loky leaves it
    assert chosen == "28.0"
