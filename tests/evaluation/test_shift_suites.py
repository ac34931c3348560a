"""The shift suites beyond ImageNet's five: each composes, checks its layout before anything runs, warns about
unofficial sizes, and scores a fake tree of its real layout with its own metric (recomputed here from the saved
predictions)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from tests import data_fakes as fakes
from tests.data import shift_fakes
from tests.data.test_video_robust import VID_ANCHORS, VID_LABELS, YTBB_ANCHORS
from wiseft_lab.cli import config_dir
from wiseft_lab.data.eval_sets import check_data_layouts, eval_sets
from wiseft_lab.data.layouts import DataLayoutError
from wiseft_lab.evaluation.set_metrics import macro_f1, pm_k, worst_group_accuracy
from wiseft_lab.evaluation.suite import EvalSuite, evaluate
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.zeroshot import ClassificationHead

SUITES = ("wilds_iwildcam", "wilds_fmow", "imagenet_vid_robust", "ytbb_robust", "imagenet_c", "cifar10_c",
          "imagenet_all_shifts")


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(Path(config_dir())), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def scored(cfg, bundle, width: int, predictions: Path) -> tuple[EvalSuite, dict]:
    """The suite of ``cfg`` as the pipeline builds it, scored by a tiny model with a random ``width``-way head."""
    sets = eval_sets(cfg.eval)
    suite = EvalSuite.build(cfg.eval.reference, sets.builders, bundle.preprocess_val, groups=sets.groups)
    clip = copy.deepcopy(bundle.model)
    dim = clip.encode_image(torch.zeros(1, 3, 32, 32)).shape[-1]
    torch.manual_seed(0)
    model = ImageClassifier(clip, ClassificationHead(torch.randn(width, dim)))
    return suite, evaluate(model, suite, batch_size=4, predictions_dir=predictions, progress=False)


def saved(predictions: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = load_file(predictions / f"{name}.safetensors")
    return tensors["logits"], tensors["labels"]


@pytest.mark.parametrize("suite", SUITES)
def test_each_suite_checks_its_layout_before_anything_runs(suite, tmp_path):
    cfg = compose_cfg(f"eval={suite}", f"paths.data_root={tmp_path / 'empty'}")
    with pytest.raises(DataLayoutError, match="Expected layout"):
        check_data_layouts(cfg, ["evaluate"])
    check_data_layouts(cfg, ["finetune"])   # the (synthetic) training set alone needs nothing


def _scored_fake(fake, suite: str, width: int, tiny_bundle, tmp_path, caplog) -> tuple[EvalSuite, dict]:
    """A suite on its generated official layout (which passes the pre-flight check), scored by a ``width``-way head;
    the warnings logged on the way are in ``caplog``."""
    fake(tmp_path)
    cfg = compose_cfg(f"eval={suite}", f"paths.data_root={tmp_path}")
    check_data_layouts(cfg, ["evaluate"])
    with caplog.at_level(logging.WARNING):
        return scored(cfg, tiny_bundle, width, tmp_path / "p")


def test_wilds_iwildcam_is_scored_by_macro_f1(tiny_bundle, tmp_path, caplog):
    suite, metrics = _scored_fake(shift_fakes.iwildcam, "wilds_iwildcam", 182, tiny_bundle, tmp_path, caplog)
    assert "iwildcam_ood_test has 3 examples, the official count is 42791" in caplog.text
    assert [k for k in metrics if k.startswith("iwildcam_ood_test/")] == ["iwildcam_ood_test/macro_f1",
                                                                           "iwildcam_ood_test/top1"]
    assert metrics["iwildcam_ood_test/macro_f1"] == pytest.approx(macro_f1(*saved(tmp_path / "p", "iwildcam_ood_test")))
    assert metrics["avg_shifts/macro_f1"] == metrics["iwildcam_ood_test/macro_f1"]
    assert suite.reference == "iwildcam_id_test" and "iwildcam_id_test/macro_f1" in metrics


def test_wilds_fmow_is_scored_by_worst_region_accuracy(tiny_bundle, tmp_path, caplog):
    suite, metrics = _scored_fake(shift_fakes.fmow, "wilds_fmow", 62, tiny_bundle, tmp_path, caplog)
    assert "fmow_ood_test has 4 examples, the official count is 22108" in caplog.text
    regions = suite.sets["fmow_ood_test"].data.extras["groups"]["region"]
    assert [k for k in metrics if k.startswith("fmow_ood_test/")] == [
        "fmow_ood_test/worst_region_acc", "fmow_ood_test/top1", "fmow_ood_test/worst_year_acc"]
    assert metrics["fmow_ood_test/worst_region_acc"] == pytest.approx(
        worst_group_accuracy(*saved(tmp_path / "p", "fmow_ood_test"), regions))
    assert metrics["avg_shifts/worst_region_acc"] == metrics["fmow_ood_test/worst_region_acc"]


def test_video_suites_are_scored_by_pm_k_and_mixed_with_top1_in_all_shifts(tiny_bundle, tmp_path, caplog):
    fakes.imagenet_shifts(tmp_path)
    shift_fakes.vid_robust(tmp_path, VID_ANCHORS, VID_LABELS)
    shift_fakes.ytbb_robust(tmp_path, YTBB_ANCHORS)
    cfg = compose_cfg("eval=imagenet_vid_robust", f"paths.data_root={tmp_path}")
    check_data_layouts(cfg, ["evaluate"])
    with caplog.at_level(logging.WARNING):
        suite, metrics = scored(cfg, tiny_bundle, 1000, tmp_path / "p")
    assert "imagenet_vid_robust has 8 examples, the official count is 22179" in caplog.text
    extras = suite.sets["imagenet_vid_robust"].data.extras
    logits, labels = saved(tmp_path / "p", "imagenet_vid_robust")
    assert metrics["imagenet_vid_robust/pm10"] == pytest.approx(
        pm_k(logits, labels, extras["pmk_sets"], extras["label_sets"]))
    assert "imagenet_vid_robust/pm0" in metrics and metrics["avg_shifts/pm10"] == metrics["imagenet_vid_robust/pm10"]

    cfg = compose_cfg("eval=imagenet_all_shifts", f"paths.data_root={tmp_path}")
    check_data_layouts(cfg, ["evaluate"])
    suite, metrics = scored(cfg, tiny_bundle, 1000, tmp_path / "q")
    primary = {c: suite.primary(c) for c in suite.shifts}
    assert primary == {"imagenet_v2": "top1", "imagenet_r": "top1", "imagenet_sketch": "top1", "objectnet": "top1",
                       "imagenet_a": "top1", "imagenet_vid_robust": "pm10", "ytbb_robust": "pm10"}
    assert metrics["avg_shifts/primary"] == pytest.approx(np.mean([metrics[f"{c}/{m}"] for c, m in primary.items()]))
    assert "avg_shifts/top1" not in metrics


@pytest.mark.parametrize("release", ["imagenet_c", "cifar10_c"])
def test_corruption_releases_are_one_column_the_mean_over_corruptions(release, tiny_bundle, tmp_path, caplog):
    corruptions, severities = ["fog", "gaussian_noise"], [1, 3]
    if release == "imagenet_c":
        fakes.imagenet_split(tmp_path)
        for corruption in corruptions:
            shift_fakes.imagenet_c(tmp_path, corruption, severities, fakes.IMAGENET_WNIDS[:3])
        reference, width = "imagenet", 1000
    else:
        fakes.cifar10(tmp_path)
        shift_fakes.cifar10_c(tmp_path, corruptions)
        reference, width = "cifar10", 10
    cfg = compose_cfg(f"eval={release}", f"paths.data_root={tmp_path}",
                      f"eval.corruptions.{release}.corruptions=[{','.join(corruptions)}]",
                      f"eval.corruptions.{release}.severities=[{','.join(map(str, severities))}]")
    check_data_layouts(cfg, ["evaluate"])
    with caplog.at_level(logging.WARNING):
        suite, metrics = scored(cfg, tiny_bundle, width, tmp_path / "p")
    official = {"imagenet_c": 50000, "cifar10_c": 10000}[release]
    assert f"{release}_fog_3 has 3 examples, the official count is {official}" in caplog.text
    assert suite.reference == reference and suite.shifts == [release]
    per_corruption = {c: np.mean([metrics[f"{release}_{c}_{s}/top1"] for s in severities]) for c in corruptions}
    for c, value in per_corruption.items():
        assert metrics[f"{release}_{c}/top1"] == pytest.approx(value)
    assert metrics[f"{release}/top1"] == pytest.approx(np.mean(list(per_corruption.values())))
    assert metrics["avg_shifts/top1"] == metrics[f"{release}/top1"]
