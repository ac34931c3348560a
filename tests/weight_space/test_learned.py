"""Learned soups: the streamed coefficient gradient equals autograd's, and both paths learn the same soup."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from wiseft_lab.io import write_safetensors
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.zeroshot import ClassificationHead
from wiseft_lab.weight_space.deltas import shared_except
from wiseft_lab.weight_space.learned import (
    HeadOnly,
    LearnedSoupConfig,
    PoolMixer,
    SoupCoefficients,
    coefficient_gradients,
    learned_soup,
)
from wiseft_lab.weight_space.soups import uniform_soup


def _net() -> nn.Module:
    torch.manual_seed(0)
    # BatchNorm (eval) brings float buffers that are mixed and an integer buffer that is copied.
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.GELU(), nn.Linear(8, 3)).eval()


def _pool(net: nn.Module, n: int = 4) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    pool = []
    for i in range(n):
        state = {k: v.clone() for k, v in net.state_dict().items()}
        for value in state.values():
            if value.is_floating_point():
                value.add_(0.3 * torch.randn(value.shape, generator=g))
            else:
                value.fill_(i + 10)
        state["1.running_var"].abs_()
        pool.append(state)
    return pool


def _params(net: nn.Module) -> set[str]:
    return {name for name, _ in net.named_parameters()}


def _data():
    g = torch.Generator().manual_seed(2)
    return torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


@pytest.mark.parametrize("per_layer", [False, True])
def test_streamed_gradient_equals_autograd(per_layer, tmp_path):
    net, (x, y) = _net(), _data()
    pool = _pool(net)
    files = []
    for i, state in enumerate(pool):
        files.append(write_safetensors(tmp_path / f"{i}.safetensors", state))
    grads = {}
    for path, (sources, streaming) in {"autograd": (pool, False), "streamed": (pool, True),
                                       "streamed from files": (files, True)}.items():
        mixer = PoolMixer(sources, per_layer=per_layer, streaming=streaming, grad_keys=_params(net),
                          order=list(net.state_dict()))
        coefficients = SoupCoefficients(len(mixer.rows), mixer.n)
        with torch.no_grad():  # away from the uniform start, so that every row has its own gradient
            noise = torch.randn(coefficients.logits.shape, generator=torch.Generator().manual_seed(3))
            coefficients.logits.copy_(noise)
            coefficients.beta.fill_(1.7)
        loss = coefficient_gradients(net, mixer, coefficients, (x, y))
        grads[path] = (loss, coefficients.logits.grad.clone(), coefficients.beta.grad.clone())
    reference = grads["autograd"]
    assert reference[1].shape == ((8 if per_layer else 1), 4)  # per layer: 6 parameters + 2 BatchNorm statistics
    assert (reference[1].abs().sum(1) > 1e-4).sum() == (6 if per_layer else 1)  # the statistics get no gradient
    for path in ("streamed", "streamed from files"):
        torch.testing.assert_close(grads[path][0], reference[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(grads[path][1], reference[1], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(grads[path][2], reference[2], rtol=1e-5, atol=1e-7)


def test_mixer_rows_are_the_floating_tensors():
    net = _net()
    mixer = PoolMixer(_pool(net), per_layer=True, streaming=True)
    assert mixer.rows == [k for k, v in net.state_dict().items() if v.is_floating_point()]
    assert list(mixer.fixed) == ["1.num_batches_tracked"] and mixer.fixed["1.num_batches_tracked"].item() == 10


@pytest.mark.parametrize("per_layer", [False, True])
def test_both_paths_learn_the_same_soup(per_layer):
    net, (x, y) = _net(), _data()
    pool = _pool(net)
    results = [learned_soup(net, pool, lambda epoch: [(x[:8], y[:8]), (x[8:], y[8:])],
                            LearnedSoupConfig(epochs=3, per_layer=per_layer, streaming=streaming))
               for streaming in (True, False)]
    streamed, in_memory = results
    assert streamed.streaming and not in_memory.streaming
    torch.testing.assert_close(streamed.coefficients, in_memory.coefficients, rtol=1e-5, atol=1e-6)
    assert streamed.beta == pytest.approx(in_memory.beta, rel=1e-5) and streamed.beta != 1.0
    assert [h["loss"] for h in streamed.history] == pytest.approx([h["loss"] for h in in_memory.history], rel=1e-5)
    for key in pool[0]:
        torch.testing.assert_close(streamed.state[key], in_memory.state[key], rtol=1e-5, atol=1e-6)
    # the soup is sum_i alpha_i theta_i with the learned coefficients
    alphas = streamed.coefficients
    row = {k: i for i, k in enumerate(streamed.rows)}
    weight = "0.weight"
    expected = sum(alphas[row.get(weight, 0), i] * pool[i][weight] for i in range(len(pool)))
    torch.testing.assert_close(streamed.state[weight], expected, rtol=1e-5, atol=1e-6)
    assert streamed.state["1.num_batches_tracked"].item() == 10
    assert torch.allclose(alphas.sum(1), torch.ones(len(streamed.rows)))


@pytest.mark.parametrize("streaming", [True, False])
def test_keys_restrict_what_is_mixed_and_the_rest_is_the_first_ingredients(streaming):
    # a cross-dataset soup: the last layer plays the target's head, fixed; only the rest is mixed and learned
    net, (x, y) = _net(), _data()
    pool = _pool(net)
    head = {"3.weight", "3.bias"}
    keys = {k for k, v in pool[0].items() if v.is_floating_point()} - head
    result = learned_soup(net, pool, lambda epoch: [(x[:8], y[:8]), (x[8:], y[8:])],
                          LearnedSoupConfig(epochs=3, per_layer=True, streaming=streaming), keys=keys)
    assert set(result.rows) == keys and not torch.allclose(result.coefficients, torch.full_like(result.coefficients,
                                                                                                0.25))
    for key in head:
        assert torch.equal(result.state[key], pool[0][key])
    row = result.rows.index("0.weight")
    expected = sum(result.coefficients[row, i] * pool[i]["0.weight"] for i in range(len(pool)))
    torch.testing.assert_close(result.state["0.weight"], expected, rtol=1e-5, atol=1e-6)


def test_start_is_uniform_and_no_training_gives_the_uniform_soup():
    net = _net()
    pool = _pool(net)
    assert torch.equal(SoupCoefficients(3, 4).alphas(), torch.full((3, 4), 0.25))
    result = learned_soup(net, pool, lambda epoch: [], LearnedSoupConfig(epochs=1, streaming=True))
    uniform = uniform_soup(pool)
    for key in uniform:
        torch.testing.assert_close(result.state[key], uniform[key])


def test_auto_streaming_follows_the_memory_limit():
    net = _net()
    pool = _pool(net)
    few = LearnedSoupConfig(epochs=0, streaming=None, max_memory_gb=1.0)
    none = LearnedSoupConfig(epochs=0, streaming=None, max_memory_gb=0.0)
    assert not learned_soup(net, pool, lambda e: [], few).streaming
    assert learned_soup(net, pool, lambda e: [], none).streaming


def test_reference_style_autograd_matches_on_a_copied_model():
    """The in-memory path is the reference's AlphaWrapper: loss of beta * model(x; sum_i alpha_i theta_i)."""
    net, (x, y) = _net(), _data()
    pool = _pool(net)
    coefficients = SoupCoefficients(1, len(pool))
    mixer = PoolMixer(pool, per_layer=False, streaming=True, grad_keys=_params(net))
    coefficient_gradients(net, mixer, coefficients, (x, y))
    logits = coefficients.logits.detach().clone().requires_grad_()
    alphas = torch.softmax(logits, dim=1)[0]
    model = copy.deepcopy(net)
    params = _params(net)
    mixed = {k: sum((a if k in params else a.detach()) * s[k] for a, s in zip(alphas, pool, strict=True))
             if pool[0][k].is_floating_point() else pool[0][k] for k in pool[0]}
    loss = nn.functional.cross_entropy(torch.func.functional_call(model, mixed, (x,)), y)
    loss.backward()
    torch.testing.assert_close(coefficients.logits.grad, logits.grad, rtol=1e-4, atol=1e-7)


def _sum_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.sum()


# Two ingredients of y = w . x + b: w = [1, 0], b = 1 and w = [0, 2], b = 3; one example x = [1, 1]. At the uniform
# start (alpha = [0.5, 0.5], beta = 1): theta = (w [0.5, 1], b 2), L = beta * theta(x) = 3.5, dL/dtheta = (x, 1).
HAND_POOL = [{"weight": torch.tensor([[1.0, 0.0]]), "bias": torch.tensor([1.0])},
             {"weight": torch.tensor([[0.0, 2.0]]), "bias": torch.tensor([3.0])}]
HAND_BATCH = (torch.tensor([[1.0, 1.0]]), torch.tensor([0]))


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("per_layer", [False, True])
def test_coefficient_gradient_by_hand(streaming, per_layer, tmp_path):
    net = nn.Linear(2, 1)
    files = [write_safetensors(tmp_path / f"{i}.safetensors", s) for i, s in enumerate(HAND_POOL)]
    for sources in (HAND_POOL, files):
        mixer = PoolMixer(sources, per_layer=per_layer, streaming=streaming, grad_keys=_params(net),
                          order=list(net.state_dict()))
        coefficients = SoupCoefficients(len(mixer.rows), mixer.n)
        loss = coefficient_gradients(net, mixer, coefficients, HAND_BATCH, loss_fn=_sum_loss)
        assert loss.item() == pytest.approx(3.5)
        # dL/dalpha_i = <dL/dtheta, theta_i>: weight rows <x, w_i> = [1, 2], bias rows <1, b_i> = [1, 3]; the
        # softmax's chain rule at alpha = 1/2: dL/dlogit_i = alpha_i * (g_i - sum_j alpha_j g_j).
        if per_layer:
            assert mixer.rows == ["weight", "bias"]
            expected = [[0.5 * (1 - 1.5), 0.5 * (2 - 1.5)], [0.5 * (1 - 2), 0.5 * (3 - 2)]]
        else:  # one row: g = [1 + 1, 2 + 3] = [2, 5]
            expected = [[0.5 * (2 - 3.5), 0.5 * (5 - 3.5)]]
        torch.testing.assert_close(coefficients.logits.grad, torch.tensor(expected))
        assert coefficients.beta.grad.item() == pytest.approx(3.5)  # dL/dbeta = theta(x)


def test_one_adamw_step_by_hand():
    """AdamW's first step moves every coefficient logit by lr against its gradient's sign (lr 0.05, no decay)."""
    result = learned_soup(nn.Linear(2, 1), HAND_POOL, lambda epoch: [HAND_BATCH],
                          LearnedSoupConfig(epochs=1, streaming=True), loss_fn=_sum_loss)
    # logits 1/2 -> [0.55, 0.45] (gradient [-0.75, 0.75]); beta 1 -> 0.95 (gradient 3.5)
    assert result.beta == pytest.approx(0.95, abs=1e-6)
    a = 1 / (1 + math.exp(-0.1))  # softmax([0.55, 0.45])[0]
    torch.testing.assert_close(result.coefficients, torch.tensor([[a, 1 - a]]))
    torch.testing.assert_close(result.state["weight"], torch.tensor([[a, 2 * (1 - a)]]))
    torch.testing.assert_close(result.state["bias"], torch.tensor([a + 3 * (1 - a)]))
    assert result.rows == ["*"] and [h["loss"] for h in result.history] == [pytest.approx(3.5)]


@pytest.mark.parametrize("per_layer", [False, True])
def test_ingredients_sharing_a_tower_learn_the_same_soup_on_its_outputs(per_layer, tiny_bundle):
    """Linear-classifier fine-tunes share the image tower: the soup learned on the tower's outputs, computed once,
    with only the heads mixed, is the soup learned through the whole model (the tower's gradient terms cancel)."""
    dim = tiny_bundle.model.visual.output_dim
    torch.manual_seed(0)
    model = ImageClassifier(copy.deepcopy(tiny_bundle.model), ClassificationHead(torch.randn(3, dim))).eval()
    g = torch.Generator().manual_seed(2)
    pool = []
    for _ in range(3):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["head.weight"] = torch.randn(state["head.weight"].shape, generator=g)
        pool.append(state)
    images, labels = torch.randn(12, 3, 32, 32, generator=g), torch.arange(12) % 3
    config = LearnedSoupConfig(epochs=3, lr=0.1, per_layer=per_layer, streaming=True)
    full = learned_soup(model, pool, lambda epoch: [(images[:8], labels[:8]), (images[8:], labels[8:])], config)
    with torch.no_grad():
        features = model.image_features(images)
    heads = [k for k in pool[0] if k.startswith("head.")]
    on_features = learned_soup(HeadOnly(model.head), pool, lambda epoch: [(features[:8], labels[:8]),
                                                                         (features[8:], labels[8:])],
                               config, keys=heads)
    assert shared_except(pool, "head.") and not shared_except([pool[0], {**pool[1], **{
        k: v + 1 for k, v in pool[1].items() if k.startswith("clip.visual.conv1")}}], "head.")
    rows = [full.rows.index(k) for k in on_features.rows] if per_layer else [0]
    torch.testing.assert_close(on_features.coefficients, full.coefficients[rows], rtol=1e-4, atol=1e-6)
    assert on_features.beta == pytest.approx(full.beta, rel=1e-4)
    for key, value in full.state.items():
        if key.startswith("head."):
            torch.testing.assert_close(on_features.state[key], value, rtol=1e-4, atol=1e-6)
        else:  # the tower itself, not a mix of equal towers
            assert torch.equal(on_features.state[key], pool[0][key]), key
