"""ImageNet-Vid-Robust and YTBB-Robust on fake releases: frame sets, label sets, projections, pm-k end to end."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch

from tests.data import shift_fakes as fakes
from wiseft_lab.data import video_robust as vr
from wiseft_lab.data.base import project_logits
from wiseft_lab.data.layouts import DataLayoutError, check_builder
from wiseft_lab.evaluation.set_metrics import score_set

# anchors "video/frame" with their released neighbours; turtle = 26, bicycle = 3, domestic cat = 9
VID_ANCHORS = {"vidA/10": [8, 9, 11, 12], "vidB/5": [4, 6]}
VID_LABELS = {"vidA/10": [26], "vidA/12": [26, 3], "vidB/5": [9]}


@pytest.fixture(scope="module")
def vid_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("vid_root")
    fakes.vid_robust(base, VID_ANCHORS, VID_LABELS)
    return base


def test_vid_frame_sets_anchor_first(vid_root):
    data = vr.imagenet_vid_robust(root=str(vid_root))
    names = [p.split("imagenet-vid-robust/")[1] for p, _ in data.dataset.samples]
    assert names[:5] == ["val/vidA/000010.JPEG", "val/vidA/000008.JPEG", "val/vidA/000009.JPEG",
                         "val/vidA/000011.JPEG", "val/vidA/000012.JPEG"]
    assert [s.tolist() for s in data.extras["pmk_sets"]] == [[0, 1, 2, 3, 4], [5, 6, 7]]
    assert data.extras["label_sets"][4].tolist() == [26, 3] and data.dataset.targets.tolist()[4] == 26
    assert data.extras["metrics"] == ["pm10", "pm0"] and data.extras["pmk_k"] == 10
    assert data.num_classes == 30 and data.classnames[9] == "domestic cat" and data.expected_size == 22_179
    assert vr.imagenet_vid_robust(root=str(vid_root), clean_names=False).classnames[9] == "domestic_cat"


def test_vid_smaller_k_keeps_the_nearer_frames(vid_root):
    data = vr.imagenet_vid_robust(root=str(vid_root), k=1)
    # vidA/10: 9 and 11 (8 and 12 are 2 away); vidB/5: 4 and 6
    assert [s.tolist() for s in data.extras["pmk_sets"]] == [[0, 1, 2], [3, 4, 5]]
    assert data.extras["metrics"] == ["pm1", "pm0"] and data.expected_size is None
    assert vr.imagenet_vid_robust(root=str(vid_root), k=0).extras["metrics"] == ["pm0"]
    with pytest.raises(ValueError, match="0..10"):
        vr.imagenet_vid_robust(root=str(vid_root), k=11)


def test_vid_projection_and_pm_k_from_imagenet_logits(vid_root):
    data = vr.imagenet_vid_robust(root=str(vid_root))
    logits = torch.zeros(8, 1000)
    logits[:5, 35] = 4.0       # vidA frames: box turtle (ImageNet 35) -> turtle
    logits[4, 671] = 6.0       # vidA/12: mountain bike -> bicycle, one of its two labels: still right
    logits[5:, 281] = 3.0      # vidB frames: tabby -> domestic cat
    logits[6, 291] = 5.0       # vidB/4: lion -> wrong
    projected = project_logits(logits, data)
    assert projected.shape == (8, 30) and projected[0, 26] == 4.0 and projected[4, 3] == 6.0
    # A: all right; B: anchor right, neighbour 4 wrong -> pm10 1/2, pm0 1
    assert score_set(logits, torch.as_tensor(data.dataset.targets), data) == {"pm10": 0.5, "pm0": 1.0}


def test_vid_missing_frames_drop_their_anchor(tmp_path, caplog):
    fakes.vid_robust(tmp_path, VID_ANCHORS, VID_LABELS, missing=["val/vidB/000006.JPEG"])
    with caplog.at_level(logging.WARNING):
        data = vr.imagenet_vid_robust(root=str(tmp_path))
    assert [s.tolist() for s in data.extras["pmk_sets"]] == [[0, 1, 2, 3, 4]]   # never scored on fewer frames
    assert "1 of 2 anchors are left out" in caplog.text


def test_vid_layouts(tmp_path):
    with pytest.raises(DataLayoutError) as err:
        vr.imagenet_vid_robust(root=str(tmp_path))
    assert "imagenet_vid_ytbb_robust/imagenet-vid-robust" in str(err.value) and "Expected layout" in str(err.value)
    (tmp_path / "imagenet-vid-robust" / "val").mkdir(parents=True)   # WiSE-FT's datasets.md location
    with pytest.raises(DataLayoutError, match="metadata/pmsets.json"):
        check_builder(functools.partial(vr.imagenet_vid_robust, split="test", root=str(tmp_path)))
    with pytest.raises(ValueError, match="test set only"):
        vr.imagenet_vid_robust("train", root=str(tmp_path))


# ----------------------------------------------------------------------------------------------- YTBB-Robust
YTBB_ANCHORS = [
    # CSV label 22 is "car" (the official loader swaps 22 and 23); neighbours: 29, 31 similar; 32 similar but
    # blurrier (a problem label); 40 is 10 frames away (still in), 41 is 11 (out)
    {"ytid": "abc", "ms": 1000, "frame": 30, "csv_label": 22, "labels": ["good", "person"],
     "pmk": {29: ["similar"], 31: ["similar", "correct"], 32: ["similar", "blur-increase"], 40: ["similar"],
             41: ["similar"]},
     "frames": [29, 31, 32, 40, 41]},
    {"ytid": "def", "ms": 2000, "frame": 60, "csv_label": 7, "labels": ["good"], "pmk": {61: ["similar"]},
     "frames": [61]},
    {"ytid": "ghi", "ms": 3000, "frame": 5, "csv_label": 0, "labels": ["good"],   # flagged by a pair: bad anchor
     "pmk": {6: ["similar", "bad-anchor"]}, "frames": [6]},
    {"ytid": "jkl", "ms": 4000, "frame": 9, "csv_label": 0, "labels": ["good", "unsure"]},   # not reviewed good
    {"ytid": "mno", "ms": 5000, "frame": 3, "csv_label": 6, "labels": ["bad"]},
]


@pytest.fixture(scope="module")
def ytbb_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("ytbb_root")
    fakes.ytbb_robust(base, YTBB_ANCHORS)
    return base


def _frames(data) -> list[str]:
    return [p.split("ytbb_videos/")[1] for p, _ in data.dataset.samples]


def test_ytbb_reviewed_anchors_and_neighbours(ytbb_root):
    data = vr.ytbb_robust(root=str(ytbb_root))
    assert _frames(data) == ["abc_1000/frame-30.jpg", "abc_1000/frame-29.jpg", "abc_1000/frame-31.jpg",
                             "abc_1000/frame-40.jpg", "def_2000/frame-60.jpg", "def_2000/frame-61.jpg"]
    assert [s.tolist() for s in data.extras["pmk_sets"]] == [[0, 1, 2, 3], [4, 5]]
    names = data.classnames
    assert len(names) == 23 and "none" not in names and names[22] == "car"
    # anchor abc: annotated person + the CSV's car; every frame of its set is judged against them
    assert [names[i] for i in data.extras["label_sets"][0]] == ["person", "car"]
    assert data.extras["label_sets"][2].tolist() == data.extras["label_sets"][0].tolist()
    assert [names[i] for i in data.extras["label_sets"][4]] == ["cat"]


def test_ytbb_pm_k_from_imagenet_logits(ytbb_root):
    data = vr.ytbb_robust(root=str(ytbb_root))
    logits = torch.zeros(6, 1000)
    logits[0, 817] = 5.0   # anchor abc: sports car -> car
    logits[1, 981] = 5.0   # abc/29: ballplayer -> person, also one of the anchor's labels
    logits[2, 207] = 5.0   # abc/31: golden retriever -> dog: wrong
    logits[3, 656] = 5.0   # abc/40: minivan -> car
    logits[4:, 281] = 5.0  # def/60 and def/61: tabby -> cat
    assert score_set(logits, torch.as_tensor(data.dataset.targets), data) == {"pm10": 0.5, "pm0": 1.0}
    assert vr.ytbb_robust(root=str(ytbb_root), k=1).extras["pmk_sets"][0].tolist() == [0, 1, 2]


def test_ytbb_classes_without_imagenet_classes_get_a_constant_logit(ytbb_root):
    logits = torch.full((1, 1000), -5.0)
    cow = [c["name"] for c in vr.ytbb_classes()].index("cow")
    wise_ft = vr.ytbb_robust(root=str(ytbb_root))
    # all mapped logits are -5, cow's is WiSE-FT's 0: cow (position 6) wins
    assert project_logits(logits, wise_ft)[0, cow] == 0.0 and project_logits(logits, wise_ft).argmax() == cow
    testbed = vr.ytbb_robust(root=str(ytbb_root), unmapped_logit=float("-inf"))
    assert project_logits(logits, testbed).argmax() == 0   # person, the first mapped class


def test_ytbb_annotations_layout(tmp_path):
    fakes.ytbb_robust(tmp_path, YTBB_ANCHORS[:1], annotations_dir="elsewhere")
    with pytest.raises(DataLayoutError) as err:
        vr.ytbb_robust(root=str(tmp_path))
    assert "anchor_labels.json" in str(err.value) and "ytbb-robust_metadata" in str(err.value)
    folder = tmp_path / "imagenet_vid_ytbb_robust" / "ytbb-robust" / "elsewhere"
    data = vr.ytbb_robust(root=str(tmp_path), annotations=str(folder))
    assert len(data.extras["pmk_sets"]) == 1
    check_builder(functools.partial(vr.ytbb_robust, split="test", root=str(tmp_path), annotations=str(folder)))


def test_max_over_groups_with_fill():
    projection = vr.MaxOverGroupsWithFill([[0, 2], [], [1]], fill=-1.0)
    logits = torch.tensor([[3.0, 1.0, 7.0]])
    assert projection(logits).tolist() == [[7.0, -1.0, 1.0]]
    assert np.isneginf(vr.MaxOverGroupsWithFill([[0], []], float("-inf"))(logits)[0, 1].item())
