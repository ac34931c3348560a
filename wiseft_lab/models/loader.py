"""The run's open_clip bundle and the one classifier that every evaluated or scored model's weights load into.

A run builds its model once: from ``model.pretrained`` when it fine-tunes (the zero-shot model), else from the
architecture of the first checkpoint it evaluates or merges, with that checkpoint's recorded eval preprocessing
(random weights: every model it scores is loaded from a checkpoint, so nothing is downloaded). Every state dict is
then loaded into that one module (``skeleton``), and heads derived from the text tower are rebuilt after each load.
A load copies only the entries that are not the very tensors the previous load copied: along a linear-classifier
WiSE-FT path the tower entries are ``theta_0``'s own tensors at every alpha, so each alpha copies the head alone and
the tower stays untouched (which is also how :class:`~wiseft_lab.evaluation.features.FeatureCache` recognises it).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from pathlib import Path

import torch

from wiseft_lab.models.checkpoint import CheckpointMeta, classifier_from_state, load_state_dict, read_meta
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.factory import ClipBundle, create_clip, with_eval_preprocess
from wiseft_lab.models.text_head import build_text_head, finalize_text_head


class ModelLoader:
    """Builds the run's bundle lazily and keeps one skeleton classifier for the run's checkpoints."""

    def __init__(self, arch: str, pretrained: str | None, device: torch.device, cache_dir: str | None = None,
                 tokenizer: str | None = None):
        self.arch, self.pretrained, self.device, self.cache_dir = arch, pretrained, device, cache_dir
        self.tokenizer = tokenizer  # a local HF tokenizer directory (model.tokenizer), for hub-tokenizer archs
        self._bundle: ClipBundle | None = None
        self._skeleton: ImageClassifier | None = None
        self._meta: CheckpointMeta | None = None
        self._copied = CopiedEntries()

    def bundle(self) -> ClipBundle:
        """The open_clip model with ``model.pretrained`` weights (or the checkpoint architecture's, see module doc)."""
        if self._bundle is None:
            self._bundle = create_clip(self.arch, self.pretrained, device=self.device, cache_dir=self.cache_dir,
                                       tokenizer=self.tokenizer)
        return self._bundle

    @property
    def meta(self) -> CheckpointMeta:
        if self._meta is None:
            raise RuntimeError("No skeleton yet: call skeleton(<checkpoint>) first")
        return self._meta

    def skeleton(self, checkpoint: Path) -> ImageClassifier:
        """One classifier of the checkpoint's architecture, built on first use; later calls return the same one."""
        if self._skeleton is None:
            meta = read_meta(checkpoint)
            if self._bundle is None:  # evaluated or merged on its own: its architecture and eval preprocessing
                self._bundle = with_eval_preprocess(
                    create_clip(meta.arch, None, device=self.device, cache_dir=self.cache_dir,
                                tokenizer=self.tokenizer), meta.preprocess)
            state = load_state_dict(checkpoint)
            self._skeleton = classifier_from_state(self._bundle.model, state, meta).to(self.device)
            self._meta = meta
        return self._skeleton

    def load(self, model: ImageClassifier, state: Mapping[str, torch.Tensor]) -> ImageClassifier:
        """Load a (possibly merged) state; a head derived from the text tower is rebuilt from the loaded tower."""
        self._copied.load(model, state)
        finalize_text_head(model, self.meta, self.bundle().tokenizer)
        return model

    def head_builder(self, model: ImageClassifier):
        """Heads for eval sets with their own classes (base-to-novel's novel set), through the model's text tower."""
        templates = self.meta.templates
        return lambda classnames: build_text_head(model.clip, self.bundle().tokenizer, classnames, templates)


class CopiedEntries:
    """``load_state_dict`` that skips an entry when its source and its target are the very tensors of the last copy.

    Tensors are recognised by identity (weak references: a freed tensor's id can be reused, a dead reference cannot
    match) and by their in-place version counters, so a source or a parameter modified since is copied again.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[weakref.ref, int, weakref.ref, int]] = {}

    def _unchanged(self, key: str, source: torch.Tensor, target: torch.Tensor) -> bool:
        last = self._last.get(key)
        return (last is not None and last[0]() is source and last[1] == source._version
                and last[2]() is target and last[3] == target._version)

    def load(self, model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> int:
        """Load ``state`` into ``model`` (strict keys, as ``load_state_dict``); the number of entries copied."""
        targets = model.state_dict(keep_vars=True)
        if targets.keys() != state.keys():
            model.load_state_dict(state)  # raises with the missing and unexpected keys
        changed = {key: value for key, value in state.items() if not self._unchanged(key, value, targets[key])}
        model.load_state_dict(changed, strict=False)  # copies into the same tensors: ``targets`` stays valid
        for key in changed:
            source, target = state[key], targets[key]
            self._last[key] = (weakref.ref(source), source._version, weakref.ref(target), target._version)
        return len(changed)
