"""Evaluation: metrics, logit projections, and the decoded-set cache giving bit-identical inputs."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from wiseft_lab import EvalSuite, TaskData, evaluate
from wiseft_lab.data.base import MaxOverGroups, SelectColumns, project_logits
from wiseft_lab.data.cache import cache_device, clear_memory_cache, split_transform
from wiseft_lab.data.sources import synthetic_styles
from wiseft_lab.data.splits import LabeledSubset
from wiseft_lab.evaluation.metrics import average_over, top1
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.zeroshot import build_zeroshot_head


def test_top1_and_average():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert top1(logits, torch.tensor([1, 0, 0, 0])) == 0.75
    assert average_over({"a/top1": 0.5, "b/top1": 0.7, "c/top1": 0.0}, ["a", "b"]) == pytest.approx(0.6)
    assert average_over({}, []) is None


def test_projections():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]])
    data = TaskData([], ["x", "y"], projection=SelectColumns([3, 1]))
    assert project_logits(logits, data).tolist() == [[4.0, 5.0]]
    grouped = TaskData([], ["x", "y"], projection=MaxOverGroups([[0, 2], [1, 3]]))
    assert project_logits(logits, grouped).tolist() == [[3.0, 5.0]]
    same_width = TaskData([], ["a", "b", "c", "d"], projection=SelectColumns([0]))
    assert project_logits(logits, same_width) is logits  # a head built for the set's own classes
    with pytest.raises(ValueError, match="defines no logit projection"):
        project_logits(logits, TaskData([], ["x"]))


def test_cached_inputs_are_bit_identical_to_the_plain_transform(tiny_bundle):
    transform = tiny_bundle.preprocess_val
    plain = synthetic_styles("test", transform, style="sketch", n_per_class=2)
    reference = torch.stack([plain.dataset[i][0] for i in range(len(plain.dataset))])
    clear_memory_cache()
    suite = EvalSuite.build("sketch", {"sketch": functools.partial(synthetic_styles, "test", style="sketch",
                                                                    n_per_class=2)},
                            transform, cache_keys={"sketch": "k"})
    prepared = suite.sets["sketch"]
    assert prepared.cached and prepared.images.dtype == torch.uint8
    cached = torch.cat([x for x, _ in prepared.batches(7, torch.device("cpu"))])
    assert torch.equal(cached, reference)
    # A set over the memory budget streams instead, with the same inputs.
    streamed = EvalSuite.build("s", {"s": functools.partial(synthetic_styles, "test", style="sketch", n_per_class=2)},
                               transform, cache_keys={"s": "k2"}, max_cache_bytes=10).sets["s"]
    assert not streamed.cached
    assert torch.equal(torch.cat([x for x, _ in streamed.batches(7, torch.device("cpu"))]), reference)
    assert split_transform(lambda x: x).mean is None


def test_evaluate_reports_every_set_and_the_shift_average(tiny_bundle, tmp_path):
    clip = copy.deepcopy(tiny_bundle.model)
    transform = tiny_bundle.preprocess_val
    photo = synthetic_styles("test", transform, style="photo", n_per_class=3)
    sketch = synthetic_styles("test", transform, style="sketch", n_per_class=3)
    model = ImageClassifier(clip, build_zeroshot_head(clip, tiny_bundle.tokenizer, photo.classnames, "simple"))
    # A shifted set over a subset of the head's classes (like ImageNet-R): labels 0..1, columns [0, 1].
    two_classes = LabeledSubset(sketch.dataset, [i for i in range(len(sketch.dataset)) if i % 10 < 2])
    suite = EvalSuite.from_datasets("photo", {
        "photo": photo,
        "sketch2": TaskData(two_classes, ["circle", "square"], projection=SelectColumns([0, 1])),
    })
    metrics = evaluate(model, suite, batch_size=8, predictions_dir=tmp_path, progress=False)
    assert set(metrics) == {"photo/top1", "sketch2/top1", "avg_shifts/top1", "n/photo", "n/sketch2"}
    assert metrics["avg_shifts/top1"] == metrics["sketch2/top1"]
    assert (metrics["n/photo"], metrics["n/sketch2"]) == (30, 6)
    saved = load_file(tmp_path / "sketch2.safetensors")
    assert saved["raw_logits"].shape == (6, 10) and saved["logits"].shape == (6, 2)
    torch.testing.assert_close(saved["logits"], saved["raw_logits"][:, :2])
    labels = torch.cat([y for _, y in DataLoader(two_classes, batch_size=30)])
    assert torch.equal(saved["labels"], labels)
    assert metrics["sketch2/top1"] == top1(saved["logits"], labels)


@pytest.mark.parametrize(("mode", "device", "needed", "free", "expected"), [
    ("auto", "cuda:0", 10, 20, "cuda:0"),   # fits in half the free memory: resident on the GPU
    ("auto", "cuda:0", 11, 20, "cpu"),      # over half: stays on the CPU (pinned), copied per batch
    ("device", "cuda:0", 11, 20, "cuda:0"),  # asked for explicitly
    ("cpu", "cuda:0", 1, 20, "cpu"),
    ("auto", "cpu", 1, None, "cpu"),
    ("device", "cpu", 1, None, "cpu"),
])
def test_where_a_decoded_set_lives(mode, device, needed, free, expected):
    assert cache_device(mode, torch.device(device), needed, free) == torch.device(expected)


def test_an_unknown_cache_device_is_refused():
    with pytest.raises(ValueError, match="eval.cache_device='gpu'"):
        cache_device("gpu", torch.device("cpu"), 1, None)
