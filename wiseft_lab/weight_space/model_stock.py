"""Model Stock (Jang, Yun & Han, ECCV 2024): the pre-trained model and k >= 2 fine-tuned ones, merged per tensor.

For every floating state-dict entry ("layer"), with ``delta_i = theta_i - theta_pretrained``:

* ``cos`` is the cosine of the angle between the fine-tuned deltas: for k = 2 the one angle, for k > 2 the mean
  of the pairwise cosines (the paper derives the ratio assuming equal pairwise angles; averaging them is the
  reading of mergekit's ``model_stock`` and of this project);
* the ratio is ``t = k cos / ((k - 1) cos + 1)``, and the entry becomes
  ``t * mean_i(theta_i) + (1 - t) * theta_pretrained``.

Semantics follow the official notebook code (naver-ai/model-stock; its ``compute_angle`` / ``compute_ratio`` /
``merge``, as reproduced in public copies: the repository snapshot here holds only the pre-release README):

* one ratio per state-dict key, over the whole flattened tensor (weights and biases separately);
* ``cos = <d1, d2> / (|d1| |d2| + eps)`` clamped to [-1, 1], and ``t = k cos / ((k - 1) cos + 1 + eps)``, with
  ``eps = 1e-8``. So a zero delta gives ``cos = 0`` and ``t = 0`` (the pre-trained entry), and a delta whose norms
  multiply to about ``eps`` or less has its cosine shrunk towards 0 (``eps=0`` gives the exact formula, with
  ``cos = 0`` defined for a zero delta). Identical fine-tuned models give ``cos = 1`` and ``t = k / (k + eps)``;
* a negative cosine is not clipped: ``t < 0`` moves the entry away from the fine-tuned mean (extrapolation), and
  ``t`` diverges as ``cos -> -1 / (k - 1)`` (the official code does the same; such entries are logged);
* ``exclude``d keys (the official notebook leaves out CLIP's text-tower entries) get the plain mean of the
  fine-tuned models and no ratio, as the official ``merge`` leaves them at ``w12``;
* integer and bool buffers are copied from the pre-trained model (the official code averages every entry; this
  project never averages integers).

Cosines are computed in float64 (the official code uses float32 sums); the merge in float32 at least, cast back to
the pre-trained dtypes. Sources are state dicts or checkpoints, streamed one tensor at a time: memory is the
merged model plus one entry of each input.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from wiseft_lab.weight_space.deltas import cosine_matrix, delta_gram, floating_keys, iter_aligned
from wiseft_lab.weight_space.ingredients import Source, StateDict, check_pool

log = logging.getLogger(__name__)

MODEL_STOCK_EPS = 1e-8  # the official code's EPS, in both the cosine and the ratio


def model_stock_ratio(cosine: float, k: int, eps: float = MODEL_STOCK_EPS) -> float:
    """``t = k cos / ((k - 1) cos + 1 + eps)``: the interpolation ratio towards the mean of k fine-tuned models."""
    if k < 2:
        raise ValueError(f"Model Stock needs at least two fine-tuned models, got k={k}")
    return k * cosine / ((k - 1) * cosine + 1.0 + eps)


def mean_pairwise_cosine(gram: torch.Tensor, eps: float = MODEL_STOCK_EPS) -> float:
    """The mean over pairs i < j of the (eps-guarded, clamped) cosines of a Gram matrix of deltas."""
    k = gram.shape[0]
    rows, cols = torch.triu_indices(k, k, offset=1)
    return float(cosine_matrix(gram, eps)[rows, cols].mean())


@dataclass
class ModelStockResult:
    state: StateDict
    ratios: dict[str, float]    # per merged key: t
    cosines: dict[str, float]   # per merged key: the (mean pairwise) cosine t was computed from
    k: int

    def record(self) -> dict[str, Any]:
        """JSON-ready: k and, per key, cosine and ratio (the paper's per-layer plots)."""
        return {"k": self.k, "layers": [{"key": key, "cosine": self.cosines[key], "ratio": self.ratios[key]}
                                        for key in self.ratios]}


def model_stock(pretrained: Source, finetuned: Sequence[Source], *, exclude: Collection[str] = (),
                eps: float = MODEL_STOCK_EPS, names: Sequence[str] | None = None) -> ModelStockResult:
    """Merge ``finetuned`` (k >= 2 models fine-tuned from ``pretrained``) per tensor by Model Stock's ratio."""
    k = len(finetuned)
    if k < 2:
        raise ValueError(f"Model Stock needs at least two fine-tuned models, got {k}")
    sources = [pretrained, *finetuned]
    labels = ["pretrained", *(names if names is not None else [f"finetuned #{i}" for i in range(k)])]
    specs = check_pool(sources, labels)
    merged_keys = set(floating_keys(specs, exclude))
    state: StateDict = {}
    ratios: dict[str, float] = {}
    cosines: dict[str, float] = {}
    for key, (theta_0, *thetas) in iter_aligned(sources):
        if not specs[key][1]:  # integer / bool buffers
            state[key] = theta_0.clone()
            continue
        compute = torch.promote_types(theta_0.dtype, torch.float32)
        mean = sum(t.to(compute) for t in thetas) / k
        if key not in merged_keys:  # excluded
            state[key] = mean.to(theta_0.dtype)
            continue
        cosine = mean_pairwise_cosine(delta_gram(theta_0, thetas), eps)
        ratio = model_stock_ratio(cosine, k, eps)
        state[key] = (mean * ratio + theta_0.to(compute) * (1.0 - ratio)).to(theta_0.dtype)
        ratios[key], cosines[key] = ratio, cosine
    negative = [key for key, c in cosines.items() if c < 0]
    if negative:
        log.warning("Model Stock: %d tensors have a negative cosine between the fine-tuned deltas (e.g. %s): their "
                    "ratio is negative (extrapolation away from the fine-tuned mean), as in the official code",
                    len(negative), negative[0])
    return ModelStockResult(state, ratios, cosines, k)
