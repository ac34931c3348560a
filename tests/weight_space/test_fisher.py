"""Fisher merging: the floored Fisher-weighted average by hand, and the diagonal Fisher of a linear model."""

from __future__ import annotations

import torch
from torch import nn

from wiseft_lab.weight_space.fisher import diagonal_fisher, fisher_merge
from wiseft_lab.weight_space.soups import uniform_soup


def test_fisher_merge_by_hand():
    pool = [{"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0]), "n": torch.tensor(4)},
            {"w": torch.tensor([3.0, 4.0]), "b": torch.tensor([1.0]), "n": torch.tensor(9)}]
    fishers = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([3.0, 0.0])}]  # "b": no Fisher
    merged = fisher_merge(pool, lambda i, state: fishers[i], floor=1e-8)
    # w[0]: (1 * 1 + 3 * 3) / (1 + 3) = 2.5; w[1]: both Fishers floored to 1e-8 -> the plain mean, 3
    torch.testing.assert_close(merged["w"], torch.tensor([2.5, 3.0]))
    torch.testing.assert_close(merged["b"], torch.tensor([0.5]))  # no Fisher: F = 1, the plain mean
    assert merged["n"].item() == 4  # integer buffers are copied from the first ingredient
    assert fishers[0]["w"].tolist() == [1.0, 0.0]  # the Fishers are not modified in place
    weighted = fisher_merge(pool, lambda i, state: fishers[i], weights=[0.75, 0.25])
    torch.testing.assert_close(weighted["w"][:1], torch.tensor([(0.75 * 1 + 0.25 * 3 * 3) / (0.75 + 0.25 * 3)]))


def test_equal_fishers_give_the_uniform_soup():
    g = torch.Generator().manual_seed(0)
    pool = [{"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)} for _ in range(5)]
    fisher = {"w": torch.rand(4, 3, generator=g) + 0.1, "b": torch.rand(3, generator=g) + 0.1}
    merged = fisher_merge(pool, lambda i, state: fisher)
    uniform = uniform_soup(pool)
    for key in uniform:
        torch.testing.assert_close(merged[key], uniform[key])


def test_diagonal_fisher_of_a_linear_softmax_model():
    """For logits = W x + b the gradient of CE(logits, y) wrt b is p - onehot(y), with y sampled from p."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = torch.randn(10, 4)
    fisher = diagonal_fisher(model, state, enumerate(x), seed=7)
    expected_b, expected_w = torch.zeros(3), torch.zeros(3, 4)
    for index, xi in enumerate(x):
        p = torch.softmax(state["weight"] @ xi + state["bias"], dim=-1)
        y = torch.multinomial(p.unsqueeze(0), 1, generator=torch.Generator().manual_seed(7 * 1_000_003 + index)).item()
        grad_b = p - torch.nn.functional.one_hot(torch.tensor(y), 3).float()
        expected_b += grad_b.square() / len(x)
        expected_w += torch.outer(grad_b, xi).square() / len(x)
    torch.testing.assert_close(fisher["bias"], expected_b, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fisher["weight"], expected_w, rtol=1e-5, atol=1e-7)
    shuffled = diagonal_fisher(model, state, reversed(list(enumerate(x))), seed=7)  # any order, any rank: the same
    torch.testing.assert_close(shuffled["bias"], fisher["bias"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(model.state_dict()["weight"], state["weight"])  # the module is not modified


def test_only_parameters_get_a_fisher():
    """As WiSE-FT's compute_fisher (model.parameters()): buffers such as BatchNorm statistics are averaged plainly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    fisher = diagonal_fisher(model, state, enumerate(torch.randn(5, 4)))
    assert sorted(fisher) == ["0.bias", "0.weight", "1.bias", "1.weight"]
