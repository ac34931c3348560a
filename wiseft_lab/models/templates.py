"""Every prompt-template set, in one registry: registered when this module is imported.

- ``openai_imagenet`` (CLIP's 80 ImageNet prompts, open_clip's ``OPENAI_IMAGENET_TEMPLATES``),
  ``openai_imagenet_7`` (open_clip's ``SIMPLE_IMAGENET_TEMPLATES``) and ``simple`` (``a photo of a {}.``);
- ``clip_<set>``: CLIP's per-data-set prompts (openai/CLIP ``data/prompts.md``; ``prompts/clip_templates.json``);
- ``coop_<set>``: the one prompt per data set that CoOp and CLIPFit use (their ``CUSTOM_TEMPLATES``);
- ``wilds_fmow``, ``wilds_iwildcam``: WiSE-FT's prompts for the WILDS sets (``prompts/wilds_templates.json``).

A template is a ``"...{}..."`` string (``{article}`` stands for the class name with WiSE-FT's
``append_proper_article``: ``an apple``, ``a dam``) or a callable of the class name. Data sources name their default
set (a string), configs may give a name or a list; :func:`resolve_templates` turns either into templates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

log = logging.getLogger(__name__)

Template = str | Callable[[str], str]

PROMPTS_DIR = Path(__file__).parent / "prompts"

# The one prompt per data set of CoOp / CLIPFit (``CUSTOM_TEMPLATES``), keyed by this project's data config names.
COOP_TEMPLATES: dict[str, str] = {
    "imagenet": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "oxford_pets": "a photo of a {}, a type of pet.",
    "stanford_cars": "a photo of a {}.",
    "flowers102": "a photo of a {}, a type of flower.",
    "food101": "a photo of {}, a type of food.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "sun397": "a photo of a {}.",
    "dtd": "a photo of a {}, a type of texture.",
    "eurosat": "a centered satellite photo of {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet_sketch": "a photo of a {}.",
    "imagenetv2": "a photo of a {}.",
    "imagenet_a": "a photo of a {}.",
    "imagenet_r": "a photo of a {}.",
}
COOP_DEFAULT = "a photo of a {}."

_TEMPLATE_SETS: dict[str, tuple[Template, ...]] = {}


def register_templates(name: str, templates: Sequence[Template]) -> None:
    """Add (or replace) a named template set."""
    if not templates:
        raise ValueError(f"Template set {name!r} is empty.")
    _TEMPLATE_SETS[name] = tuple(templates)


def list_templates() -> list[str]:
    return sorted(_TEMPLATE_SETS)


def resolve_templates(templates: str | Sequence[Template]) -> tuple[Template, ...]:
    """A template-set name, or an explicit list of ``"...{}..."`` strings / callables."""
    if isinstance(templates, str):
        if templates not in _TEMPLATE_SETS:
            raise KeyError(f"Unknown template set {templates!r}; known: {list_templates()}")
        return _TEMPLATE_SETS[templates]
    resolved = tuple(templates)
    if not resolved:
        raise ValueError("At least one prompt template is needed to build a zero-shot head.")
    return resolved


def with_article(classname: str) -> str:
    """WiSE-FT's ``append_proper_article``: underscores as spaces, ``an`` before a vowel, else ``a``."""
    spaced = classname.replace("_", " ")
    return ("an " if spaced[:1] in tuple("aeiou") else "a ") + spaced


def fill_template(template: Template, classname: str) -> str:
    if callable(template):
        return template(classname)
    return template.format(classname, article=with_article(classname)) if "{article}" in template else (
        template.format(classname))


def template_text(template: Template) -> str:
    """A template as the string a checkpoint records: strings as they are, callables applied to ``{}``."""
    return template if isinstance(template, str) else template("{}")


def coop_templates(dataset_keys: Sequence[str | None]) -> tuple[str, ...]:
    """The CoOp/CLIPFit prompt of the first known key (data config choice, ``data.name``), else CoOp's default."""
    for key in dataset_keys:
        if key and str(key).lower() in COOP_TEMPLATES:
            return (COOP_TEMPLATES[str(key).lower()],)
    log.warning("No CoOp prompt registered for data set %s: using %r", [k for k in dataset_keys if k], COOP_DEFAULT)
    return (COOP_DEFAULT,)


def _prompts(name: str) -> dict:
    return json.loads((PROMPTS_DIR / f"{name}.json").read_text(encoding="utf-8"))["templates"]


def _register_builtin() -> None:
    register_templates("openai_imagenet", OPENAI_IMAGENET_TEMPLATES)
    register_templates("openai_imagenet_7", SIMPLE_IMAGENET_TEMPLATES)
    register_templates("simple", ("a photo of a {}.",))
    for name, entry in _prompts("clip_templates").items():
        register_templates(f"clip_{name}", entry["templates"])
    for name, templates in _prompts("wilds_templates").items():
        register_templates(f"wilds_{name}", templates)
    for name, template in COOP_TEMPLATES.items():
        register_templates(f"coop_{name}", (template,))


_register_builtin()
