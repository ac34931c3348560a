"""Experiment presets: the paper presets carry the paper's hyper-parameters, every preset composes and binds to its
callables (a misspelt option fails here), and every preset runs end to end at smoke size through the shrink group
(``experiment=<preset> smoke=tiny``) as a user runs it: ``wiseft-lab -m experiment=<a>,<b>,... smoke=tiny`` in a
subprocess (one Python start-up for all the single-run presets; the soup presets as their two documented commands, a
sweep of ingredients then the soups from its directory). The deprecated ``*_smoke`` aliases compose to the same.

Also the model-soups random search (``+search=soups_vit_b32``: every searched value drawn from ``seed``).
Presets added later are picked up from ``conf/experiment``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import run_cli
from wiseft_lab.cli import config_dir
from wiseft_lab.config import ConfigError, check_targets
from wiseft_lab.search import draw

CONF = Path(config_dir())
ALIAS_MARK = "Deprecated alias of"
ALIASES = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if ALIAS_MARK in p.read_text())
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if p.stem not in ALIASES)
SYNTHETIC_MAP = "IN=photo,V2=sketch,R=cartoon,Sketch=painting,ObjectNet=clutter"


def compose_cfg(*overrides: str, hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra_config)


def is_soup(preset: str) -> bool:
    cfg = compose_cfg(f"experiment={preset}")
    return cfg.merge.kind == "soups" and not cfg.merge.get("pool")


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("size", [(), ("smoke=tiny",)], ids=["full", "smoke"])
def test_every_preset_composes_and_binds_to_its_callables(preset, size):
    cfg = compose_cfg(f"experiment={preset}", *size)
    OmegaConf.to_container(cfg, resolve=True)
    check_targets(cfg)  # every _target_ node's keys are parameters of its callable
    assert cfg.task_name and cfg.stages is not None


@pytest.mark.parametrize("preset", PRESETS)
def test_smoke_size_changes_sizes_only(preset):
    """Under smoke=tiny a preset keeps its method, optimiser, schedule, merge and splits; its model is tiny, random."""
    full, tiny = compose_cfg(f"experiment={preset}"), compose_cfg(f"experiment={preset}", "smoke=tiny")
    assert tiny.model.pretrained is None and tiny.model.arch == "wiseft-tiny-vit"
    assert tiny.finetune.epochs == 1 and tiny.data.dataset._target_.endswith("synthetic_styles")
    for key in ("finetune._target_", "finetune.method", "optimizer", "merge", "data.holdout_fraction",
                "data.shots", "data.classes", "stages", "task_name"):
        assert OmegaConf.select(full, key) == OmegaConf.select(tiny, key), key
    full_schedule, tiny_schedule = (OmegaConf.to_container(c.scheduler) for c in (full, tiny))
    full_schedule.pop("epochs", None), tiny_schedule.pop("epochs", None)  # an epoch schedule follows finetune.epochs
    assert full_schedule == tiny_schedule


def test_a_misspelt_option_fails_the_binding():
    cfg = compose_cfg("experiment=b2n", "+finetune.kd_lamda=2")
    with pytest.raises(ConfigError, match=r"finetune.kd_lamda: not an option of .*ClipFit; its options: .*kd_lambda"):
        check_targets(cfg)
    cfg = compose_cfg("experiment=soups", "+merge.learned.epoch=2")
    with pytest.raises(ConfigError, match=r"merge.learned.epoch: not an option of .*LearnedOptions"):
        check_targets(cfg)


@pytest.mark.parametrize("alias", ALIASES)
def test_deprecated_smoke_aliases_are_their_preset_at_smoke_size(alias):
    preset = "demo" if alias == "smoke" else alias[: -len("_smoke")]
    old = OmegaConf.to_container(compose_cfg(f"experiment={alias}"), resolve=False)
    new = OmegaConf.to_container(compose_cfg(f"experiment={preset}", "smoke=tiny"), resolve=False)
    for cfg in (old, new):
        cfg.pop("task_name")
    assert old == new


PAPER = {
    # preset: (arch, method, lr, shots)
    "wiseft_vit_l14_336_e2e": ("ViT-L-14-336-quickgelu", "e2e", 3e-5, None),
    "wiseft_vit_l14_336_lc": ("ViT-L-14-336-quickgelu", "lc", 3e-5, None),
    "wiseft_vit_b16_e2e": ("ViT-B-16-quickgelu", "e2e", 3e-5, None),
    "wiseft_vit_b16_lc_16shot": ("ViT-B-16-quickgelu", "lc", 1e-5, 16),
}
SHIFTS = {"imagenet", "imagenet_v2", "imagenet_r", "imagenet_sketch", "objectnet", "imagenet_a"}


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_wiseft_presets_have_the_papers_hyperparameters(preset):
    arch, method, lr, shots = PAPER[preset]
    cfg = compose_cfg(f"experiment={preset}")
    assert cfg.model.arch == arch and cfg.model.pretrained == "openai"
    assert cfg.finetune.method == method and cfg.data.shots == shots
    assert cfg.data.name == "imagenet" and cfg.data.templates == "openai_imagenet" and cfg.data.holdout_fraction == 0
    assert cfg.optimizer._target_ == "torch.optim.AdamW"
    assert cfg.optimizer.lr == lr and cfg.optimizer.weight_decay == 0.1
    assert cfg.scheduler._target_.endswith("WarmupCosine") and cfg.scheduler.warmup_steps == 500
    assert cfg.finetune.epochs == 10 and cfg.finetune.batch_size * cfg.finetune.grad_accum_steps == 512
    assert cfg.finetune.clip_grad_norm == 1.0 and cfg.finetune.label_smoothing == 0
    assert cfg.merge.kind == "wiseft" and {0.0, 0.5, 1.0} <= set(cfg.merge.alphas) and len(cfg.merge.alphas) >= 11
    assert cfg.eval.reference == "imagenet" and set(cfg.eval.datasets) >= SHIFTS


COOP = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "flowers102", "food101", "fgvc_aircraft", "sun397",
        "dtd", "eurosat", "ucf101"]


def test_b2n_preset_is_the_clipfit_protocol():
    cfg = compose_cfg("experiment=b2n", "data=dtd", hydra_config=True)
    assert cfg.model.arch == "ViT-B-16-quickgelu" and cfg.finetune.method == "clipfit"
    assert cfg.data.shots == 16 and cfg.data.classes == "base" and cfg.finetune.epochs == 100
    assert {ds.classes for ds in cfg.eval.datasets.values()} == {"base", "novel"}
    params = cfg.hydra.sweeper.params
    assert params.data.split(",") == COOP and params.seed == "1,2,3"
    assert compose_cfg("experiment=b2n", "data=imagenet").finetune.epochs == 10


# ---------------------------------------------------------------------------------------------- random search
SEARCH = {  # searched key -> the draw arguments conf/search/soups_vit_b32.yaml uses
    "optimizer.lr": ("lr", "loguniform", 1e-6, 1e-4),
    "optimizer.weight_decay": ("weight_decay", "loguniform", 6e-5, 0.6),
    "finetune.epochs": ("epochs", "randint", 4, 16),
    "finetune.label_smoothing": ("label_smoothing", "zero_or_uniform", 0.55, 0.0, 0.25),
    "finetune.mixup_alpha": ("mixup_alpha", "zero_or_uniform", 0.55, 0.0, 1.0),
    "finetune.randaugment": ("randaugment", "randaugment", 0.38, 20, 2),
}


def test_draw_is_pinned_per_seed_and_name_and_covers_the_papers_ranges():
    assert draw(0, "lr", "loguniform", 1e-6, 1e-4) == pytest.approx(6.0265511592800044e-05, rel=1e-12)  # pinned
    assert draw(3, "randaugment", "randaugment", 0.38, 20, 2) == "rand-m8-n1"
    assert draw(7, "lr", "loguniform", 1e-6, 1e-4) == draw(7, "lr", "loguniform", 1e-6, 1e-4)
    seeds = range(2000)
    lrs = [draw(s, *SEARCH["optimizer.lr"]) for s in seeds]
    assert min(lrs) >= 1e-6 and max(lrs) <= 1e-4
    assert sum(math.log10(v) for v in lrs) / len(lrs) == pytest.approx(-5.0, abs=0.05)  # log-uniform
    assert {draw(s, *SEARCH["finetune.epochs"]) for s in seeds} == set(range(4, 17))
    smoothing = [draw(s, *SEARCH["finetune.label_smoothing"]) for s in seeds]
    assert sum(v == 0 for v in smoothing) / len(smoothing) == pytest.approx(0.55, abs=0.04)
    assert max(smoothing) <= 0.25
    augment = [draw(s, *SEARCH["finetune.randaugment"]) for s in seeds]
    assert sum(a is None for a in augment) / len(augment) == pytest.approx(0.38, abs=0.04)
    assert all(re.fullmatch(r"rand-m([0-9]|1[0-9]|20)-n[0-2]", a) for a in augment if a)
    # each value is its own stream: the epochs drawn do not follow the lr drawn
    wd = [draw(s, *SEARCH["optimizer.weight_decay"]) for s in seeds]
    assert len(set(zip(lrs, wd, strict=True))) == len(seeds)
    with pytest.raises(ValueError, match="unknown kind"):
        draw(0, "x", "gaussian", 0, 1)


def _search_overrides(preset: str) -> list[str]:
    """``+search=soups_vit_b32`` unless the preset already lists the search in its defaults."""
    choices = compose_cfg(f"experiment={preset}", hydra_config=True).hydra.runtime.choices
    return [] if choices.get("search") else ["+search=soups_vit_b32"]


def test_soups_search_draws_every_searched_value_from_the_seed():
    preset = "soups_vit_b32"
    configs = [compose_cfg(f"experiment={preset}", *_search_overrides(preset), f"seed={s}") for s in range(8)]
    for seed, cfg in enumerate(configs):
        for key, args in SEARCH.items():
            assert OmegaConf.select(cfg, key) == draw(seed, *args), (seed, key)
        assert cfg.model.arch == "ViT-B-32-quickgelu" and cfg.finetune.method == "lpft"
        assert cfg.data.holdout_fraction == 0.02
    assert len({c.optimizer.lr for c in configs}) == 8
    assert any(c.finetune.randaugment for c in configs) and any(c.finetune.mixup_alpha for c in configs)
    # a command-line value still wins over the draw
    fixed = compose_cfg(f"experiment={preset}", *_search_overrides(preset), "seed=3", "optimizer.lr=2e-5")
    assert fixed.optimizer.lr == 2e-5 and fixed.finetune.epochs == draw(3, *SEARCH["finetune.epochs"])


@pytest.mark.slow
def test_search_as_a_multirun_records_the_drawn_values(tmp_path):
    """``-m ... +search=soups_vit_b32 'seed=range(2)'``: two jobs, each config.yaml holding its own draw (dry run)."""
    run_cli("experiment=wiseft_vit_b16_e2e_smoke", "+search=soups_vit_b32", "seed=range(2)", "stages=[]",
            "logger=none", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, multirun=True)
    for seed in (0, 1):
        cfg = OmegaConf.load(tmp_path / "sweep" / str(seed) / "config.yaml")
        assert cfg.seed == seed
        for key, args in SEARCH.items():
            assert OmegaConf.select(cfg, key) == draw(seed, *args), (seed, key)


# ---------------------------------------------------------------------------------------------- end to end
def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def needs_a_pool(preset: str) -> bool:
    """A soup of ingredients fine-tuned elsewhere: the cross-dataset soup (its smoke twin runs in
    tests/integration/test_analyses_cli.py, with ingredients trained on other class sets)."""
    cfg = compose_cfg(f"experiment={preset}")
    return cfg.merge.kind == "cross_dataset_soup"


SINGLE = [p for p in PRESETS if not is_soup(p) and not needs_a_pool(p)]
SOUPS = [p for p in PRESETS if is_soup(p)]


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory) -> dict[str, Path]:
    """Every single-run preset at smoke size, as one multirun over the experiment group."""
    base = tmp_path_factory.mktemp("smoke_presets")
    run_cli(f"experiment={','.join(SINGLE)}", "smoke=tiny", "logger=none", f"hydra.sweep.dir={base / 'sweep'}",
            "hydra.sweep.subdir=${hydra.job.num}", cwd=base, multirun=True, env={"OMP_NUM_THREADS": "2"})
    return {preset: base / "sweep" / str(num) for num, preset in enumerate(SINGLE)}


@pytest.fixture(scope="module")
def soup_runs(tmp_path_factory) -> dict[str, Path]:
    """The soup presets as documented: a multirun of ingredients (two seeds each), then the soups from its directory."""
    if not SOUPS:
        return {}
    base = tmp_path_factory.mktemp("smoke_soups")
    experiments = f"experiment={','.join(SOUPS)}"
    run_cli(experiments, "smoke=tiny", "stages=[finetune]", "seed=0,1", "logger=none",
            f"hydra.sweep.dir={base / 'pool'}", "hydra.sweep.subdir=${task_name}/${seed}", cwd=base, multirun=True)
    run_cli(experiments, "smoke=tiny", "stages=[merge,evaluate]", "logger=none",
            f"++merge.pool={base / 'pool'}/${{task_name}}", f"hydra.sweep.dir={base / 'soups'}",
            "hydra.sweep.subdir=${hydra.job.num}", cwd=base, multirun=True)
    return {preset: base / "soups" / str(num) for num, preset in enumerate(SOUPS)}


def _check_run(preset: str, run_dir: Path) -> None:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    expected = compose_cfg(f"experiment={preset}", "smoke=tiny")
    assert cfg.task_name == expected.task_name and cfg.model.arch == expected.model.arch, run_dir
    rows = _rows(run_dir)
    assert rows and all(any(k.endswith("/top1") for k in row) for row in rows)
    assert (run_dir / "run_info.json").is_file()
    if cfg.merge.kind == "wiseft":
        alphas = sorted(r["alpha"] for r in rows if r["model"] == "wiseft")
        assert alphas == sorted(float(a) for a in cfg.merge.alphas)
        assert (run_dir / "summary.md").is_file() and (run_dir / "wiseft_curve.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("preset", SINGLE)
def test_every_single_run_preset_runs_end_to_end_at_smoke_size(preset, single_runs):
    _check_run(preset, single_runs[preset])


@pytest.mark.slow
@pytest.mark.parametrize("preset", SOUPS)
def test_every_soup_preset_runs_end_to_end_at_smoke_size_and_reports(preset, soup_runs, tmp_path):
    from wiseft_lab.reporting.paper import report

    run_dir = soup_runs[preset]
    _check_run(preset, run_dir)
    assert (run_dir / "soups.md").is_file()
    built, written = report("soups_vit_b32", [run_dir], tmp_path / "report", columns=[SYNTHETIC_MAP])
    cells = {line.spec["key"]: line.cells for line in built.lines}
    assert cells["best_individual"]["IN"].n == 1 and cells["uniform_soup"]["IN"].n == 1
    assert cells["greedy_ensemble"] == {}  # never produced: missing, not filled in
    assert written["csv"].is_file() and written["figure"].is_file()
