"""iNaturalist / ImageNet layouts: prepare, load_prepared, image decoding, loaders (generated data only)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import noise_jpeg as _jpeg
from PIL import Image, ImageFile

from classbalanced.data.images import BadImageWarning
from classbalanced.data.loaders import (
    MEAN_STD,
    ImageFileDataset,
    build_transforms,
    collate_skip_bad,
    eval_indices,
    make_datasets,
    make_loader,
    mean_std,
)
from classbalanced.data.prepare import prepare
from classbalanced.data.prepared import load_prepared

# non-contiguous, unsorted category ids with a long-tailed number of training images
CATEGORIES = [
    (42, "Aves", 3),
    (7, "Plantae", 12),
    (100, "Fungi", 1),
    (10, "Insecta", 6),
    (3, "Mammalia", 2),
]
VAL_PER_CLASS = 2


@dataclass
class InatTree:
    root: Path
    train_doc: dict
    val_doc: dict


def _inat_doc(split: str, start_id: int, per_class, root: Path, seed: int) -> dict:
    images, annotations = [], []
    image_id = start_id
    for cid, sup, n in CATEGORIES:
        for j in range(per_class(n)):
            rel = f"train_val2018/{sup}/{cid}/{split}_{cid}_{j}.jpg"
            _jpeg(root / rel, seed + image_id)
            images.append({"id": image_id, "file_name": rel, "width": 20, "height": 14})
            annotations.append({"id": 1000 + image_id, "image_id": image_id, "category_id": cid})
            image_id += 1
    # a shuffled order, as in the real files
    order = np.random.default_rng(seed).permutation(len(images))
    return {
        "info": {"year": 2018},
        "images": [images[i] for i in order],
        "annotations": [annotations[i] for i in order[::-1]],
        "categories": [
            {"id": cid, "name": f"{sup}-{cid}", "supercategory": sup} for cid, sup, _ in CATEGORIES
        ],
    }


def _write(path: Path, doc) -> None:
    path.write_text(json.dumps(doc), encoding="utf-8")


@pytest.fixture
def inat_tree(tmp_path) -> InatTree:
    root = tmp_path / "inat"
    root.mkdir()
    train = _inat_doc("train", 0, lambda n: n, root, 1)
    val = _inat_doc("val", 500, lambda n: VAL_PER_CLASS, root, 2)
    _write(root / "train2018.json", train)
    _write(root / "val2018.json", val)
    return InatTree(root, train, val)


def _expected_counts(doc: dict) -> list[int]:
    by_cat = Counter(a["category_id"] for a in doc["annotations"])
    return [by_cat[cid] for cid in sorted(c["id"] for c in doc["categories"])]


def _quiet(_msg: str) -> None:
    pass


def test_prepare_counts_match_the_annotations(inat_tree):
    layout = prepare("inat2018", inat_tree.root, log=_quiet)
    expected = _expected_counts(inat_tree.train_doc)
    assert expected == [2, 12, 6, 3, 1]  # ids 3, 7, 10, 42, 100
    assert layout.train_counts.dtype == np.int64
    assert layout.train_counts.tolist() == expected
    assert layout.num_classes == 5 and layout.num_skipped == 0
    assert len(layout.train_samples) == sum(expected)
    assert len(layout.val_samples) == 5 * VAL_PER_CLASS
    out = inat_tree.root / "classbalanced-inat2018"
    text = (out / "train_counts.txt").read_text()
    assert text == "2\n12\n6\n3\n1\n"
    assert json.loads((out / "train_counts.json").read_text()) == expected
    meta = json.loads((out / "prepared.json").read_text())
    assert meta["dataset"] == "inat2018" and meta["num_classes"] == 5
    assert meta["counts_sum"] == sum(expected) and meta["num_skipped"] == 0
    assert set(meta["sources"]) == {"train2018.json", "val2018.json"}


def test_class_index_and_sample_labels(inat_tree):
    layout = prepare("inat2018", inat_tree.root, log=_quiet)
    index = json.loads((inat_tree.root / "classbalanced-inat2018" / "class_index.json").read_text())
    assert [(e["index"], e["category_id"], e["name"]) for e in index] == [
        (0, 3, "Mammalia-3"),
        (1, 7, "Plantae-7"),
        (2, 10, "Insecta-10"),
        (3, 42, "Aves-42"),
        (4, 100, "Fungi-100"),
    ]
    assert layout.class_names == [e["name"] for e in index]
    assert layout.category_ids == [3, 7, 10, 42, 100]
    # every sample's label is its annotation's category through the mapping
    cat_of = {a["image_id"]: a["category_id"] for a in inat_tree.train_doc["annotations"]}
    file_of = {im["file_name"]: im["id"] for im in inat_tree.train_doc["images"]}
    for rel, label in layout.train_samples:
        assert layout.category_ids[label] == cat_of[file_of[rel]]
    lines = (inat_tree.root / "classbalanced-inat2018" / "train.tsv").read_text().splitlines()
    assert lines[0] == "\t".join(map(str, layout.train_samples[0]))


def test_load_prepared_round_trip(inat_tree):
    prepared = prepare("inat2018", inat_tree.root, log=_quiet)
    loaded = load_prepared("inat2018", inat_tree.root)
    assert loaded.train_samples == prepared.train_samples
    assert loaded.val_samples == prepared.val_samples
    assert loaded.class_names == prepared.class_names
    assert loaded.category_ids == prepared.category_ids
    assert np.array_equal(loaded.train_counts, prepared.train_counts)
    assert loaded.root == inat_tree.root


def test_missing_images_refused_then_skipped(inat_tree):
    gone = [s for s in inat_tree.train_doc["images"] if "/7/" in s["file_name"]][:2]
    for im in gone:
        (inat_tree.root / im["file_name"]).unlink()
    with pytest.raises(
        ValueError, match=r"^2 of 24 images referenced by train2018.json are missing \(e\.g\. "
    ) as err:
        prepare("inat2018", inat_tree.root, log=_quiet)
    assert "pass --skip-missing" in str(err.value) and "\n" not in str(err.value)
    assert gone[0]["file_name"] in str(err.value) or gone[1]["file_name"] in str(err.value)
    assert not (inat_tree.root / "classbalanced-inat2018" / "prepared.json").exists()

    messages = []
    layout = prepare("inat2018", inat_tree.root, skip_missing=True, log=messages.append)
    assert layout.num_skipped == 2
    assert layout.train_counts.tolist() == [2, 10, 6, 3, 1]
    assert not {im["file_name"] for im in gone} & {rel for rel, _ in layout.train_samples}
    assert any("2 of 24" in m for m in messages)
    assert load_prepared("inat2018", inat_tree.root).num_skipped == 2
    # check_files=False trusts the annotations
    assert prepare(
        "inat2018", inat_tree.root, check_files=False, log=_quiet
    ).train_counts.tolist() == [2, 12, 6, 3, 1]


def test_missing_annotation_file(inat_tree):
    (inat_tree.root / "val2018.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"expected val2018\.json in .*got no such file"):
        prepare("inat2018", inat_tree.root, log=_quiet)


def test_invalid_json_names_file_and_line(inat_tree):
    (inat_tree.root / "train2018.json").write_text('{\n  "images": [\n    {"id": 1,,}\n  ]\n}\n')
    with pytest.raises(ValueError, match=r"^train2018\.json: invalid JSON at line 3 column"):
        prepare("inat2018", inat_tree.root, log=_quiet)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("annotations"), r"^train2018\.json: missing key 'annotations'$"),
        (lambda d: d.pop("categories"), r"^train2018\.json: missing key 'categories'$"),
        (
            lambda d: d["images"][3].pop("file_name"),
            r"^train2018\.json: images\[3\]: missing key 'file_name'$",
        ),
        (
            lambda d: d["annotations"][5].pop("category_id"),
            r"^train2018\.json: annotations\[5\]: missing key 'category_id'$",
        ),
        (
            lambda d: d["annotations"][0].update(category_id=999),
            r"annotations\[0\]: expected a category_id listed in 'categories', got 999",
        ),
        (
            lambda d: d["annotations"][1].update(image_id=12345),
            r"annotations\[1\]: expected an image_id listed in 'images', got 12345",
        ),
        (
            lambda d: d["images"].append({"id": 777, "file_name": "x/y.jpg"}),
            r"image id 777 \(x/y\.jpg\): expected an annotation for every image, got none",
        ),
        (
            lambda d: d["images"][0].update(file_name="../outside.jpg"),
            r"expected a file_name inside the data folder, got '\.\./outside\.jpg'",
        ),
    ],
    ids=[
        "no-annotations",
        "no-categories",
        "no-file_name",
        "no-category_id",
        "unknown-category",
        "unknown-image",
        "unannotated-image",
        "dotdot",
    ],
)
def test_bad_annotations_are_one_line_errors(inat_tree, edit, message):
    doc = json.loads(json.dumps(inat_tree.train_doc))
    edit(doc)
    _write(inat_tree.root / "train2018.json", doc)
    with pytest.raises(ValueError, match=message) as err:
        prepare("inat2018", inat_tree.root, log=_quiet)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spelling", ["{}", "./{}"])
def test_one_image_file_listed_twice_in_a_file_is_refused(inat_tree, spelling):
    # a merged annotation file listing one photo under two image ids (here, two classes)
    doc = json.loads(json.dumps(inat_tree.train_doc))
    first = doc["images"][4]
    other = next(a["category_id"] for a in doc["annotations"] if a["image_id"] != first["id"])
    doc["images"].append({"id": 9999, "file_name": spelling.format(first["file_name"])})
    doc["annotations"].append({"id": 9999, "image_id": 9999, "category_id": other})
    _write(inat_tree.root / "train2018.json", doc)
    k = len(doc["images"]) - 1
    with pytest.raises(
        ValueError,
        match=rf"^train2018\.json: images\[{k}\]: expected every file listed once, got "
        rf"{re.escape(spelling.format(first['file_name']))} again \(image ids {first['id']} and 9999\)$",
    ):
        prepare("inat2018", inat_tree.root, log=_quiet)


def test_a_training_image_in_the_val_file_is_refused_or_reported(inat_tree):
    train_image = inat_tree.train_doc["images"][0]
    label_of = {a["image_id"]: a["category_id"] for a in inat_tree.train_doc["annotations"]}
    doc = json.loads(json.dumps(inat_tree.val_doc))
    doc["images"][0]["file_name"] = train_image["file_name"]
    ann = next(a for a in doc["annotations"] if a["image_id"] == doc["images"][0]["id"])
    ann["category_id"] = label_of[train_image["id"]]  # the same class: reported
    _write(inat_tree.root / "val2018.json", doc)
    logged = []
    prepare("inat2018", inat_tree.root, log=logged.append)
    assert any(
        m.startswith("warning: 1 of 10 images of val2018.json are in train2018.json")
        for m in logged
    )
    ann["category_id"] = next(c for c in label_of.values() if c != label_of[train_image["id"]])
    _write(inat_tree.root / "val2018.json", doc)  # another class: which one is it?
    with pytest.raises(
        ValueError, match=r"^val2018\.json: .* has label \d+, but train2018\.json gives it label"
    ):
        prepare("inat2018", inat_tree.root, log=_quiet)


def test_val_category_must_exist_in_train(inat_tree):
    doc = json.loads(json.dumps(inat_tree.val_doc))
    doc["annotations"][0]["category_id"] = 55
    _write(inat_tree.root / "val2018.json", doc)
    with pytest.raises(
        ValueError, match=r"^val2018\.json: annotations\[0\]: expected a category_id"
    ):
        prepare("inat2018", inat_tree.root, log=_quiet)


def test_load_prepared_before_prepare(inat_tree):
    with pytest.raises(
        FileNotFoundError,
        match=r"run `classbalanced prepare --dataset inat2018 --data-dir .*` first",
    ):
        load_prepared("inat2018", inat_tree.root)
    with pytest.raises(ValueError, match=r"unknown dataset 'inat2019'"):
        load_prepared("inat2019", inat_tree.root)


def test_load_prepared_detects_tampered_counts(inat_tree):
    prepare("inat2018", inat_tree.root, log=_quiet)
    counts = inat_tree.root / "classbalanced-inat2018" / "train_counts.txt"
    counts.write_text("2\n12\n7\n3\n1\n")
    with pytest.raises(
        ValueError,
        match=r"class 2 \(Insecta-10\) has 6 images in train\.tsv, got 7 in train_counts\.txt",
    ):
        load_prepared("inat2018", inat_tree.root)
    counts.write_text("2\n12\n6\n3\n")
    with pytest.raises(ValueError, match=r"expected 5 counts \(one per class\), got 4"):
        load_prepared("inat2018", inat_tree.root)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("class_index.json", '[{"index": 0}]'),
        ("class_index.json", "[1, 2]"),
        ("class_index.json", '"x"'),
        ("train_counts.json", "5"),
        ("prepared.json", '{"dataset": "inat2018", "format": 1, "sources": [1]}'),
        ("prepared.json", '{"dataset": "inat2018", "format": 1, "sources": {"a": 5}}'),
    ],
)
def test_load_prepared_names_a_prepared_file_of_another_shape(inat_tree, name, content):
    # hand-edited or written by something else: load_prepared promises a ValueError
    prepare("inat2018", inat_tree.root, log=_quiet)
    (inat_tree.root / "classbalanced-inat2018" / name).write_text(content)
    with pytest.raises(
        ValueError, match=rf"^{name}: expected what prepare writes \(.*\), got .*; run `"
    ) as info:
        load_prepared("inat2018", inat_tree.root)
    assert "\n" not in str(info.value)


def test_load_prepared_detects_tampered_sample_list(inat_tree):
    prepare("inat2018", inat_tree.root, log=_quiet)
    tsv = inat_tree.root / "classbalanced-inat2018" / "train.tsv"
    lines = tsv.read_text().splitlines()
    rel, label = lines[0].split("\t")
    lines[0] = f"{rel}\t{(int(label) + 1) % 5}"
    tsv.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"^train_counts\.txt does not match train\.tsv: class"):
        load_prepared("inat2018", inat_tree.root)


def test_load_prepared_detects_changed_annotations(inat_tree):
    prepare("inat2018", inat_tree.root, log=_quiet)
    doc = json.loads(json.dumps(inat_tree.train_doc))
    doc["annotations"][0]["category_id"] = 42 if doc["annotations"][0]["category_id"] != 42 else 7
    path = inat_tree.root / "train2018.json"
    _write(path, doc)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    with pytest.raises(
        ValueError,
        match=r"^train2018\.json changed since it was prepared .*run `classbalanced prepare",
    ):
        load_prepared("inat2018", inat_tree.root)


# --------------------------------------------------------------------------- ImageNet


@pytest.fixture
def imagenet_tree(tmp_path) -> tuple[Path, dict[str, int], dict[str, int]]:
    root = tmp_path / "imagenet"
    train_counts = {"n02000000": 5, "n01000000": 3, "n03000000": 1}
    val_counts = {"n03000000": 2, "n01000000": 1}
    seed = 0
    for split, counts in (("train", train_counts), ("val", val_counts)):
        for wnid, n in counts.items():
            for j in range(n):
                seed += 1
                _jpeg(root / split / wnid / f"{wnid}_{j}.JPEG", seed)
    (root / "train" / "n01000000" / "notes.txt").write_text("not an image")
    return root, train_counts, val_counts


def test_imagenet_prepare(imagenet_tree):
    root, train_counts, val_counts = imagenet_tree
    layout = prepare("imagenet", root, log=_quiet)
    wnids = sorted(train_counts)
    assert layout.class_names == wnids and layout.category_ids == wnids
    assert layout.train_counts.tolist() == [train_counts[w] for w in wnids]
    assert (root / "classbalanced-imagenet" / "train_counts.txt").read_text() == "3\n5\n1\n"
    assert sorted(Counter(label for _, label in layout.val_samples).items()) == [(0, 1), (2, 2)]
    for rel, label in layout.train_samples + layout.val_samples:
        assert rel.split("/")[1] == wnids[label] and (root / rel).is_file()
    loaded = load_prepared("imagenet", root)
    assert loaded.train_samples == layout.train_samples and loaded.val_samples == layout.val_samples
    # adding an image to a class folder is noticed
    _jpeg(root / "train" / "n03000000" / "extra.JPEG", 99)
    d = root / "train" / "n03000000"
    st = d.stat()
    os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    with pytest.raises(ValueError, match=r"^train/ changed since it was prepared"):
        load_prepared("imagenet", root)


def test_imagenet_val_wnid_must_exist_in_train(imagenet_tree):
    root, _, _ = imagenet_tree
    _jpeg(root / "val" / "n09999999" / "a.JPEG", 5)
    with pytest.raises(
        ValueError,
        match=r"expected val/ class folders that also exist in train/, got 1 unknown \(e\.g\. n09999999\)",
    ):
        prepare("imagenet", root, log=_quiet)


def test_imagenet_flat_val_without_labels_refused(tmp_path):
    _jpeg(tmp_path / "train" / "n01" / "a.JPEG", 1)
    _jpeg(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", 2)
    with pytest.raises(
        ValueError,
        match=r"val/ is flat \(no class folders\): expected a ground-truth file in .*: one of LOC_val_solution.csv, .*got none",
    ):
        prepare("imagenet", tmp_path, log=_quiet)
    (tmp_path / "train" / "n01" / "a.JPEG").rename(tmp_path / "train" / "a.JPEG")
    (tmp_path / "train" / "n01").rmdir()
    with pytest.raises(
        ValueError, match=r"expected class folders train/<wnid>/\*\.JPEG, got 1 loose files"
    ):
        prepare("imagenet", tmp_path, log=_quiet)
    with pytest.raises(FileNotFoundError, match=r"expected a folder train/"):
        prepare("imagenet", tmp_path / "val", log=_quiet)


# --------------------------------------------------------------------------- decoding and loaders


def test_truncated_image_is_skipped_and_counted(tmp_path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    samples = []
    for i in range(5):
        _jpeg(tmp_path / f"img{i}.jpg", i, size=(64, 48))
        samples.append((f"img{i}.jpg", i))
    bad = tmp_path / "img2.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    dataset = ImageFileDataset(tmp_path, samples, build_transforms(False, 16))
    loader = make_loader(dataset, 2, train=False, num_workers=0, seed=0)
    seen, skipped = [], 0
    with pytest.warns(BadImageWarning, match=r"img2\.jpg") as record:
        for images, labels, num_skipped in loader:
            assert images.shape[1:] == (3, 16, 16) and images.shape[0] == len(labels)
            seen += labels.tolist()
            skipped += num_skipped
    assert skipped == 1 and seen == [0, 1, 3, 4]
    assert len([w for w in record if issubclass(w.category, BadImageWarning)]) == 1
    # a second pass warns no more for the same file, and still skips it
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", BadImageWarning)
        assert sum(k for _, _, k in loader) == 1
    # a missing or empty file is skipped too
    dataset.samples = [("empty.jpg", 0), ("nope.jpg", 1), ("img0.jpg", 2)]
    with pytest.warns(BadImageWarning):
        images, labels, k = collate_skip_bad([dataset[i] for i in range(3)])
    assert k == 2 and labels.tolist() == [2]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_collate_all_bad_gives_empty_batch():
    images, labels, skipped = collate_skip_bad([None, None])
    assert (
        images.shape[0] == 0
        and labels.shape == (0,)
        and labels.dtype == torch.int64
        and skipped == 2
    )


def test_transforms_shape_and_normalisation():
    mean, std = mean_std("inat2017")
    assert (mean, std) == MEAN_STD["inat"] and mean_std("imagenet") == MEAN_STD["imagenet"]
    img = Image.new("RGB", (50, 40), (200, 100, 30))
    evald = build_transforms(False, 32, mean, std)(img)
    assert evald.shape == (3, 32, 32) and evald.dtype == torch.float32
    expected = (torch.tensor([200, 100, 30]) / 255 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(evald, expected[:, None, None].expand(3, 32, 32), atol=1e-5)
    torch.manual_seed(0)
    trained = build_transforms(True, 24, mean, std)(img)
    assert trained.shape == (3, 24, 24)
    assert torch.allclose(trained, expected[:, None, None].expand(3, 24, 24), atol=1e-5)
    # eval resizes the short side to 256/224 of the crop, then centre-crops
    grad = Image.fromarray(np.tile(np.arange(100, dtype=np.uint8), (50, 1))[..., None].repeat(3, 2))
    out = build_transforms(False, 224, (0, 0, 0), (1, 1, 1))(grad)
    assert out.shape == (3, 224, 224)
    assert out[0, 0, 0] > 0.05 and out[0, 0, -1] < 0.95  # the left/right edges were cropped away


class _Indices(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.zeros(1), i


def _epoch(loaders) -> list[list[int]]:
    return [[i for _, labels, _ in loader for i in labels.tolist()] for loader in loaders]


def test_distributed_sampler_sharding_and_epochs():
    n = 20
    data = _Indices(n)
    loaders = [
        make_loader(data, 3, train=True, num_workers=0, seed=5, rank=r, world_size=2)
        for r in range(2)
    ]
    assert all(isinstance(ld.sampler, torch.utils.data.DistributedSampler) for ld in loaders)
    first = _epoch(loaders)
    assert sorted(first[0] + first[1]) == list(range(n))
    assert len(first[0]) == len(first[1]) == n // 2
    for ld in loaders:
        ld.sampler.set_epoch(1)
    second = _epoch(loaders)
    assert sorted(second[0] + second[1]) == list(range(n))
    assert second != first
    # epoch=1 at construction is the same order as set_epoch(1)
    again = [
        make_loader(data, 3, train=True, num_workers=0, seed=5, rank=r, world_size=2, epoch=1)
        for r in range(2)
    ]
    assert _epoch(again) == second
    # world_size 1 uses the same sampler, with drop_last=train
    single = make_loader(_Indices(7), 2, train=True, num_workers=0, seed=0)
    assert isinstance(single.sampler, torch.utils.data.DistributedSampler)
    assert sorted(_epoch([single])[0]) == list(range(7))


@pytest.mark.parametrize("n", [0, 1, 7, 10])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_eval_indices_partition(n, world_size):
    parts = [list(eval_indices(n, r, world_size)) for r in range(world_size)]
    assert sorted(i for p in parts for i in p) == list(range(n))
    loaders = [
        make_loader(
            _Indices(n), 4, train=False, num_workers=0, seed=0, rank=r, world_size=world_size
        )
        for r in range(world_size)
    ]
    assert _epoch(loaders) == parts


def test_make_loader_and_eval_indices_reject_bad_ranks():
    with pytest.raises(
        ValueError, match="expected 0 <= rank < world_size, got rank 2, world_size 2"
    ):
        eval_indices(5, 2, 2)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(_Indices(3), 0, train=False, num_workers=0, seed=0)


def test_make_datasets_end_to_end(inat_tree):
    prepare("inat2018", inat_tree.root, log=_quiet)
    layout = load_prepared("inat2018", inat_tree.root)
    train, val = make_datasets(layout, image_size=16)
    loader = make_loader(train, 4, train=True, num_workers=0, seed=0)
    total = 0
    for images, labels, skipped in loader:
        assert images.shape == (len(labels), 3, 16, 16) and skipped == 0
        total += len(labels)
    assert total == len(layout.train_samples)  # 24 images, drop_last only drops a partial shard
    x, y = val[0]
    assert x.shape == (3, 16, 16) and y == layout.val_samples[0][1]
