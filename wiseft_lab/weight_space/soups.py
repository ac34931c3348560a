"""Model soups in weight space: the uniform soup and the greedy soup, over ingredients streamed one tensor at a
time (:mod:`wiseft_lab.weight_space.ingredients`).

Floating tensors are averaged; integer and bool buffers cannot be, and are copied from the first ingredient
(the best one, for the greedy soup).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from wiseft_lab.weight_space.ingredients import (
    Source,
    Spec,
    StateDict,
    check_pool,
    float_keys,
    iter_tensors,
)

log = logging.getLogger(__name__)

ACCUMULATE = {"fp32": torch.float32, "fp64": torch.float64}


def accumulate_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in ACCUMULATE:
        raise ValueError(f"Accumulation must be one of {sorted(ACCUMULATE)}, not {name!r}")
    return ACCUMULATE[name]


def _compute_dtype(dtype: torch.dtype, accumulate: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, accumulate)


class _Scratch:
    """One reusable buffer per dtype for per-tensor temporaries: no allocation (and no allocator growth) per step."""

    def __init__(self, specs: Mapping[str, Spec]):
        self.numel = max((_numel(shape) for shape, floating in specs.values() if floating), default=0)
        self.buffers: dict[torch.dtype, torch.Tensor] = {}

    def like(self, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in self.buffers:
            self.buffers[dtype] = torch.empty(self.numel, dtype=dtype)
        return self.buffers[dtype][:_numel(shape)].view(shape)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ----------------------------------------------------------------------------------------------- uniform
def uniform_soup(sources: Sequence[Source], *, accumulate: str | torch.dtype = "fp32",
                 names: Sequence[str] | None = None,
                 on_ingredient: Callable[[int], None] | None = None) -> StateDict:
    """The mean of all ingredients, accumulated one ingredient (and one tensor) at a time.

    Memory: one accumulator (in ``accumulate`` precision, fp32 or fp64) plus one tensor of the ingredient being
    read. The result has the first ingredient's dtypes; with fp64 accumulation a soup of identical fp32
    models is that model bit for bit.
    """
    specs = check_pool(sources, names)
    acc_dtype = accumulate_dtype(accumulate)
    floats = set(float_keys(specs))
    acc: StateDict = {}
    dtypes: dict[str, torch.dtype] = {}
    fixed: StateDict = {}
    scratch = _Scratch(specs)
    for index, source in enumerate(sources):
        for key, tensor in iter_tensors(source):
            if key not in floats:
                if index == 0:
                    fixed[key] = tensor.clone()
                continue
            if index == 0:
                dtypes[key] = tensor.dtype
                acc[key] = torch.zeros(tensor.shape, dtype=_compute_dtype(tensor.dtype, acc_dtype))
            if tensor.dtype != acc[key].dtype:  # convert into the scratch buffer, not a new tensor
                tensor = scratch.like(tensor.shape, acc[key].dtype).copy_(tensor)
            acc[key].add_(tensor)
        if on_ingredient is not None:
            on_ingredient(index)
    n = len(sources)
    out: StateDict = {}
    for key in specs:  # the first ingredient's key order; accumulators are released as they are converted
        out[key] = fixed.pop(key) if key not in floats else acc.pop(key).div_(n).to(dtypes[key])
    return out


# ----------------------------------------------------------------------------------------------- greedy
ACCEPT = ("gt", "ge")


def greedy_order(holdout: Sequence[float]) -> list[int]:
    """Indices by held-out accuracy, descending; ties put the *later* ingredient first.

    This is what the reference does: ``sorted(..., key=accuracy)`` (stable, ascending) then ``reverse()``.
    """
    return sorted(range(len(holdout)), key=lambda i: (float(holdout[i]), i), reverse=True)


def accepts(candidate: float, best: float, rule: str) -> bool:
    if rule not in ACCEPT:
        raise ValueError(f"merge.accept must be one of {ACCEPT} (gt: strictly better, the reference; ge: >=)")
    return candidate > best if rule == "gt" else candidate >= best


@dataclass
class GreedyStep:
    step: int
    candidate: str
    holdout: float          # held-out top-1 of the candidate soup (step 0: the starting ingredient's recorded one)
    best_before: float | None
    accepted: bool
    n_ingredients: int      # ingredients in the soup after this step


@dataclass
class GreedyResult:
    state: StateDict
    ingredients: list[str]          # accepted, in the order they entered the soup
    order: list[str]                # every ingredient, in the order they were tried
    trace: list[GreedyStep]
    holdout: float                  # held-out top-1 of the final soup
    accept: str = "gt"
    extra: dict[str, Any] = field(default_factory=dict)

    def trace_rows(self) -> list[dict[str, Any]]:
        return [asdict(step) for step in self.trace]


def greedy_soup(sources: Sequence[Source], holdout: Sequence[float], score: Callable[[StateDict], float], *,
                accept: str = "gt", names: Sequence[str] | None = None, accumulate: str | torch.dtype = "fp32",
                on_step: Callable[[GreedyStep], None] | None = None,
                candidate_into: Mapping[str, torch.Tensor] | None = None, first: int | None = None,
                keys: Collection[str] | None = None) -> GreedyResult:
    """The greedy soup of the model-soups paper (Wortsman et al., 2022), as the official code computes it.

    Ingredients are sorted by ``holdout`` (descending, ties: later first); the soup starts as the best one,
    with its recorded held-out accuracy. Each following ingredient is tried once: the candidate is
    ``soup * n / (n + 1) + new / (n + 1)`` and it replaces the soup when ``score(candidate)`` is strictly
    higher (``accept='ge'``: higher or equal) than the best held-out accuracy so far.

    Memory: the soup, one candidate, and one tensor of the ingredient being read (plus whatever ``score``
    loads the candidate into). ``candidate_into``: tensors to build every candidate in, typically the
    ``state_dict()`` of the model that ``score`` loads it into (it shares the model's parameters, and loading
    a tensor onto itself is free): the candidate then costs no memory of its own. Accepted candidates are
    copied into the soup, in place.

    ``first``: the ingredient the soup starts from instead of the best one (the others are tried in the same
    order): a cross-dataset soup starts from the target's zero-shot model, whose held-out accuracy the
    ingredients must not lower. ``keys``: the floating entries to average (default: all of them); the others
    stay the starting ingredient's, as integer buffers do (a cross-dataset soup keeps the target's head exactly).
    """
    if len(holdout) != len(sources):
        raise ValueError(f"{len(sources)} ingredients but {len(holdout)} held-out accuracies")
    accepts(0.0, 0.0, accept)  # validates the rule before any work
    names = list(names) if names is not None else [f"#{i}" for i in range(len(sources))]
    specs = check_pool(sources, names)
    floats = {k for k in float_keys(specs) if keys is None or k in keys}
    acc_dtype = accumulate_dtype(accumulate)
    order = greedy_order(holdout)
    if first is not None:
        order = [first, *(i for i in order if i != first)]
    first = order[0]
    soup: StateDict = {}
    out_dtypes: dict[str, torch.dtype] = {}
    for key, tensor in iter_tensors(sources[first]):
        out_dtypes[key] = tensor.dtype
        keep = torch.promote_types(tensor.dtype, torch.float32) if key in floats else tensor.dtype
        soup[key] = tensor.to(dtype=keep, copy=True)
    best = float(holdout[first])
    ingredients = [names[first]]
    trace = [GreedyStep(0, names[first], best, None, True, 1)]
    if on_step is not None:
        on_step(trace[0])
    scratch = _Scratch(specs)
    for step, index in enumerate(order[1:], start=1):
        n = len(ingredients)
        candidate: StateDict = {}
        for key, tensor in iter_tensors(sources[index]):
            kept = soup[key]
            if key not in floats:
                candidate[key] = kept
                continue
            compute = _compute_dtype(kept.dtype, acc_dtype)
            target = candidate_into.get(key) if candidate_into is not None else None
            in_place = target is not None and target.dtype == kept.dtype == compute and target.device == kept.device
            if compute == kept.dtype:  # the reference's arithmetic: both products rounded, then their sum
                mixed = torch.mul(kept, n / (n + 1.0), out=target if in_place else None)
                mixed.add_(torch.mul(tensor.to(compute), 1.0 / (n + 1), out=scratch.like(tensor.shape, compute)))
            else:
                mixed = kept.to(compute) * (n / (n + 1.0)) + tensor.to(compute) * (1.0 / (n + 1))
            if target is not None and not in_place:
                target.copy_(mixed)
                mixed = target
            candidate[key] = mixed if target is not None else mixed.to(kept.dtype)
        value = float(score(candidate))
        accepted = accepts(value, best, accept)
        record = GreedyStep(step, names[index], value, best, accepted, n + int(accepted))
        trace.append(record)
        if accepted:
            if candidate_into is None:
                soup = candidate
            else:  # the candidate lives in borrowed tensors that the next candidate overwrites
                for key in floats:
                    soup[key].copy_(candidate[key])
            best = value
            ingredients.append(names[index])
        del candidate
        log.info("Greedy soup step %d/%d: %s -> held-out %.4f (best %.4f): %s", step, len(order) - 1,
                 names[index], value, record.best_before, "added" if accepted else "rejected")
        if on_step is not None:
            on_step(record)
    state = {k: v.to(out_dtypes[k]) for k, v in soup.items()}
    return GreedyResult(state, ingredients, [names[i] for i in order], trace, best, accept)
