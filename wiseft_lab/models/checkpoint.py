"""Checkpoints: ``model.safetensors`` (an ImageClassifier state dict) + ``meta.json``. Loading never unpickles.

``meta.json`` holds what is needed to rebuild the model and to read the run later: ``arch``,
``pretrained`` (the zero-shot source), ``classnames``, ``templates``, ``preprocess``, ``keep_text``,
``method``, ``trainable``, ``epoch``/``step``, ``metrics`` (e.g. ``holdout/top1``) and ``config``.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def save_checkpoint(directory: str | Path, model: ImageClassifier, meta: Mapping[str, Any]) -> Path:
    return save_state_checkpoint(directory, model.state_dict(), meta)


def save_state_checkpoint(directory: str | Path, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write weights first, then metadata: a directory with ``meta.json`` is always complete."""
    directory = Path(directory)
    write_safetensors(directory / WEIGHTS_FILE, state)
    write_json(directory / META_FILE, dict(meta))
    return directory


def is_checkpoint(directory: str | Path) -> bool:
    directory = Path(directory)
    return (directory / WEIGHTS_FILE).is_file() and (directory / META_FILE).is_file()


def read_meta(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    if not is_checkpoint(directory):
        raise FileNotFoundError(
            f"No checkpoint at {directory}: expected {WEIGHTS_FILE} and {META_FILE} in that directory."
        )
    return read_json(directory / META_FILE)


def load_state_dict(directory: str | Path, device: str | torch.device = "cpu") -> StateDict:
    read_meta(directory)  # fails with a clear message when the directory is not a checkpoint
    return load_file(Path(directory) / WEIGHTS_FILE, device=str(device))


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[ImageClassifier, dict]:
    """Rebuild the classifier described by ``meta.json`` and load its weights (strictly)."""
    meta = read_meta(directory)
    clip = create_clip(meta["arch"], pretrained=None).model
    return classifier_from_state(clip, load_state_dict(directory), meta).to(device), meta


def classifier_from_state(clip: torch.nn.Module, state: StateDict, meta: dict[str, Any]) -> ImageClassifier:
    """Wrap an open_clip model (any weights) and load a checkpoint's state into it, strictly."""
    model = ImageClassifier(clip, ClassificationHead(torch.zeros_like(state["head.weight"])),
                            keep_text=bool(meta.get("keep_text", False)))
    model.load_state_dict(state, strict=True)
    return model
