"""wiseft-lab: robust fine-tuning of zero-shot models (WiSE-FT, model soups, CLIPFit) from Hydra configs.

The notebook API is re-exported here and imported lazily, so ``wiseft-lab --help`` stays fast::

    from wiseft_lab import create_clip, build_zeroshot_head, interpolate, evaluate, EvalSuite, synthetic_styles
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "interpolate": "wiseft_lab.weight_space.interpolate",
    "check_compatible": "wiseft_lab.weight_space.interpolate",
    "uniform_soup": "wiseft_lab.weight_space.soups",
    "greedy_soup": "wiseft_lab.weight_space.soups",
    "build_zeroshot_head": "wiseft_lab.models.zeroshot",
    "ClassificationHead": "wiseft_lab.models.zeroshot",
    "list_templates": "wiseft_lab.models.templates",
    "resolve_templates": "wiseft_lab.models.templates",
    "ImageClassifier": "wiseft_lab.models.classifier",
    "create_clip": "wiseft_lab.models.factory",
    "CheckpointMeta": "wiseft_lab.models.checkpoint",
    "load_checkpoint": "wiseft_lab.models.checkpoint",
    "load_state_dict": "wiseft_lab.models.checkpoint",
    "save_checkpoint": "wiseft_lab.models.checkpoint",
    "evaluate": "wiseft_lab.evaluation.suite",
    "EvalSuite": "wiseft_lab.evaluation.suite",
    "TaskData": "wiseft_lab.data.base",
    "synthetic_styles": "wiseft_lab.data.sources",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wiseft_lab' has no attribute {name!r}")
