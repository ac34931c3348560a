"""Old spellings keep working for now, each with a deprecation warning that names the new one."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.conftest import only_run_dir, run_cli
from wiseft_lab.pipeline.deprecations import apply_deprecations


def test_moved_targets_and_nodes_without_targets_are_rewritten():
    cfg = OmegaConf.create({
        "eval": {"datasets": {"novel": {"_target_": "wiseft_lab.training.base_to_novel.class_subset",
                                        "classes": "novel"}}},
        "finetune": {"method": "clipfit", "epochs": 2, "kd_lambda": 2.0},
        "merge": {"kind": "greedy_soup", "recipes": ["uniform", "greedy"], "pool": "/x"},
        "logger": {"kind": "none"},
    })
    with pytest.warns(DeprecationWarning) as caught:
        apply_deprecations(cfg)
    assert cfg.eval.datasets.novel._target_ == "wiseft_lab.data.class_subsets.class_subset"
    assert cfg.finetune._target_ == "wiseft_lab.training.methods.clipfit.ClipFit"
    assert cfg.merge.kind == "soups" and list(cfg.merge.recipes) == ["greedy"]
    assert cfg.merge._target_ == "wiseft_lab.merging.soups.Soups"
    assert cfg.logger == {"_target_": "wiseft_lab.reporting.loggers.NullLogger", "_partial_": True}
    messages = [str(w.message) for w in caught]
    assert any("moved to wiseft_lab.data.class_subsets.class_subset" in m for m in messages)
    assert any("merge.kind=greedy_soup: use merge=soups merge.recipes=[greedy]" in m for m in messages)


def test_current_configs_pass_unchanged(recwarn):
    current = {"finetune": {"_target_": "x.Y", "method": "e2e"}, "merge": {"_target_": "x.Z", "kind": "wiseft"}}
    assert apply_deprecations(OmegaConf.create(current)) == OmegaConf.create(current)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


@pytest.mark.slow
def test_a_smoke_twin_still_runs_and_says_what_to_write_instead(tmp_path):
    proc = run_cli("experiment=wiseft_vit_b16_e2e_smoke", "stages=[]", "logger=none", cwd=tmp_path)
    said = proc.stdout + proc.stderr
    assert "experiment=wiseft_vit_b16_e2e_smoke: use experiment=wiseft_vit_b16_e2e smoke=tiny" in said
    assert (only_run_dir(tmp_path) / "trainable_parameters.txt").is_file()
