"""Cross-dataset soups: only the entries every ingredient shares are averaged; the target's head is kept."""

from __future__ import annotations

import torch

from wiseft_lab.io import write_safetensors
from wiseft_lab.weight_space.cross import cross_dataset_soup, shared_keys


def test_shared_entries_are_averaged_and_the_targets_head_is_kept(tmp_path):
    # target zero-shot model: head over 3 classes; ingredients: heads over 2 and 4 classes, one without "text"
    target = {"tower": torch.tensor([0.0, 3.0]), "text": torch.tensor([1.0]), "head.weight": torch.zeros(3, 2),
              "steps": torch.tensor(5)}
    a = {"tower": torch.tensor([3.0, 0.0]), "text": torch.tensor([4.0]), "head.weight": torch.ones(2, 2),
         "steps": torch.tensor(1)}
    b = {"tower": torch.tensor([6.0, 6.0]), "head.weight": torch.ones(4, 2), "steps": torch.tensor(2)}
    write_safetensors(tmp_path / "b" / "model.safetensors", b)
    sources = [target, a, tmp_path / "b"]
    assert shared_keys(target, sources) == ["tower"]
    state, keys = cross_dataset_soup(target, sources)
    assert keys == ["tower"] and state["tower"].tolist() == [3.0, 3.0]  # (0 + 3 + 6) / 3, (3 + 0 + 6) / 3
    assert torch.equal(state["head.weight"], target["head.weight"]) and state["text"].tolist() == [1.0]
    assert state["steps"].item() == 5


def test_heads_of_the_same_shape_are_still_not_averaged():
    target, other = {"head.weight": torch.zeros(2, 2), "w": torch.zeros(1)}, {"head.weight": torch.ones(2, 2),
                                                                            "w": torch.ones(1)}
    state, keys = cross_dataset_soup(target, [target, other])
    assert keys == ["w"] and state["w"].item() == 0.5 and torch.equal(state["head.weight"], torch.zeros(2, 2))


def test_one_ingredient_transplanted_with_the_pools_keys():
    # b lacks "text": the pool shares only "tower", so a alone, transplanted, keeps the target's "text" and head
    target = {"tower": torch.tensor([0.0]), "text": torch.tensor([1.0]), "head.weight": torch.zeros(3, 2)}
    a = {"tower": torch.tensor([3.0]), "text": torch.tensor([4.0]), "head.weight": torch.ones(2, 2)}
    b = {"tower": torch.tensor([6.0]), "head.weight": torch.ones(4, 2)}
    keys = shared_keys(target, [target, a, b])
    state, used = cross_dataset_soup(target, [a], keys)
    assert used == ["tower"] and state["tower"].item() == 3.0 and state["text"].item() == 1.0
    assert torch.equal(state["head.weight"], target["head.weight"])
    assert cross_dataset_soup(target, [a])[0]["text"].item() == 4.0  # its own shared keys: its text too
