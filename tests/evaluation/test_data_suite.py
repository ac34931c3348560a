"""eval=imagenet_shifts end to end on a fake tree: counts, size warnings, predictions, and failing before training."""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from safetensors.torch import load_file

from tests import data_fakes as fakes
from tests.conftest import run_cli
from wiseft_lab.cli import config_dir
from wiseft_lab.data.cache import clear_memory_cache
from wiseft_lab.data.eval_sets import check_data_layouts
from wiseft_lab.data.imagenet import objectnet_classes, subset_indices
from wiseft_lab.data.layouts import DataLayoutError
from wiseft_lab.evaluation.suite import EvalSuite, evaluate
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.zeroshot import ClassificationHead

SHIFTS = ["imagenet_v2", "imagenet_r", "imagenet_sketch", "objectnet", "imagenet_a"]


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(Path(config_dir())), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_imagenet_shifts_suite(tiny_bundle, tmp_path, caplog):
    data_root = tmp_path / "data"
    counts = fakes.imagenet_shifts(data_root)
    cfg = compose_cfg("eval=imagenet_shifts", f"paths.data_root={data_root}", "eval.num_workers=0")
    assert cfg.eval.reference == "imagenet" and list(cfg.eval.datasets) == ["imagenet", *SHIFTS]
    assert cfg.eval.datasets.objectnet.border_crop is False
    check_data_layouts(cfg, ["evaluate"])   # the pre-flight check passes on a complete layout
    builders = {name: instantiate(node) for name, node in cfg.eval.datasets.items()}
    clear_memory_cache()
    with caplog.at_level(logging.WARNING):
        suite = EvalSuite.build(cfg.eval.reference, builders, tiny_bundle.preprocess_val,
                                cache_keys={name: f"{tmp_path}:{name}" for name in builders})
    for name, official in [("imagenet", 50_000), ("imagenet_v2", 10_000), ("imagenet_r", 30_000),
                           ("imagenet_sketch", 50_889), ("objectnet", 18_574), ("imagenet_a", 7_500)]:
        assert f"{name} has {counts[name]} examples, the official count is {official}" in caplog.text
    assert all(prepared.cached for prepared in suite.sets.values())
    for prepared in suite.sets.values():   # DataLoader workers need picklable datasets
        pickle.loads(pickle.dumps(prepared.data.dataset))

    clip = copy.deepcopy(tiny_bundle.model)
    dim = clip.encode_image(torch.zeros(1, 3, 32, 32)).shape[-1]
    torch.manual_seed(0)
    model = ImageClassifier(clip, ClassificationHead(torch.randn(1000, dim)))
    metrics = evaluate(model, suite, batch_size=4, predictions_dir=tmp_path / "predictions", progress=False)
    assert {name: metrics[f"n/{name}"] for name in counts} == counts
    assert suite.shifts == SHIFTS and "avg_shifts/top1" in metrics
    assert metrics["avg_shifts/top1"] == pytest.approx(sum(metrics[f"{s}/top1"] for s in SHIFTS) / 5)

    saved = {name: load_file(tmp_path / "predictions" / f"{name}.safetensors") for name in counts}
    for name, width in [("imagenet", 1000), ("imagenet_v2", 1000), ("imagenet_r", 200), ("imagenet_sketch", 1000),
                        ("objectnet", 113), ("imagenet_a", 200)]:
        assert saved[name]["logits"].shape == (counts[name], width)
        assert saved[name]["raw_logits"].shape == (counts[name], 1000)
        assert saved[name]["labels"].shape == (counts[name],)
    for which in ("imagenet_r", "imagenet_a"):   # the user can check the projection from the files
        torch.testing.assert_close(saved[which]["logits"], saved[which]["raw_logits"][:, subset_indices(which)])
    raw = saved["objectnet"]["raw_logits"]
    for k, group in enumerate(c["imagenet_indices"] for c in objectnet_classes()):
        torch.testing.assert_close(saved["objectnet"]["logits"][:, k], raw[:, group].amax(dim=-1).to(raw.dtype))
    assert saved["imagenet_r"]["labels"].tolist() == [0, 7, 199]


def test_preflight_names_the_missing_data(tmp_path):
    cfg = compose_cfg("eval=imagenet_shifts", f"paths.data_root={tmp_path}")
    with pytest.raises(DataLayoutError, match="ImageNet val") as err:
        check_data_layouts(cfg, ["finetune", "merge", "evaluate"])
    assert str((tmp_path / "imagenet" / "val").resolve()) in str(err.value)
    check_data_layouts(cfg, ["finetune"])   # the synthetic training set needs no files
    cfg = compose_cfg("data=imagenet", f"paths.data_root={tmp_path}")
    with pytest.raises(DataLayoutError, match="ImageNet train"):
        check_data_layouts(cfg, ["finetune"])
    # base-to-novel wraps the data config's source: it is checked on the eval split
    fakes.dtd_torchvision(tmp_path, per_split=1)
    (tmp_path / "dtd" / "dtd" / "labels" / "test1.txt").unlink()
    cfg = compose_cfg("experiment=b2n", "data=dtd", f"paths.data_root={tmp_path}")
    with pytest.raises(DataLayoutError, match="DTD"):
        check_data_layouts(cfg, ["evaluate"])


@pytest.mark.slow
def test_a_run_with_missing_eval_data_fails_before_training(tmp_path):
    proc = run_cli("smoke=tiny", "eval=imagenet_shifts", f"paths.data_root={tmp_path / 'nothing'}",
                   "logger=none", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    shown = proc.stdout + proc.stderr   # the message alone: it names the path and the layout
    assert "imagenet/val" in shown and "Expected layout" in shown and "Traceback" not in shown
    assert not list(tmp_path.glob("outputs/*/runs/*/checkpoints/zeroshot"))   # nothing was trained or saved
