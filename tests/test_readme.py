"""The README's Python blocks run as written (offline, on the demo CLIP)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)


def test_the_readme_has_python_blocks():
    assert BLOCKS


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_readme_python_block_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out  # the block prints what it computed


def test_what_a_run_writes_names_the_digest_and_the_lock():
    section = (ROOT / "README.md").read_text().split("## What a run writes", 1)[1].split("\n## ", 1)[0]
    assert "`sha256`" in section and "checkpoints.verify=false" in section and "`run.lock`" in section
