"""Checkpoints: ``model.safetensors`` (an ImageClassifier state dict) + ``meta.json``. Loading never unpickles.

:class:`CheckpointMeta` is the typed record of ``meta.json``, and :func:`save_checkpoint` the one place that writes
it: every fine-tuned, merged, souped or per-epoch checkpoint is written through it, and :func:`read_meta` reads
it back (a key this version does not know is kept in ``extra``, so a newer checkpoint still loads).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from wiseft_lab.io import read_json, write_json, write_safetensors
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.factory import create_clip
from wiseft_lab.models.zeroshot import ClassificationHead

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"

StateDict = dict[str, torch.Tensor]


@dataclass
class CheckpointMeta:
    """What is needed to rebuild a checkpoint's model and to read its run later.

    ``head``: ``linear`` (a free head) or ``text`` (derived from the text tower, rebuilt after every load or merge
    from ``classnames`` and ``templates``). ``method``: ``zeroshot``, a fine-tuning method, or what a merge made
    (``wiseft_alpha0.5``, ``greedy_soup``, ...). ``precision``: the resolved precision of the run that wrote it.
    """

    arch: str
    classnames: list[str]
    templates: list[str]
    pretrained: str | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    keep_text: bool = False
    head: str = "linear"
    method: str = "zeroshot"
    dataset: str | None = None
    seed: int | None = None
    precision: str | None = None
    trainable: list[str] = field(default_factory=list)
    stage: str | None = None
    epoch: int | None = None
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    merge: dict[str, Any] | None = None
    soup: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> CheckpointMeta:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**{k: v for k, v in record.items() if v is not None}, **self.extra}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> CheckpointMeta:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in record]
        if missing:
            raise ValueError(f"checkpoint metadata lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in record.items() if k in known},
                   extra={k: v for k, v in record.items() if k not in known})


def save_checkpoint(directory: str | Path, weights: torch.nn.Module | Mapping[str, torch.Tensor],
                    meta: CheckpointMeta) -> Path:
    """Write weights first, then metadata: a directory with ``meta.json`` is always complete."""
    directory = Path(directory)
    state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    write_safetensors(directory / WEIGHTS_FILE, state)
    write_json(directory / META_FILE, meta.to_dict())
    return directory


def is_checkpoint(directory: str | Path) -> bool:
    directory = Path(directory)
    return (directory / WEIGHTS_FILE).is_file() and (directory / META_FILE).is_file()


def read_meta(directory: str | Path) -> CheckpointMeta:
    directory = Path(directory)
    if not is_checkpoint(directory):
        raise FileNotFoundError(
            f"No checkpoint at {directory}: expected {WEIGHTS_FILE} and {META_FILE} in that directory."
        )
    try:
        return CheckpointMeta.from_dict(read_json(directory / META_FILE))
    except ValueError as err:
        raise ValueError(f"{directory / META_FILE}: {err}") from err


def load_state_dict(directory: str | Path, device: str | torch.device = "cpu") -> StateDict:
    read_meta(directory)  # fails with a clear message when the directory is not a checkpoint
    return load_file(Path(directory) / WEIGHTS_FILE, device=str(device))


def load_checkpoint(directory: str | Path,
                    device: str | torch.device = "cpu") -> tuple[ImageClassifier, CheckpointMeta]:
    """Rebuild the classifier described by ``meta.json`` and load its weights (strictly)."""
    meta = read_meta(directory)
    clip = create_clip(meta.arch, pretrained=None, load_tokenizer=False).model
    return classifier_from_state(clip, load_state_dict(directory), meta).to(device), meta


def classifier_from_state(clip: torch.nn.Module, state: StateDict, meta: CheckpointMeta) -> ImageClassifier:
    """Wrap an open_clip model (any weights) and load a checkpoint's state into it, strictly."""
    model = ImageClassifier(clip, ClassificationHead(torch.zeros_like(state["head.weight"])), keep_text=meta.keep_text)
    model.load_state_dict(state, strict=True)
    return model
