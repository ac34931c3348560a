"""What ``pip install`` provides: the console scripts and the optional extra the error messages name."""

from __future__ import annotations

from importlib import import_module

import pytest

from tests.conftest import ROOT
from wiseft_lab.models.tokenizers import HF_EXTRA

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_console_script_names_a_callable():
    assert {"wiseft-lab", "wiseft-lab-report", "wiseft-lab-export"} <= set(PROJECT["scripts"])
    for target in PROJECT["scripts"].values():
        module, _, function = target.partition(":")
        assert callable(getattr(import_module(module), function)), target


def test_the_extra_named_by_the_transformers_message_exists():
    extra = HF_EXTRA.split("[")[1].split("]")[0]
    assert any(dep.startswith("transformers") for dep in PROJECT["optional-dependencies"][extra])
