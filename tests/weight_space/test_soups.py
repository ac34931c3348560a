"""Uniform and greedy soups on hand-computed tiny state dicts, from memory and from safetensors files."""

from __future__ import annotations

import operator

import pytest
import torch

from tests.weight_space.state_dirs import state_dirs
from wiseft_lab.weight_space.ingredients import check_pool, iter_tensors
from wiseft_lab.weight_space.soups import greedy_order, greedy_soup, uniform_soup


def _state(w, steps=0, flag=True):
    return {"w": torch.tensor(w, dtype=torch.float32), "steps": torch.tensor(steps),
            "flag": torch.tensor([flag, not flag])}


def test_uniform_soup_is_the_mean_and_copies_integer_buffers(tmp_path):
    states = [_state([[1.0, 2.0], [3.0, 4.0]], 3, True), _state([[5.0, 6.0], [7.0, 8.0]], 7, False),
              _state([[0.0, 1.0], [2.0, 3.0]], 9, False)]
    for pool in (states, state_dirs(tmp_path, states)):
        for accumulate in ("fp32", "fp64"):
            soup = uniform_soup(pool, accumulate=accumulate)
            assert soup["w"].dtype == torch.float32
            assert soup["w"].tolist() == [[2.0, 3.0], [4.0, 5.0]]
            assert soup["steps"].item() == 3 and soup["flag"].tolist() == [True, False]  # from the first
            assert sorted(soup) == ["flag", "steps", "w"]


def test_uniform_soup_of_identical_models_is_the_model():
    g = torch.Generator().manual_seed(0)
    model = {"a": torch.randn(64, 33, generator=g), "b": torch.randn(7, generator=g).half(), "n": torch.tensor(5)}
    soup = uniform_soup([model] * 7, accumulate="fp64")
    for key in model:  # bit for bit with fp64 accumulation
        assert soup[key].dtype == model[key].dtype and torch.equal(soup[key], model[key]), key
    torch.testing.assert_close(uniform_soup([model] * 7, accumulate="fp32")["a"], model["a"])


def test_pool_mismatch_names_the_ingredient_and_the_first_bad_key(tmp_path):
    a = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"Ingredient 'run2'.*key 'w' has shape \(3, 2\) vs \(2, 3\)"):
        check_pool([a, a, {"w": torch.zeros(3, 2), "b": torch.zeros(3)}], ["run0", "run1", "run2"])
    with pytest.raises(ValueError, match=r"Ingredient 'x'.*key 'b' of 'r' is missing"):
        uniform_soup([a, {"w": torch.zeros(2, 3)}], names=["r", "x"])
    with pytest.raises(ValueError, match=r"key 'extra' is not in"):
        check_pool([a, {**a, "extra": torch.zeros(1)}])
    with pytest.raises(ValueError, match=r"'b' is not floating point"):
        check_pool([a, {**a, "b": torch.zeros(3, dtype=torch.long)}])
    files = state_dirs(tmp_path, [a, {"w": torch.zeros(2, 4), "b": torch.zeros(3)}])
    with pytest.raises(ValueError, match=r"m1.*key 'w' has shape \(2, 4\)"):
        uniform_soup(files)
    with pytest.raises(ValueError, match="pool is empty"):
        uniform_soup([])


def test_greedy_order_is_the_references_sort_then_reverse():
    accs = [0.5, 0.7, 0.7, 0.6, 0.5, 0.9]
    reference = sorted({f"model_{i}": a for i, a in enumerate(accs)}.items(), key=operator.itemgetter(1))
    reference.reverse()
    assert [f"model_{i}" for i in greedy_order(accs)] == [name for name, _ in reference]
    assert greedy_order(accs) == [5, 2, 1, 3, 4, 0]  # ties: the later ingredient first


def _table_scorer(table):
    """Held-out accuracy of a one-weight soup, looked up by its value (hand-computed cases)."""
    seen = []

    def score(state):
        value = state["w"].item()
        seen.append(value)
        key = min(table, key=lambda k: abs(k - value))
        assert abs(key - value) < 1e-5, f"no score for a soup with w={value}"
        return table[key]
    return score, seen


# Ingredients A..D with w = 0, 3, 6, 9; held-out 0.5, 0.7, 0.7, 0.6 -> tried in the order C, B, D, A.
POOL = [_state([0.0], 1), _state([3.0], 2), _state([6.0], 3), _state([9.0], 4)]
NAMES = ["A", "B", "C", "D"]
HELDOUT = [0.5, 0.7, 0.7, 0.6]
SCORES = {4.5: 0.7, 7.5: 0.8, 5.0: 0.8, 6.0: 0.7}


def test_greedy_soup_strict_acceptance_by_hand(tmp_path):
    for pool in (POOL, state_dirs(tmp_path, POOL)):
        score, seen = _table_scorer(SCORES)
        result = greedy_soup(pool, HELDOUT, score, names=NAMES, accept="gt")
        # C alone (0.7); +B: (6 + 3) / 2 = 4.5 scores 0.7, a tie: rejected; +D: (6 + 9) / 2 = 7.5 -> 0.8: accepted;
        # +A: 7.5 * 2/3 + 0 / 3 = 5.0 -> 0.8, a tie: rejected.
        assert seen == pytest.approx([4.5, 7.5, 5.0])
        assert result.order == ["C", "B", "D", "A"] and result.ingredients == ["C", "D"]
        assert result.state["w"].item() == pytest.approx(7.5) and result.holdout == 0.8
        assert result.state["steps"].item() == 3  # integer buffers come from the best ingredient
        assert [(s.candidate, s.holdout, s.accepted, s.n_ingredients) for s in result.trace] == [
            ("C", 0.7, True, 1), ("B", 0.7, False, 1), ("D", 0.8, True, 2), ("A", 0.8, False, 2)]
        assert result.trace[2].best_before == 0.7


def test_greedy_soup_ge_accepts_ties_by_hand():
    score, seen = _table_scorer(SCORES)
    result = greedy_soup(POOL, HELDOUT, score, names=NAMES, accept="ge")
    # +B: 4.5 -> 0.7 accepted (tie); +D: 4.5 * 2/3 + 9/3 = 6 -> 0.7 accepted; +A: 6 * 3/4 + 0 = 4.5 -> accepted.
    assert seen == pytest.approx([4.5, 6.0, 4.5])
    assert result.ingredients == ["C", "B", "D", "A"] and result.state["w"].item() == pytest.approx(4.5)
    with pytest.raises(ValueError, match="merge.accept"):
        greedy_soup(POOL, HELDOUT, score, accept="gte")


def test_greedy_soup_from_a_fixed_start_mixes_only_the_given_keys_by_hand():
    # A cross-dataset soup: Z (the target's zero-shot model) first whatever its held-out accuracy, then A (0.9)
    # and B (0.7); "head" is not among the keys, so it stays Z's although every ingredient has another one.
    pool = [{"w": torch.tensor([w]), "head": torch.tensor([h])} for w, h in ((0.0, 1.0), (3.0, 2.0), (6.0, 4.0))]
    score, seen = _table_scorer({1.5: 0.6, 3.0: 0.55})
    result = greedy_soup(pool, [0.5, 0.9, 0.7], score, names=["Z", "A", "B"], accept="ge", first=0, keys={"w"})
    # Z alone (0.5); +A: (0 + 3) / 2 = 1.5 -> 0.6: kept; +B: 1.5 * 2/3 + 6/3 = 3.0 -> 0.55 < 0.6: rejected.
    assert seen == pytest.approx([1.5, 3.0]) and result.order == ["Z", "A", "B"] and result.ingredients == ["Z", "A"]
    assert result.state["w"].item() == pytest.approx(1.5) and result.holdout == 0.6
    assert result.state["head"].item() == 1.0
    assert greedy_soup(pool, [0.5, 0.9, 0.7], _table_scorer({4.5: 0.95, 3.0: 0.9})[0], first=None,
                       keys={"w"}).state["head"].item() == 2.0  # without a fixed start: from the best, A


def _linear_problem(seed: int, n_models: int = 6):
    g = torch.Generator().manual_seed(seed)
    x, w_true = torch.randn(64, 5, generator=g), torch.randn(5, 3, generator=g)
    y = (x @ w_true).argmax(1)
    base = w_true + 0.8 * torch.randn(5, 3, generator=g)
    pool = [{"w": base + 0.8 * torch.randn(5, 3, generator=g), "b": 0.3 * torch.randn(3, generator=g)}
            for _ in range(n_models)]

    def score(state):
        return ((x @ state["w"] + state["b"]).argmax(1) == y).float().mean().item()
    return pool, score


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("accept", ["gt", "ge"])
def test_greedy_soup_never_lowers_held_out_accuracy(seed, accept):
    pool, score = _linear_problem(seed)
    held = [score(s) for s in pool]
    result = greedy_soup(pool, held, score, accept=accept)
    assert score(result.state) == result.holdout >= max(held)
    best = result.trace[0].holdout
    for step in result.trace[1:]:
        assert (step.holdout > best or (accept == "ge" and step.holdout == best)) == step.accepted
        best = max(best, step.holdout) if step.accepted else best
    assert len(result.ingredients) == sum(s.accepted for s in result.trace)


@pytest.mark.parametrize("accept", ["gt", "ge"])
def test_candidates_built_in_the_scoring_models_tensors_give_the_same_soup(accept):
    pool, score = _linear_problem(3)
    held = [score(s) for s in pool]
    model = torch.nn.Module()
    model.w, model.b = torch.nn.Parameter(torch.zeros(5, 3)), torch.nn.Parameter(torch.zeros(3))
    borrowed = model.state_dict()  # shares the parameters' memory
    seen = []

    def score_in_model(state):
        model.load_state_dict(state)  # loading the borrowed tensors onto themselves
        seen.append(state["w"].data_ptr() == model.w.data_ptr())
        return score({"w": model.w.detach(), "b": model.b.detach()})

    plain = greedy_soup(pool, held, score, accept=accept)
    borrowed_result = greedy_soup(pool, held, score_in_model, accept=accept, candidate_into=borrowed)
    assert all(seen) and len(seen) == len(pool) - 1
    assert borrowed_result.trace == plain.trace and borrowed_result.ingredients == plain.ingredients
    for key in plain.state:
        assert torch.equal(borrowed_result.state[key], plain.state[key])
        assert borrowed_result.state[key].data_ptr() != borrowed[key].data_ptr()  # the soup is its own copy


def test_files_are_streamed_one_tensor_at_a_time(tmp_path):
    states = [{f"t{k}": torch.full((100,), float(i + k)) for k in range(20)} for i in range(3)]
    paths = state_dirs(tmp_path, states)
    tensors = list(iter_tensors(paths[1], max_mapped_bytes=1000))  # re-opens the map every few tensors
    assert sorted(k for k, _ in tensors) == sorted(f"t{k}" for k in range(20))
    assert all(torch.equal(t, states[1][k]) for k, t in tensors)
    assert list(dict(iter_tensors(paths[0], keys=["t3", "t1"]))) == ["t3", "t1"]
    from_files, in_memory = uniform_soup(paths), uniform_soup(states)
    assert from_files.keys() == in_memory.keys()
    assert all(torch.equal(from_files[k], in_memory[k]) for k in in_memory)
