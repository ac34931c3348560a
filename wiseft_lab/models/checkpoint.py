"""Checkpoints: ``model.safetensors`` (an ImageClassifier state dict) + ``meta.json``. Loading never unpickles.

:class:`CheckpointMeta` is the typed record of ``meta.json``, and :func:`save_checkpoint` the one place that writes
it: every fine-tuned, merged, souped or per-epoch checkpoint is written through it, and :func:`read_meta` reads
it back (a key this version does not know is kept in ``extra``, so a newer checkpoint still loads).

Integrity: ``meta.json`` records the sha256 of the weights file, and every load checks it (once per file version
in a process), so a corrupt, truncated or swapped file fails naming itself instead of loading as valid weights.
``checkpoints.verify=false`` (:func:`verification`) skips the check for trusted huge files.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from wiseft_lab.errors import UserFacingError
from wiseft_lab.io import file_sha256, read_json, write_json, write_safetensors, writes_here
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.factory import create_clip
from wiseft_lab.models.zeroshot import ClassificationHead

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"

StateDict = dict[str, torch.Tensor]

REMEDY = "re-create it (run the stage that wrote it again) or copy it again from where it came from"
_VERIFY: ContextVar[bool] = ContextVar("verify_checkpoints", default=True)
_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256 already checked in this process


class CheckpointError(UserFacingError, ValueError):
    """A checkpoint file that is corrupt, truncated, mismatched or of another architecture; names the file."""


@contextmanager
def verification(enabled: bool) -> Iterator[None]:
    """Check weight digests on load (the default) or not, for the block (``checkpoints.verify``)."""
    token = _VERIFY.set(bool(enabled))
    try:
        yield
    finally:
        _VERIFY.reset(token)


def check_digest(path: Path, expected: str | None, recorded_in: Path) -> None:
    """Refuse ``path`` unless its sha256 is ``expected`` (nothing recorded, or verification off: no check)."""
    if not expected or not _VERIFY.get():
        return
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    actual = _VERIFIED.get(key) or file_sha256(path)
    if actual != expected:
        raise CheckpointError(
            f"{path} is corrupt, truncated or not the file {recorded_in} describes (sha256 {actual[:12]}..., "
            f"recorded {expected[:12]}...): {REMEDY}. checkpoints.verify=false loads files you trust unchecked.")
    _VERIFIED[key] = actual


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
    sha256: dict[str, str] = field(default_factory=dict)  # weights file name -> its digest, set by save_checkpoint
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
    """Write weights first, then metadata with their digest: a directory with ``meta.json`` is always complete."""
    directory = Path(directory)
    state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    path = write_safetensors(directory / WEIGHTS_FILE, state)
    if not writes_here():  # a rank above 0 of a data-parallel job: rank 0 writes (and digests) the files
        return directory
    digest = file_sha256(path)
    stat = path.stat()
    _VERIFIED[(str(path.resolve()), stat.st_size, stat.st_mtime_ns)] = digest
    write_json(directory / META_FILE, meta.replace(sha256={WEIGHTS_FILE: digest}).to_dict())
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
        record = read_json(directory / META_FILE)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{directory / META_FILE} is not valid JSON ({err}): the file is truncated or "
                              f"corrupt; {REMEDY}.") from err
    try:
        return CheckpointMeta.from_dict(record)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{directory / META_FILE}: {err}") from err


def load_weights(path: Path, expected_sha256: str | None, recorded_in: Path,
                 device: str | torch.device = "cpu") -> StateDict:
    """A safetensors file, checked against its recorded digest; an unreadable one fails naming itself."""
    check_digest(path, expected_sha256, recorded_in)
    try:
        return load_file(path, device=str(device))
    except SafetensorError as err:
        raise CheckpointError(f"{path} cannot be read ({err}): the file is truncated or corrupt; {REMEDY}.") from err


def load_state_dict(directory: str | Path, device: str | torch.device = "cpu") -> StateDict:
    directory = Path(directory)
    meta = read_meta(directory)  # fails with a clear message when the directory is not a checkpoint
    return load_weights(directory / WEIGHTS_FILE, meta.sha256.get(WEIGHTS_FILE), directory / META_FILE, device)


def check_architecture(expected: str, checkpoints: Mapping[str, str | Path]) -> None:
    """Refuse, in one line, checkpoints (``{label: directory}``) whose architecture is not ``expected``."""
    for label, directory in checkpoints.items():
        arch = read_meta(directory).arch
        if arch != expected:
            raise CheckpointError(f"{label}={directory} is a {arch} checkpoint, but this run's model is {expected}: "
                                  f"choose a checkpoint of {expected}, or model.arch={arch}.")


def load_checkpoint(directory: str | Path,
                    device: str | torch.device = "cpu") -> tuple[ImageClassifier, CheckpointMeta]:
    """Rebuild the classifier described by ``meta.json`` and load its weights (strictly)."""
    meta = read_meta(directory)
    clip = create_clip(meta.arch, pretrained=None, load_tokenizer=False).model
    return classifier_from_state(clip, load_state_dict(directory), meta).to(device), meta


def classifier_from_state(clip: torch.nn.Module, state: StateDict, meta: CheckpointMeta) -> ImageClassifier:
    """Wrap an open_clip model (any weights) and load a checkpoint's state into it, strictly."""
    model = ImageClassifier(clip, ClassificationHead(torch.zeros_like(state["head.weight"])), keep_text=meta.keep_text)
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    shaped = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or shaped:  # one line, not torch's list of every key
        example = (missing or unexpected or shaped)[0]
        raise CheckpointError(f"A {meta.arch} checkpoint does not fit this model: {len(missing)} tensors missing, "
                              f"{len(unexpected)} unexpected, {len(shaped)} of another shape (e.g. {example}).")
    model.load_state_dict(state, strict=True)
    return model
