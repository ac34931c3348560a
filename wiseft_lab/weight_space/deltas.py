"""Deltas from a shared start (``theta_i - theta_0``): several checkpoints read in lockstep, one tensor at a time.

Model Stock, the error landscape and the angle analyses all need, for every state-dict entry, that entry of the
start and of each other model at once. :func:`iter_aligned` hands them out together without loading any model
whole (checkpoints on disk are streamed by :func:`~wiseft_lab.weight_space.soups.iter_tensors`), and
:func:`delta_gram` turns one entry's tensors into the inner products of its deltas, accumulated in float64.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence

import torch

from wiseft_lab.weight_space.ingredients import Source, Spec, float_keys, iter_tensors, tensor_specs


def iter_aligned(sources: Sequence[Source],
                 keys: Sequence[str] | None = None) -> Iterator[tuple[str, list[torch.Tensor]]]:
    """``(key, [tensor of sources[0], tensor of sources[1], ...])`` for every key (``keys``: those, in that order).

    The sources must share keys and shapes: callers check them with :func:`~wiseft_lab.weight_space.soups.check_pool`
    first (which also gives the specs they choose ``keys`` from). Tensors of files are views of their memory maps,
    valid until dropped.
    """
    order = list(tensor_specs(sources[0])) if keys is None else list(keys)
    streams = [iter_tensors(source, keys=order) for source in sources]
    for key in order:
        tensors = []
        for stream in streams:
            got, tensor = next(stream)
            if got != key:  # iter_tensors yields the requested keys in order; anything else is a bug
                raise RuntimeError(f"Streams out of step: expected {key!r}, got {got!r}")
            tensors.append(tensor)
        yield key, tensors


def floating_keys(specs: dict[str, Spec], exclude: Collection[str] = ()) -> list[str]:
    """The floating-point entries (in the specs' order) minus ``exclude``: what the geometry is measured over."""
    unknown = sorted(set(exclude) - set(specs))
    if unknown:
        raise KeyError(f"Excluded keys not in the state dict: {unknown[:8]}")
    return [k for k in float_keys(specs) if k not in exclude]


def delta_gram(origin: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
    """``G[i, j] = <others[i] - origin, others[j] - origin>`` over all elements, in float64 (shape (n, n))."""
    deltas = torch.stack([(t.to(torch.float64) - origin.to(torch.float64)).reshape(-1) for t in others])
    return deltas @ deltas.T


def cosine_matrix(gram: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """``G[i, j] / (sqrt(G[i, i] G[j, j]) + eps)`` clamped to [-1, 1]; 0 where a delta is zero (and ``eps`` is 0)."""
    norms = gram.diagonal().clamp_min(0.0).sqrt()
    denominator = torch.outer(norms, norms) + eps
    cosines = torch.where(denominator > 0, gram / torch.where(denominator > 0, denominator, 1.0), 0.0)
    return cosines.clamp(-1.0, 1.0)


def degrees(cosine: float) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def shared_except(sources: Sequence[Source], prefix: str) -> bool:
    """Whether every entry of the sources outside ``prefix`` (e.g. ``head.``) is the same in all of them, bit for bit:
    the pool of linear-classifier fine-tunes of one model."""
    keys = [k for k in tensor_specs(sources[0]) if not k.startswith(prefix)]
    return all(torch.equal(tensors[0], other) for _, tensors in iter_aligned(sources, keys) for other in tensors[1:])
