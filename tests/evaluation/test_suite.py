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
from wiseft_lab.evaluation.metrics import top1
from wiseft_lab.evaluation.suite import average_shifts, group_scores
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.ensemble import OutputEnsemble
from wiseft_lab.models.zeroshot import build_zeroshot_head


def test_top1():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert top1(logits, torch.tensor([1, 0, 0, 0])) == 0.75


def _scored(metrics=None, **extras) -> TaskData:
    return TaskData([], ["x"], extras={"metrics": metrics or ["top1"], **extras})


def test_average_over_the_shift_columns_primary_metrics_and_groups():
    sets = {"ref": _scored(), "a": _scored(), "b": _scored()}
    suite = EvalSuite.from_datasets("ref", sets)
    assert suite.shifts == ["a", "b"] and suite.average_key() == "avg_shifts/top1"
    assert average_shifts(suite, {"ref/top1": 0.0, "a/top1": 0.5, "b/top1": 0.7}) == {
        "avg_shifts/top1": pytest.approx(0.6)}
    assert average_shifts(EvalSuite.from_datasets("ref", {"ref": _scored()}), {"ref/top1": 1.0}) == {}
    # different primary metrics: each shift by its own, under avg_shifts/primary
    mixed = EvalSuite.from_datasets("ref", {"ref": _scored(), "wild": _scored(["macro_f1", "top1"]), "a": _scored()})
    assert average_shifts(mixed, {"wild/macro_f1": 0.2, "wild/top1": 0.9, "a/top1": 0.6}) == {
        "avg_shifts/primary": pytest.approx(0.4)}
    # a group (two corruptions, one with two severities) is one column: the mean over corruptions of the means
    pairs = {"c_noise_1": ("noise", 1), "c_noise_3": ("noise", 3), "c_blur_1": ("blur", 1)}
    grouped = EvalSuite.from_datasets("ref", {"ref": _scored(), "a": _scored(), **{
        n: _scored(corruption=c, severity=v) for n, (c, v) in pairs.items()}})
    grouped.groups = {"c": list(pairs)}
    assert grouped.shifts == ["a", "c"]
    scores = {"a/top1": 0.5, "c_noise_1/top1": 0.6, "c_noise_3/top1": 0.2, "c_blur_1/top1": 0.8}
    columns = group_scores(grouped, scores)
    assert columns == {"c/top1": pytest.approx(0.6), "c_noise/top1": pytest.approx(0.4),
                       "c_blur/top1": pytest.approx(0.8)}
    assert average_shifts(grouped, {**scores, **columns}) == {"avg_shifts/top1": pytest.approx(0.55)}


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
    assert prepared.cached and prepared.images is None  # decoded by its first pass, which scores as it decodes
    first = torch.cat([x for x, _ in prepared.batches(7, torch.device("cpu"))])
    assert prepared.images.dtype == torch.uint8 and prepared.pending is None
    cached = torch.cat([x for x, _ in prepared.batches(7, torch.device("cpu"))])
    assert torch.equal(first, reference) and torch.equal(cached, reference)
    again = EvalSuite.build("sketch", {"sketch": functools.partial(synthetic_styles, "test", style="sketch",
                                                                    n_per_class=2)},
                            transform, cache_keys={"sketch": "k"}).sets["sketch"]
    assert again.images is prepared.images  # decoded once per process
    shuffled = EvalSuite.build("s", {"s": functools.partial(synthetic_styles, "test", style="sketch", n_per_class=2)},
                               transform, cache_keys={"s": "k3"}).sets["s"]
    order = torch.cat([x for x, _ in shuffled.batches(3, torch.device("cpu"), torch.Generator().manual_seed(0))])
    assert shuffled.images is not None and torch.equal(order.sort(0).values, reference.sort(0).values)
    broken = EvalSuite.build("b", {"b": functools.partial(synthetic_styles, "test", style="sketch", n_per_class=2)},
                             transform, cache_keys={"b": "k4"}).sets["b"]
    next(iter(broken.batches(2, torch.device("cpu"))))  # a pass left unfinished keeps nothing half-decoded
    assert broken.images is None and broken.pending is not None
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


def test_an_output_ensemble_is_projected_member_by_member_before_the_mean():
    # Head classes (0, 1, 2), ObjectNet-like groups {0, 1} and {2}. Members: (5, 0, 3) and (0, 5, 3).
    # Projected first: (5, 3) and (5, 3), mean (5, 3): class 0 (right). Averaged first: (2.5, 2.5, 3) -> (2.5, 3): 1.
    members = [{"weight": torch.tensor([5.0, 0.0, 3.0])}, {"weight": torch.tensor([0.0, 5.0, 3.0])}]

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(3))

        def forward(self, images):
            return self.weight.expand(len(images), 3)

    ensemble = OutputEnsemble(Constant(), members)
    data = TaskData([(torch.zeros(1), 0)], ["group a", "group b"], projection=MaxOverGroups([[0, 1], [2]]))
    metrics = evaluate(ensemble, EvalSuite.from_datasets("objectnet", {"objectnet": data}), progress=False)
    assert metrics["objectnet/top1"] == 1.0
    assert ensemble(torch.zeros(1, 1)).tolist() == [[2.5, 2.5, 3.0]]  # forward stays the mean of the logits
