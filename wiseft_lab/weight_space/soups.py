"""Model soups in weight space: reading ingredients one at a time, the uniform soup and the greedy soup.

An *ingredient* is either a state dict in memory or a checkpoint on disk (a directory holding
``model.safetensors``, or that file). Ingredients on disk are never loaded whole: :func:`iter_tensors` maps the
file (safetensors, memory-mapped) and hands out one tensor at a time, re-opening the mapping every
``max_mapped_bytes`` so that the pages of one ingredient that were read do not all stay resident.

Floating tensors are averaged; integer and bool buffers cannot be, and are copied from the first ingredient
(the best one, for the greedy soup).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from wiseft_lab.models.checkpoint import WEIGHTS_FILE

log = logging.getLogger(__name__)

Source = Mapping[str, torch.Tensor] | str | Path
StateDict = dict[str, torch.Tensor]
Spec = tuple[tuple[int, ...], bool]  # (shape, is floating point)

# How much of one ingredient file may be mapped (and so resident) at a time while streaming it: at most this,
# and at most 1/MAPPED_FRACTION of the file (re-opening a map costs well under a millisecond).
MAX_MAPPED_BYTES = 64 << 20
MAPPED_FRACTION = 8

_FLOAT_CODES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}
ACCUMULATE = {"fp32": torch.float32, "fp64": torch.float64}


def accumulate_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in ACCUMULATE:
        raise ValueError(f"Accumulation must be one of {sorted(ACCUMULATE)}, not {name!r}")
    return ACCUMULATE[name]


def weights_file(source: str | Path) -> Path:
    """``model.safetensors`` of a checkpoint directory, or the file itself."""
    path = Path(source)
    return path / WEIGHTS_FILE if path.is_dir() else path


def describe(source: Source) -> str:
    return "<state dict in memory>" if isinstance(source, Mapping) else str(source)


def tensor_specs(source: Source) -> dict[str, Spec]:
    """Key -> (shape, is floating) in the ingredient's order, without reading tensor data."""
    if isinstance(source, Mapping):
        return {k: (tuple(v.shape), v.is_floating_point()) for k, v in source.items()}
    path = weights_file(source)
    if not path.is_file():
        raise FileNotFoundError(f"No weights at {path} (expected a checkpoint directory with {WEIGHTS_FILE}).")
    with safe_open(path, framework="pt") as handle:
        specs = {}
        keys = handle.offset_keys() if hasattr(handle, "offset_keys") else handle.keys()  # file order: sequential
        for key in keys:
            info = handle.get_slice(key)
            specs[key] = (tuple(info.get_shape()), info.get_dtype() in _FLOAT_CODES)
        return specs


def nbytes(source: Source) -> int:
    if isinstance(source, Mapping):
        return sum(v.numel() * v.element_size() for v in source.values())
    return weights_file(source).stat().st_size


def iter_tensors(source: Source, keys: Sequence[str] | None = None,
                 max_mapped_bytes: int = MAX_MAPPED_BYTES) -> Iterator[tuple[str, torch.Tensor]]:
    """``(key, tensor)`` pairs of one ingredient, one tensor at a time (``keys``: that subset, in that order).

    The file is re-mapped every ``min(max_mapped_bytes, size / 8)`` bytes read, so that at most that much of it
    is resident at once (the pages of a mapping that were read count in the process's RSS until it is closed).
    Tensors of a file are views of its memory map: valid until the consumer drops them, read-only in spirit
    (clone what must be kept or modified).
    """
    if isinstance(source, Mapping):
        for key in keys if keys is not None else list(source):
            yield key, source[key]
        return
    path = weights_file(source)
    budget = min(max_mapped_bytes, path.stat().st_size // MAPPED_FRACTION)
    handle, mapped = None, 0
    try:
        for key in keys if keys is not None else tensor_specs(path):
            if handle is None or mapped >= budget:
                handle = None  # drop the previous mapping before opening the next one
                handle = safe_open(path, framework="pt")
                mapped = 0
            tensor = handle.get_tensor(key)
            mapped += tensor.numel() * tensor.element_size()
            yield key, tensor
    finally:
        handle = None


def load_all(source: Source, device: str | torch.device = "cpu") -> StateDict:
    """A private copy of every tensor (safe to keep and modify)."""
    return {k: t.to(device=device, copy=True) for k, t in iter_tensors(source)}


def check_pool(sources: Sequence[Source], names: Sequence[str] | None = None) -> dict[str, Spec]:
    """Refuse ingredients whose keys or shapes differ from the first's, naming the first mismatch.

    Returns the first ingredient's specs (key -> (shape, is floating)).
    """
    if not sources:
        raise ValueError("A soup needs at least one ingredient; the pool is empty.")
    names = list(names) if names is not None else [f"#{i}" for i in range(len(sources))]
    reference = tensor_specs(sources[0])
    for name, source in zip(names[1:], sources[1:], strict=True):
        specs = tensor_specs(source)
        problem = None
        for key, (shape, floating) in reference.items():
            if key not in specs:
                problem = f"key {key!r} of {names[0]!r} is missing"
            elif specs[key][0] != shape:
                problem = f"key {key!r} has shape {specs[key][0]} vs {shape} in {names[0]!r}"
            elif specs[key][1] != floating:
                problem = f"key {key!r} is {'' if specs[key][1] else 'not '}floating point, unlike in {names[0]!r}"
            if problem:
                break
        if problem is None:
            extra = [k for k in specs if k not in reference]
            if extra:
                problem = f"key {extra[0]!r} is not in {names[0]!r}"
        if problem:
            raise ValueError(f"Ingredient {name!r} ({describe(source)}) does not match the pool: {problem}. "
                             "All ingredients of a soup must share keys and shapes (same architecture and head).")
    return reference


def float_keys(specs: Mapping[str, Spec]) -> list[str]:
    return [k for k, (_, floating) in specs.items() if floating]


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
    holdout: float          # held-out top-1 of the candidate soup (step 0: the best ingredient's recorded one)
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
                candidate_into: Mapping[str, torch.Tensor] | None = None) -> GreedyResult:
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
    """
    if len(holdout) != len(sources):
        raise ValueError(f"{len(sources)} ingredients but {len(holdout)} held-out accuracies")
    accepts(0.0, 0.0, accept)  # validates the rule before any work
    names = list(names) if names is not None else [f"#{i}" for i in range(len(sources))]
    specs = check_pool(sources, names)
    floats = set(float_keys(specs))
    acc_dtype = accumulate_dtype(accumulate)
    order = greedy_order(holdout)
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
