"""CLIP's per-data-set prompt templates (openai/CLIP ``data/prompts.md``), registered as ``clip_<name>``.

The one-prompt CoOp/CLIPFit templates are registered by :mod:`wiseft_lab.training.text_head` as ``coop_<name>``.
"""

from __future__ import annotations

from wiseft_lab.data.layouts import metadata
from wiseft_lab.models.zeroshot import TEMPLATE_SETS, register_templates


def register_clip_templates() -> None:
    """Idempotent: ``clip_dtd``, ``clip_eurosat``, ``clip_cifar10``, ... (see ``metadata/clip_templates.json``)."""
    for name, entry in metadata("clip_templates")["templates"].items():
        if f"clip_{name}" not in TEMPLATE_SETS:
            register_templates(f"clip_{name}", entry["templates"])


register_clip_templates()
