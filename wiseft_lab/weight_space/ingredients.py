"""Ingredients of weight-space merges, read one tensor at a time.

An *ingredient* is either a state dict in memory or a checkpoint on disk (a directory holding ``model.safetensors``,
or that file). Ingredients on disk are never loaded whole: :func:`iter_tensors` maps the file (safetensors,
memory-mapped) and hands out one tensor at a time, re-opening the mapping every ``max_mapped_bytes`` so that the
pages of one ingredient that were read do not all stay resident. Soups, Fisher merging and the learned soup stream
their ingredients through this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from wiseft_lab.models.checkpoint import WEIGHTS_FILE, StateDict

Source = Mapping[str, torch.Tensor] | str | Path
Spec = tuple[tuple[int, ...], bool]  # (shape, is floating point)

__all__ = ["Source", "Spec", "StateDict", "check_pool", "describe", "float_keys", "iter_tensors", "load_all",
           "nbytes", "tensor_specs", "weights_file"]

# How much of one ingredient file may be mapped (and so resident) at a time while streaming it: at most this,
# and at most 1/MAPPED_FRACTION of the file (re-opening a map costs well under a millisecond).
MAX_MAPPED_BYTES = 64 << 20
MAPPED_FRACTION = 8

_FLOAT_CODES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}
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
