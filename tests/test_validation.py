"""The config's value schema: every rule of the table fails on a bad value with key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import run_cli
from wiseft_lab.cli import config_dir
from wiseft_lab.config import ConfigError
from wiseft_lab.validation import RULES, Rule, validate, violations


def composed(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=["smoke=tiny", *overrides])


PRESETS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("size", [[], ["smoke=tiny"]], ids=["full", "smoke"])
def test_every_preset_is_valid(preset, size):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        assert violations(compose(config_name="train", overrides=[f"experiment={preset}", *size])) == []


@pytest.mark.parametrize(("override", "message"), [
    ("finetune.epochs=abc", "finetune.epochs='abc': must be an integer >= 1"),
    ("finetune.epochs=0", "finetune.epochs=0: must be an integer >= 1"),
    ("finetune.epochs=1.5", "finetune.epochs=1.5: must be an integer >= 1"),
    ("finetune.batch_size=0", "finetune.batch_size=0: must be an integer >= 1"),
    ("optimizer.lr=-1", "optimizer.lr=-1: must be a number > 0"),
    ("optimizer.lr=0", "optimizer.lr=0: must be a number > 0"),
    ("data.holdout_fraction=1.0", "data.holdout_fraction=1.0: must be a number >= 0 and < 1"),
    ("data.shots=0", "data.shots=0: must be an integer >= 1 (or null)"),
    ("precision=fp16", "precision='fp16': must be one of auto, bf16, fp32"),
    ("threads=0", "threads=0: must be an integer >= 1 (or null)"),
    ("data.num_workers=-1", "data.num_workers=-1: must be an integer >= 0, or auto"),
    ("data.num_workers=many", "data.num_workers='many': must be an integer >= 0, or auto"),
    ("merge.alphas=[0,1.5]", "merge.alphas=[0, 1.5]: must be a list, each item a number >= 0 and <= 1 "
                             "(or set merge.extrapolate=true)"),
    ("merge.alphas=[-0.2,0.5]", "merge.alphas=[-0.2, 0.5]"),
    ("merge.alphas=0.5", "merge.alphas=0.5: must be a list"),
])
def test_a_bad_value_names_key_value_and_what_is_allowed(override, message):
    found = violations(composed(override))
    assert len(found) == 1 and found[0].startswith(message), found


def test_extrapolation_lifts_the_alpha_range_but_not_the_type():
    assert violations(composed("merge.alphas=[-0.5,0,1,1.5]", "merge.extrapolate=true")) == []
    assert violations(composed("merge.alphas=[a]", "merge.extrapolate=true")) == [
        "merge.alphas=['a']: must be a list, each item a number"]


def test_every_violation_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        validate(composed("finetune.epochs=-2", "optimizer.lr=-1"))
    assert str(caught.value).splitlines()[1:] == ["  finetune.epochs=-2: must be an integer >= 1",
                                                  "  optimizer.lr=-1: must be a number > 0"]


def test_rule_bounds():
    rule = Rule("x", low=0, high=1, low_open=True, high_open=True)
    assert [rule.fits(v) for v in (0, 1e-9, 0.5, 1, True)] == [False, True, True, False, False]
    assert Rule("x", nullable=True, low=1).violation(None) is None
    assert {r.key for r in RULES} >= {"finetune.epochs", "optimizer.lr", "finetune.batch_size", "merge.alphas"}


@pytest.mark.slow
def test_the_cli_fails_before_any_file_without_a_traceback(tmp_path):
    proc = run_cli("smoke=tiny", "logger=none", "finetune.epochs=abc", cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "finetune.epochs='abc': must be an integer >= 1" in out
    assert "Traceback" not in out
    run_dir = only_run_dir_or_hydra(tmp_path)
    # nothing but the failure: the traceback, the job's record (failed, its reason) and Hydra's own files
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "error.log", "job.json", "wiseft_lab.log"]


def only_run_dir_or_hydra(base):
    """The run dir of a job that failed before writing config.yaml (Hydra's own .hydra/ is there)."""
    runs = sorted(p.parent.parent for p in base.glob("outputs/*/runs/*/.hydra/config.yaml"))
    assert len(runs) == 1, runs
    return runs[0]
