"""Every prompt-template set lives in one module and is registered when it is imported: no training import needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wiseft_lab.models.templates import (
    coop_templates,
    fill_template,
    list_templates,
    register_templates,
    resolve_templates,
)


def test_the_sets_of_clip_coop_and_open_clip():
    assert resolve_templates("clip_oxford_pets") == ("a photo of a {}, a type of pet.",)
    assert resolve_templates("clip_eurosat")[0] == "a centered satellite photo of {}."
    assert resolve_templates("clip_dtd")[0] == "a photo of a {} texture."
    assert len(resolve_templates("clip_cifar10")) == 18 and len(resolve_templates("clip_ucf101")) == 48
    assert resolve_templates("coop_dtd") == ("a photo of a {}, a type of texture.",)
    assert resolve_templates("coop_eurosat") == ("a centered satellite photo of {}.",)
    assert len(resolve_templates("openai_imagenet")) == 80 and resolve_templates("simple") == ("a photo of a {}.",)
    assert fill_template(resolve_templates("openai_imagenet")[0], "dog") == "a bad photo of a dog."
    assert {"openai_imagenet", "openai_imagenet_7", "simple", "clip_food101", "coop_food101"} <= set(list_templates())


def test_unknown_and_custom_sets():
    with pytest.raises(KeyError, match="Unknown template set 'nope'; known: .*coop_dtd"):
        resolve_templates("nope")
    with pytest.raises(ValueError, match="At least one prompt template"):
        resolve_templates([])
    register_templates("test_two", ["a {}.", "the {}."])
    assert resolve_templates("test_two") == ("a {}.", "the {}.")
    assert resolve_templates(["my {}"]) == ("my {}",)


def test_coop_prompt_of_a_data_set():
    assert coop_templates(["dtd"]) == ("a photo of a {}, a type of texture.",)
    assert coop_templates([None, "eurosat"]) == ("a centered satellite photo of {}.",)
    assert coop_templates(["my_data"]) == ("a photo of a {}.",)


NOTEBOOK = """
import sys
import wiseft_lab.models
from wiseft_lab.models.zeroshot import build_zeroshot_head
from wiseft_lab.models.factory import create_clip
bundle = create_clip("wiseft-tiny-vit")
head = build_zeroshot_head(bundle.model, bundle.tokenizer, ["cat", "dog"], "coop_dtd")
assert head.weight.shape[0] == 2
assert not any(m.startswith(("wiseft_lab.training", "wiseft_lab.pipeline")) for m in sys.modules), sorted(
    m for m in sys.modules if m.startswith("wiseft_lab."))
print("ok")
"""


def test_a_coop_head_in_a_notebook_needs_no_training_import():
    """The issue's check: ``coop_*`` sets are there after importing models alone (they used to need training)."""
    proc = subprocess.run([sys.executable, "-c", NOTEBOOK], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
