"""The README's Python blocks run as written (offline, on the demo CLIP); its Architecture section names the modules
that exist, and only those."""

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


def architecture_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]


def unnamed_modules(section: str) -> list[str]:
    """Modules of the package the section does not name: ``<file>.py`` for a module of the package or of one of its
    packages; ``<package>/`` and the module's stem for one nested deeper (``methods/ (e2e, lc, ...)``)."""
    missing = []
    for path in sorted((ROOT / "wiseft_lab").rglob("*.py")):
        parts = path.relative_to(ROOT / "wiseft_lab").parts
        if path.name == "__init__.py":
            continue
        if len(parts) <= 2:
            named = re.search(rf"(?<!\w){re.escape(path.name)}", section)
        else:
            named = f"{parts[-2]}/" in section and re.search(rf"(?<!\w){re.escape(path.stem)}\b", section)
        if not named:
            missing.append("/".join(parts))
    return missing


def test_the_architecture_section_names_every_module_and_no_other():
    section = architecture_section()
    assert unnamed_modules(section) == []
    files = {p.name for p in (ROOT / "wiseft_lab").rglob("*.py")}
    assert sorted(set(re.findall(r"(?<![\w.])(\w+\.py)\b", section)) - files) == []
    assert unnamed_modules(section.replace("ranks.py", "")) == ["pipeline/ranks.py"]  # the check can fail


def test_what_a_run_writes_names_the_digest_and_the_lock():
    section = (ROOT / "README.md").read_text().split("## What a run writes", 1)[1].split("\n## ", 1)[0]
    assert "`sha256`" in section and "checkpoints.verify=false" in section and "`run.lock`" in section
