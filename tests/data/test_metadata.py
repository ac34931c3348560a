"""The shipped class lists and mappings are facts: counts, order, known entries, and where each comes from."""

from __future__ import annotations

from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

from wiseft_lab.data.imagenet import imagenet_classnames, imagenet_wnids, objectnet_classes, subset_indices
from wiseft_lab.data.layouts import METADATA_DIR, metadata


def test_every_metadata_file_says_where_it_comes_from():
    files = sorted(METADATA_DIR.glob("*.json"))
    assert {f.stem for f in files} >= {"imagenet", "imagenet_r", "imagenet_a", "objectnet", "transfer"}
    for file in files:
        assert len(metadata(file.stem)["source"]) > 40, file


def test_imagenet_wnids_sorted_and_named_like_open_clip():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and list(wnids) == sorted(wnids)
    assert all(w.startswith("n") and len(w) == 9 for w in wnids)
    assert (wnids[0], wnids[1], wnids[999]) == ("n01440764", "n01443537", "n15075141")
    assert wnids[409] == "n02708093"   # analog clock
    assert list(imagenet_classnames()) == list(IMAGENET_CLASSNAMES)
    assert (imagenet_classnames()[0], imagenet_classnames()[409]) == ("tench", "analog clock")


def test_imagenet_r_and_a_lists():
    for which, first, last in (("imagenet_r", [1, 2, 4, 6, 8, 9, 11, 13], 988),
                               ("imagenet_a", [6, 11, 13, 15, 17, 22, 23, 27], 988)):
        indices = subset_indices(which)
        assert len(indices) == 200 == len(set(indices)) and indices == sorted(indices)
        assert indices[:8] == first and indices[-1] == last
        wnids = metadata(which)["wnids"]
        assert wnids == sorted(wnids) and len(wnids) == 200
        # label i of the 200-class set is ImageNet class indices[i]: the same wnid
        assert [imagenet_wnids()[c] for c in indices] == wnids


def test_objectnet_mapping():
    classes = objectnet_classes()
    folders = [c["folder"] for c in classes]
    assert len(classes) == 113 and folders == sorted(folders)
    groups = [c["imagenet_indices"] for c in classes]
    flat = [i for g in groups for i in g]
    assert len(flat) == 125 == len(set(flat)) and all(0 <= i < 1000 for i in flat)
    multi = {c["folder"]: c["imagenet_indices"] for c in classes if len(c["imagenet_indices"]) > 1}
    assert sorted(multi) == ["alarm_clock", "bicycle", "chair", "helmet", "pen", "skirt", "still_camera", "tie",
                             "wheel"]
    assert multi["alarm_clock"] == [409, 530]   # analog clock, digital clock
    assert sorted(multi["chair"]) == [423, 559, 765]   # barber chair, folding chair, rocking chair
    by_folder = {c["folder"]: c for c in classes}
    assert by_folder["banana"]["imagenet_indices"] == [954] and by_folder["banana"]["name"] == "banana"
    assert by_folder["binder_closed"]["name"] == "binder (closed)" and by_folder["chair"]["name"] == "chair"
    unmapped = metadata("objectnet")["unmapped_folders"]
    assert len(unmapped) == 200 and not set(unmapped) & set(folders)   # 313 ObjectNet 1.0 folders in all


def test_transfer_split_sizes_add_up():
    sizes = metadata("transfer")["coop_split_sizes"]
    assert sum(sizes["eurosat"].values()) == 27_000 and sum(sizes["dtd"].values()) == 5_640
    assert sum(sizes["food101"].values()) == 101_000 and sum(sizes["fgvc_aircraft"].values()) == 10_000
    assert sizes["sun397"]["train"] + sizes["sun397"]["val"] == sizes["sun397"]["test"] == 19_850
