"""The run's open_clip bundle and the one classifier that every evaluated or scored model's weights load into.

A run builds its model once: from ``model.pretrained`` when it fine-tunes (the zero-shot model), else from the
architecture of the first checkpoint it evaluates or merges, with that checkpoint's recorded eval preprocessing
(random weights: every model it scores is loaded from a checkpoint, so nothing is downloaded). Every state dict is
then loaded into that one module (``skeleton``), and heads derived from the text tower are rebuilt after each load.
"""

from __future__ import annotations

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
        model.load_state_dict(state)
        finalize_text_head(model, self.meta, self.bundle().tokenizer)
        return model

    def head_builder(self, model: ImageClassifier):
        """Heads for eval sets with their own classes (base-to-novel's novel set), through the model's text tower."""
        templates = self.meta.templates
        return lambda classnames: build_text_head(model.clip, self.bundle().tokenizer, classnames, templates)
