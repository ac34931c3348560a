"""The sweep configs compose: the summary callback is on for every run, and +search=soups_optuna replaces a preset's
grid with Optuna distributions (and the sweeper with the seeded TPE one)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

from wiseft_lab.cli import config_dir
from wiseft_lab.sweeps.callback import SweepCallback, planned_jobs


def _hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(Path(config_dir())), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True).hydra


def test_the_sweep_callback_is_configured():
    assert get_class(_hydra().callbacks.sweep._target_) is SweepCallback


def test_optuna_search_over_the_soups_space():
    hydra = _hydra("experiment=soups", "+search=soups_optuna")
    sweeper = hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 0
    assert sweeper.params["optimizer.lr"] == "tag(log, interval(1e-6, 1e-4))"  # not the preset's grid
    assert str(sweeper.params.seed) == "0" and sweeper.max_failure_rate == 1.0
    assert planned_jobs(OmegaConf.create({"hydra": OmegaConf.to_container(hydra)})) == 72
