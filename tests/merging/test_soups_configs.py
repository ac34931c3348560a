"""The soup merge configs and the launcher presets compose, and the presets' own parameters apply."""

from __future__ import annotations

import warnings

import pytest
from hydra import compose, initialize_config_dir

from wiseft_lab.cli import config_dir
from wiseft_lab.config import instantiate_checked
from wiseft_lab.merging.cross_soups import CrossDatasetSoup
from wiseft_lab.merging.soups import LearnedOptions


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


def test_the_cross_dataset_soup_takes_the_soups_recipes_and_learned_options():
    cfg = _compose("merge=cross_dataset_soup", "merge.pool=/x", "merge.recipes=[greedy,learned]",
                   "merge.learned.epochs=2")
    soup = instantiate_checked(cfg.merge, "merge")
    assert isinstance(soup, CrossDatasetSoup) and soup.recipes == ["greedy", "learned"] and soup.accept == "ge"
    assert isinstance(soup.learned, LearnedOptions) and soup.learned.epochs == 2 and soup.learned.lr == 0.05
    assert list(_compose("merge=cross_dataset_soup").merge.recipes) == ["uniform"]  # needs no held-out split
    with pytest.raises(Exception, match="Unknown cross-dataset soup recipes"):
        instantiate_checked(_compose("merge=cross_dataset_soup", "merge.recipes=[fisher]").merge, "merge")
    with pytest.raises(Exception, match="merge.accept"):
        instantiate_checked(_compose("merge=cross_dataset_soup", "merge.accept=gte").merge, "merge")
