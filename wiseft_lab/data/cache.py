"""Decode and preprocess an evaluation set once, then reuse it for every model and alpha of a process.

Evaluation transforms end in ``ToTensor -> Normalize``. We stop before ``ToTensor`` and keep uint8
pixels (4x smaller than floats); ``x.float() / 255`` followed by the same normalisation on the device
gives bit-identical inputs. Sets above the memory budget are streamed from disk instead (and the log
says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T
from tqdm.auto import tqdm

from wiseft_lab.data.base import TaskData

log = logging.getLogger(__name__)

# Process-wide: jobs of a Hydra multirun share a process, so they share decoded eval sets too.
_MEMORY: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


@dataclass(frozen=True)
class SplitTransform:
    """A transform cut into a uint8-producing prefix and the float normalisation that followed it."""

    to_uint8: Callable
    mean: torch.Tensor | None
    std: torch.Tensor | None

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return batch.float()
        x = batch.float().div_(255)
        return x.sub_(self.mean.to(x.device)[:, None, None]).div_(self.std.to(x.device)[:, None, None])


def split_transform(transform: Callable) -> SplitTransform:
    """Cut ``Compose([..., ToTensor, Normalize])``; any other transform is kept whole (float cache)."""
    steps = getattr(transform, "transforms", None)
    if (steps and len(steps) >= 2 and isinstance(steps[-1], T.Normalize)
            and type(steps[-2]).__name__.endswith("ToTensor")):
        prefix = T.Compose([*steps[:-2], T.PILToTensor()])
        norm = steps[-1]
        return SplitTransform(prefix, torch.tensor(norm.mean, dtype=torch.float32),
                              torch.tensor(norm.std, dtype=torch.float32))
    return SplitTransform(transform, None, None)


def cache_device(mode: str, device: torch.device, needed_bytes: int, free_bytes: int | None) -> torch.device:
    """Where a decoded set lives (``eval.cache_device``): ``cpu``; ``device`` (the run's); or ``auto``: on the
    run's CUDA device when the set takes at most half of its free memory (the models and activations need the
    rest), else on the CPU. uint8 pixels on the GPU are normalised there, so scoring copies nothing per model.
    """
    if mode not in {"auto", "cpu", "device"}:
        raise ValueError(f"eval.cache_device={mode!r}: choose auto, cpu or device")
    if mode == "cpu" or device.type != "cuda":
        return torch.device("cpu")
    if mode == "device" or (free_bytes is not None and needed_bytes <= free_bytes // 2):
        return device
    return torch.device("cpu")


def free_device_memory(device: torch.device) -> int | None:
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def _loader(dataset, batch_size: int, num_workers: int, pin_memory: bool,
            generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator,
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=False)


@dataclass
class PreparedSet:
    """An eval set ready for repeated scoring: cached tensors when they fit, else a streaming loader."""

    name: str
    data: TaskData
    transform: SplitTransform
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    num_workers: int = 0

    @property
    def cached(self) -> bool:
        return self.images is not None

    def __len__(self) -> int:
        return len(self.data.dataset)

    def batches(self, batch_size: int, device: torch.device, generator: torch.Generator | None = None,
                examples: range | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised float images on ``device`` with their labels; in ``generator``'s random order when given.

        ``examples`` restricts the set to those indices (a rank's shard, :func:`wiseft_lab.distributed.shard`).
        """
        if self.cached:
            index = torch.arange(len(self.labels)) if examples is None else torch.as_tensor(examples)
            if generator is not None:
                index = index[torch.randperm(len(index), generator=generator)]
            for start in range(0, len(index), batch_size):
                rows = index[start:start + batch_size]
                if examples is None and generator is None:  # a contiguous block: a view, no gather copy
                    rows = slice(start, start + batch_size)
                x = self.images[rows].to(device, non_blocking=True)
                yield self.transform.normalize(x), self.labels[rows]
            return
        dataset = self.data.dataset if examples is None else Subset(self.data.dataset, list(examples))
        for x, y in _loader(dataset, batch_size, self.num_workers, device.type == "cuda", generator):
            yield self.transform.normalize(x.to(device, non_blocking=True)), torch.as_tensor(y)


def prepare(
    name: str,
    data: TaskData,
    transform: SplitTransform,
    *,
    cache_key: str | None,
    max_bytes: float,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | None = None,
    residence: str = "auto",
) -> PreparedSet:
    """Decode ``data`` (built with ``transform.to_uint8``) into memory once per process when it fits.

    ``cache_key`` identifies the dataset *and* its preprocessing; ``None`` disables caching. ``residence``
    (``eval.cache_device``) says whether the decoded set is kept on the run's ``device`` (see :func:`cache_device`).
    """
    prepared = PreparedSet(name, data, transform, num_workers=num_workers)
    if cache_key is None:
        return prepared
    device = device or torch.device("cpu")
    if cache_key not in _MEMORY and not _decode_into_memory(name, data, cache_key, max_bytes, batch_size,
                                                            num_workers):
        return prepared
    images, labels = _MEMORY[cache_key]
    target = cache_device(residence, device, images.numel() * images.element_size(), free_device_memory(device))
    if target.type == "cuda":
        resident = f"{cache_key}@{target}"
        if resident not in _MEMORY:
            _MEMORY[resident] = (images.to(target), labels)
            log.info("Eval set %s resident on %s (%.1f MB)", name, target, images.numel() / 1e6)
        images, labels = _MEMORY[resident]
    prepared.images, prepared.labels = images, labels
    return prepared


def _decode_into_memory(name: str, data: TaskData, cache_key: str, max_bytes: float, batch_size: int,
                        num_workers: int) -> bool:
    """Decode the whole set into ``_MEMORY[cache_key]``; False (and a warning) when it is over the budget."""
    first, _ = data.dataset[0]
    needed = first.numel() * first.element_size() * len(data.dataset)
    if needed > max_bytes:
        log.warning("Eval set %s needs %.1f GB decoded, over the cache budget of %.1f GB: streaming it from "
                    "disk for every model instead (raise eval.cache_max_gb to cache it).", name,
                    needed / 1e9, max_bytes / 1e9)
        return False
    # pinned when a GPU may read it: copies to the device then run asynchronously
    images = torch.empty((len(data.dataset), *first.shape), dtype=first.dtype, pin_memory=torch.cuda.is_available())
    labels = torch.empty(len(data.dataset), dtype=torch.long)
    offset = 0
    loader = _loader(data.dataset, batch_size, num_workers, pin_memory=False)
    for x, y in tqdm(loader, desc=f"decode {name}", leave=False, unit="batch"):
        images[offset:offset + len(y)] = x
        labels[offset:offset + len(y)] = torch.as_tensor(y)
        offset += len(y)
    _MEMORY[cache_key] = (images, labels)
    log.info("Cached eval set %s: %d images, %.1f MB", name, len(labels), needed / 1e6)
    return True


def clear_memory_cache() -> None:
    _MEMORY.clear()
