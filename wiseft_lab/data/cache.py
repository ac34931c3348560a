"""Decode and preprocess an evaluation set once, then reuse it for every model and alpha of a process.

Evaluation transforms end in ``ToTensor -> Normalize``. We stop before ``ToTensor`` and keep uint8
pixels (4x smaller than floats); ``x.float() / 255`` followed by the same normalisation on the device
gives bit-identical inputs. Sets above the memory budget are streamed from disk instead (and the log
says so).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T

from wiseft_lab.data.base import TaskData
from wiseft_lab.data.workers import worker_context

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
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=False,
                      multiprocessing_context=worker_context(num_workers))


@dataclass(frozen=True)
class PendingDecode:
    """A set that fits the cache, not decoded yet: the first full pass over it decodes it (see ``batches``)."""

    cache_key: str
    shape: tuple[int, ...]  # one decoded example
    dtype: torch.dtype
    residence: str          # eval.cache_device
    device: torch.device    # the run's

    def nbytes(self, n: int) -> int:
        return n * math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


@dataclass
class PreparedSet:
    """An eval set ready for repeated scoring: cached tensors when they fit, else a streaming loader.

    A set that fits is decoded during its first full pass, by the loader's workers while the model scores the
    batches already decoded (the decoding overlaps the first model), and served from memory after that.
    """

    name: str
    data: TaskData
    transform: SplitTransform
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    num_workers: int = 0
    pending: PendingDecode | None = None

    @property
    def cached(self) -> bool:
        """Held in memory, or to be after its first full pass."""
        return self.images is not None or self.pending is not None

    @property
    def cache_bytes(self) -> int:
        if self.images is not None:
            return self.images.nbytes
        return self.pending.nbytes(len(self)) if self.pending is not None else 0

    def __len__(self) -> int:
        return len(self.data.dataset)

    def batches(self, batch_size: int, device: torch.device, generator: torch.Generator | None = None,
                examples: range | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised float images on ``device`` with their labels; in ``generator``'s random order when given.

        ``examples`` restricts the set to those indices (a rank's shard, :func:`wiseft_lab.distributed.shard`).
        """
        if self.pending is not None:
            if generator is None and examples is None:  # the first full pass decodes while it scores
                for x, y in self._decode(batch_size):
                    yield self.transform.normalize(x.to(device, non_blocking=True)), y
                return
            for _ in self._decode(batch_size):  # a shuffled or sharded first use: everything first
                pass
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

    def _decode(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the uint8 batches as the loader decodes them, filling the cache; kept only when the pass completes."""
        pending = self.pending
        # pinned when a GPU may read it: copies to the device then run asynchronously
        images = torch.empty((len(self), *pending.shape), dtype=pending.dtype, pin_memory=torch.cuda.is_available())
        labels = torch.empty(len(self), dtype=torch.long)
        offset = 0
        for x, y in _loader(self.data.dataset, batch_size, self.num_workers, pin_memory=False):
            rows = slice(offset, offset + len(y))
            images[rows], labels[rows] = x, torch.as_tensor(y)
            offset += len(y)
            yield x, labels[rows]
        _MEMORY[pending.cache_key] = (images, labels)
        log.debug("Cached eval set %s: %d images, %.1f MB", self.name, len(labels), images.nbytes / 1e6)
        self.images, self.labels = _resident(self.name, pending.cache_key, pending.residence, pending.device)
        self.pending = None


def _resident(name: str, cache_key: str, residence: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoded set where it lives (:func:`cache_device`): the CPU copy, or one kept on the run's GPU."""
    images, labels = _MEMORY[cache_key]
    target = cache_device(residence, device, images.nbytes, free_device_memory(device))
    if target.type != "cuda":
        return images, labels
    resident = f"{cache_key}@{target}"
    if resident not in _MEMORY:
        _MEMORY[resident] = (images.to(target), labels)
        log.info("Eval set %s resident on %s (%.1f MB)", name, target, images.nbytes / 1e6)
    return _MEMORY[resident]


def prepare(
    name: str,
    data: TaskData,
    transform: SplitTransform,
    *,
    cache_key: str | None,
    max_bytes: float,
    num_workers: int = 0,
    device: torch.device | None = None,
    residence: str = "auto",
) -> PreparedSet:
    """Keep ``data`` (built with ``transform.to_uint8``) in memory once per process when it fits.

    ``cache_key`` identifies the dataset *and* its preprocessing; ``None`` disables caching. ``residence``
    (``eval.cache_device``) says whether the decoded set is kept on the run's ``device`` (see :func:`cache_device`).
    A set seen before in this process is served from memory at once; a new one is decoded by its first full pass.
    """
    prepared = PreparedSet(name, data, transform, num_workers=num_workers)
    if cache_key is None:
        return prepared
    device = device or torch.device("cpu")
    if cache_key in _MEMORY:
        prepared.images, prepared.labels = _resident(name, cache_key, residence, device)
        return prepared
    first, _ = data.dataset[0]  # one decoded example: the set's size in memory
    pending = PendingDecode(cache_key, tuple(first.shape), first.dtype, residence, device)
    needed = pending.nbytes(len(data.dataset))
    if needed > max_bytes:
        log.warning("Eval set %s needs %.1f GB decoded, over the cache budget of %.1f GB: streaming it from "
                    "disk for every model instead (raise eval.cache_max_gb to cache it).", name,
                    needed / 1e9, max_bytes / 1e9)
        return prepared
    prepared.pending = pending
    return prepared


def clear_memory_cache() -> None:
    _MEMORY.clear()
