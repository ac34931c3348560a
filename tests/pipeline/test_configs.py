"""Every config option and every experiment preset composes (Hydra's compose API) and binds to its callables."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from wiseft_lab.cli import config_dir
from wiseft_lab.config import check_targets

CONF = Path(config_dir())
GROUPS = ["model", "data", "eval", "finetune", "optimizer", "scheduler", "merge", "logger"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=False)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose_cfg(f"{group}={option}")
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg[group] is not None
    check_targets(cfg)  # and binds: a misspelt option of a method no preset uses (finetune=flyp) fails here too


@pytest.mark.parametrize("preset", options("experiment"))
def test_every_experiment_preset_composes(preset):
    cfg = compose_cfg(f"experiment={preset}")
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.stages is not None and cfg.task_name


def test_default_is_the_demo_and_builders_instantiate():
    cfg = compose_cfg()
    assert cfg.task_name == "demo" and cfg.model.pretrained == "demo"
    assert list(cfg.stages) == ["finetune", "merge", "evaluate"]
    assert cfg.logger._target_.endswith("WandbLogger") and cfg.logger.mode == "offline"
    data = instantiate(cfg.data.dataset)(transform=None)
    assert len(data.classnames) == 10
    assert set(cfg.eval.datasets) >= {cfg.eval.reference}
    assert callable(instantiate(cfg.optimizer)) and callable(instantiate(cfg.scheduler))


def test_overrides_and_clear_errors():
    cfg = compose_cfg("optimizer.lr=0.5", "merge.alphas=[0,0.5,1]", "finetune=lc")
    assert cfg.optimizer.lr == 0.5 and list(cfg.merge.alphas) == [0, 0.5, 1] and cfg.finetune.method == "lc"
    with pytest.raises(ConfigCompositionException, match="Could not find 'finetune/nope'"):
        compose_cfg("finetune=nope")
    with pytest.raises(ConfigCompositionException, match="optimizer.lrr"):
        compose_cfg("optimizer.lrr=1")


@pytest.mark.parametrize("overrides", [["data=folder"], ["data=wilds_iwildcam", "smoke=tiny"],
                                       ["data=wilds_fmow", "eval=wilds_fmow", "smoke=tiny"]])
def test_another_data_config_takes_no_synthetic_option_from_the_preset_or_the_smoke(overrides):
    cfg = compose_cfg(*overrides)   # the demo preset and smoke=tiny size the synthetic data by data.n_per_class
    check_targets(cfg)
    assert "n_per_class" not in cfg.data.dataset


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "eval" / "corruptions").glob("*.yaml")))
def test_every_corruption_group_composes_onto_a_suite(option):
    cfg = compose_cfg(f"+eval/corruptions={option}")
    OmegaConf.to_container(cfg, resolve=True)
    check_targets(cfg)
    assert list(cfg.eval.datasets) == ["photo", "sketch", "cartoon", "painting", "clutter"]
    (group,) = cfg.eval.corruptions
    assert cfg.eval.corruptions[group].corruptions and cfg.eval.corruptions[group].severities
