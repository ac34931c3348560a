"""The soup merge configs and the launcher presets compose, and the presets' own parameters apply."""

from __future__ import annotations

import warnings

import pytest
from hydra import compose, initialize_config_dir

from wiseft_lab.cli import config_dir


def _compose(*overrides: str, hydra: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Hydra's note on schema matching for the launcher presets
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra)


@pytest.mark.parametrize(("kind", "recipes"), [("uniform_soup", ["uniform"]), ("greedy_soup", ["greedy"]),
                                               ("learned_soup", ["learned"]), ("fisher", ["fisher"]),
                                               ("soups", ["uniform", "greedy", "learned", "learned_per_layer"])])
def test_soup_merges_share_their_options(kind, recipes):
    cfg = _compose(f"merge={kind}", "merge.pool=/x", "merge.accept=ge", "merge.learned.epochs=1")
    assert cfg.merge.kind == "soups" and list(cfg.merge.recipes) == recipes  # one strategy, its recipes differ
    assert cfg.merge.pool == "/x" and cfg.merge.accept == "ge" and cfg.merge.learned.lr == 0.05
    assert cfg.merge.learned.epochs == 1 and cfg.merge.fisher.floor == 1e-8


def test_launcher_presets_apply_their_parameters():
    joblib = _compose("hydra/launcher=joblib", hydra=True).hydra.launcher
    assert joblib._target_.endswith("JoblibLauncher") and joblib.n_jobs == 2
    assert _compose("hydra/launcher=joblib", "hydra.launcher.n_jobs=4", hydra=True).hydra.launcher.n_jobs == 4
    slurm = _compose("hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", hydra=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.partition == "gpu"
    assert slurm.gpus_per_node == 1 and slurm.mem_gb == 64 and slurm.timeout_min == 240


def test_soup_presets_carve_a_held_out_split():
    for overrides in (["experiment=soups"], ["experiment=soups", "smoke=tiny"], ["experiment=soups_vit_b32"]):
        cfg = _compose(*overrides)
        assert cfg.merge.kind == "soups" and cfg.data.holdout_fraction > 0
