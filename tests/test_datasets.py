import json
import logging

import pytest
import torch
from torch.utils.data import DataLoader, Subset
from torchvision.io import encode_jpeg, encode_png

from src.data.datasets import (
    NUS_NUM_CLASSES,
    AnnotationError,
    MultiLabelImages,
    coco_category_names,
    coco_dataset,
    coco_entries_from_instances,
    coco_num_classes,
    collate_multilabel,
    label_list_dataset,
    split_holdout,
)
from src.data.decode import BadImageError
from src.data.labels import LabelEntry, LabelListError

# torchvision 0.29 flags its image codecs as deprecated (in favour of torchcodec); they still work.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")


def _jpeg(h: int = 24, w: int = 32, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    return bytes(encode_jpeg(img, quality=90).numpy())


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "images"
    (d / "sub").mkdir(parents=True)
    (d / "a.jpg").write_bytes(_jpeg(24, 32, 0))
    (d / "sub" / "b.jpg").write_bytes(_jpeg(24, 32, 1))
    gray = torch.full((1, 24, 32), 100, dtype=torch.uint8)
    (d / "c.png").write_bytes(bytes(encode_png(gray).numpy()))
    good = _jpeg(24, 32, 2)
    (d / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (d / "garbage.jpg").write_bytes(b"this is not an image" * 20)
    (d / "empty.jpg").write_bytes(b"")
    return d


GOOD = [LabelEntry("a.jpg", (0, 3)), LabelEntry("sub/b.jpg", ()), LabelEntry("c.png", (4,))]


def test_item_is_rgb_uint8_multihot_and_index(image_dir):
    ds = MultiLabelImages(image_dir, GOOD, num_classes=5)
    assert len(ds) == 3 and ds.num_classes == 5 and ds.entries == GOOD
    img, target, index = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 24, 32)
    assert target.dtype == torch.float32 and target.tolist() == [1, 0, 0, 1, 0]
    assert index == 0 and isinstance(index, int)
    img, target, index = ds[2]  # grayscale PNG -> 3 channels
    assert img.shape == (3, 24, 32) and torch.all(img == 100)
    assert target.tolist() == [0, 0, 0, 0, 1] and index == 2
    assert ds[1][1].sum() == 0  # no positive label
    with pytest.raises(IndexError):
        ds[3]


def test_transform_is_applied(image_dir):
    ds = MultiLabelImages(image_dir, GOOD, 5, transform=lambda x: x.float().mean())
    assert ds[2][0].item() == pytest.approx(100.0)


def test_targets_matrix_needs_no_images(tmp_path):
    ds = MultiLabelImages(tmp_path / "nowhere", GOOD, 5)
    m = ds.targets_matrix()
    assert m.dtype == torch.float32
    assert m.tolist() == [[1, 0, 0, 1, 0], [0] * 5, [0, 0, 0, 0, 1]]
    assert torch.equal(m[0], ds.target(0))


def test_out_of_range_entry_is_rejected(image_dir):
    with pytest.raises(LabelListError, match=r"my.txt: entry 1 \('b.jpg'\): class index 5 out of range"):
        MultiLabelImages(image_dir, [LabelEntry("a.jpg", (0,)), LabelEntry("b.jpg", (5,))], 5, source="my.txt")


def test_missing_image_is_an_error_naming_it(image_dir):
    ds = MultiLabelImages(image_dir, [LabelEntry("gone.jpg", (0,))], 5, source="list.txt", skip_bad_images=True)
    with pytest.raises(FileNotFoundError, match=r"gone\.jpg \(listed in list\.txt\)"):
        ds[0]


def test_check_images_lists_all_missing(image_dir):
    entries = GOOD + [LabelEntry(f"missing_{i}.jpg", (0,)) for i in range(12)]
    ds = MultiLabelImages(image_dir, entries, 5, source="list.txt")
    with pytest.raises(FileNotFoundError) as e:
        ds.check_images(max_names=3)
    msg = str(e.value)
    assert "12 of 15 image files listed in list.txt are missing" in msg
    assert "missing_0.jpg, missing_1.jpg, missing_2.jpg, ... (9 more)" in msg
    MultiLabelImages(image_dir, GOOD, 5).check_images()  # all present: no error


@pytest.mark.parametrize(
    "name, why", [("truncated.jpg", "truncated"), ("garbage.jpg", "Unsupported image"), ("empty.jpg", "empty file")]
)
def test_bad_image_raises_naming_file(image_dir, name, why):
    ds = MultiLabelImages(image_dir, [LabelEntry(name, (1,))], 5)
    with pytest.raises(BadImageError, match=why) as e:
        ds[0]
    assert e.value.path == str(image_dir / name)
    assert str(image_dir / name) in str(e.value)


def test_skip_bad_images_logs_returns_none_and_collate_counts(image_dir, caplog):
    entries = GOOD + [LabelEntry("truncated.jpg", (1,)), LabelEntry("garbage.jpg", (2,))]
    ds = MultiLabelImages(image_dir, entries, 5, skip_bad_images=True, transform=lambda x: x.float())
    with caplog.at_level(logging.WARNING, logger="src.data.datasets"):
        assert ds[3] is None
    assert "truncated.jpg" in caplog.text
    loader = DataLoader(ds, batch_size=5, collate_fn=collate_multilabel)
    (images, targets, indices, skipped), = list(loader)
    assert images.shape == (3, 3, 24, 32) and targets.shape == (3, 5)
    assert indices.tolist() == [0, 1, 2] and skipped == 2
    assert torch.equal(targets, ds.targets_matrix()[:3])


def test_collate_all_skipped():
    images, targets, indices, skipped = collate_multilabel([None, None])
    assert skipped == 2 and images.numel() == 0 and targets.shape[0] == 0 and indices.numel() == 0


def test_raw_returns_file_bytes_and_catches_truncation(image_dir):
    entries = [LabelEntry("a.jpg", (0,)), LabelEntry("c.png", (1,)), LabelEntry("truncated.jpg", (2,))]
    ds = MultiLabelImages(image_dir, entries, 5, raw=True)
    data, target, index = ds[0]
    assert data.dtype == torch.uint8 and data.dim() == 1
    assert bytes(data.numpy()) == (image_dir / "a.jpg").read_bytes()
    with pytest.raises(BadImageError, match="truncated.jpg.*truncated"):
        ds[2]
    images, targets, indices, skipped = collate_multilabel([ds[0], ds[1]])
    assert isinstance(images, list) and len(images) == 2 and skipped == 0
    with pytest.raises(ValueError, match="skip_bad_images"):
        MultiLabelImages(image_dir, entries, 5, raw=True, skip_bad_images=True)
    with pytest.raises(ValueError, match="transform"):
        MultiLabelImages(image_dir, entries, 5, raw=True, transform=lambda x: x)


def test_label_list_dataset(image_dir, tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_text("a.jpg, 0 3\nsub/b.jpg,\nc.png,4\n")
    ds = label_list_dataset(image_dir, lst, 5)
    assert ds.entries == GOOD and ds.source == str(lst)
    assert ds[0][1].tolist() == [1, 0, 0, 1, 0]
    lst.write_text("a.jpg,0 7\n")
    with pytest.raises(LabelListError, match=r"l.txt:1: class index 7 out of range"):
        label_list_dataset(image_dir, lst, 5)


def _instances(tmp_path, annotations=None):
    cats = [{"id": 7, "name": "cat7"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    images = [{"id": i, "file_name": f"img{i}.jpg", "height": 24, "width": 32} for i in (30, 10, 20)]
    if annotations is None:
        annotations = [  # image 20 has no annotation and is left out
            {"id": 1, "image_id": 30, "category_id": 7, "bbox": [0, 0, 1, 1], "area": 1.0, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 1, 1], "area": 1.0, "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 1, "bbox": [0, 0, 9, 9], "area": 81.0, "iscrowd": 1},
            {"id": 4, "image_id": 10, "category_id": 3, "bbox": [2, 2, 5, 5], "area": 25.0, "iscrowd": 0},
        ]
    p = tmp_path / "instances.json"
    p.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    for i in (10, 20, 30):
        (tmp_path / f"img{i}.jpg").write_bytes(_jpeg(seed=i))
    return p


def test_coco_dataset_maps_sorted_category_ids(tmp_path):
    ann = _instances(tmp_path)
    entries, names = coco_entries_from_instances(ann)
    assert names == ["person", "car", "cat7"]  # ids 1, 3, 7 -> 0, 1, 2
    assert entries == [LabelEntry("img10.jpg", (0, 1)), LabelEntry("img30.jpg", (2,))]
    assert coco_num_classes(ann) == 3 and coco_category_names(ann) == names
    ds = coco_dataset(tmp_path, ann)
    assert len(ds) == 2 and ds.num_classes == 3 and ds.class_names == names
    img, target, index = ds[0]
    assert img.shape == (3, 24, 32) and target.tolist() == [1, 1, 0] and index == 0
    assert ds[1][1].tolist() == [0, 0, 1]


def test_coco_bad_annotations(tmp_path):
    bad_cat = [{"id": 1, "image_id": 10, "category_id": 2, "bbox": [0, 0, 1, 1], "area": 1.0, "iscrowd": 0}]
    with pytest.raises(ValueError, match="category_id 2"):
        coco_entries_from_instances(_instances(tmp_path, bad_cat))
    bad_img = [{"id": 1, "image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1.0, "iscrowd": 0}]
    with pytest.raises(ValueError, match="image id 99"):
        coco_entries_from_instances(_instances(tmp_path, bad_img))
    with pytest.raises(AnnotationError, match="nope.json"):
        coco_entries_from_instances(tmp_path / "nope.json")


def test_split_holdout_is_deterministic_disjoint_and_sized():
    train, val = split_holdout(1000, 0.2, seed=0)
    assert len(val) == 200 and len(train) == 800
    assert sorted(train + val) == list(range(1000)) and val == sorted(val)
    assert split_holdout(1000, 0.2, seed=0) == (train, val)
    assert split_holdout(1000, 0.2, seed=1)[1] != val
    assert split_holdout(10, 0.0, seed=0) == (list(range(10)), [])
    assert len(split_holdout(3, 0.01, seed=0)[1]) == 1
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="val_fraction"):
            split_holdout(10, bad, seed=0)
    with pytest.raises(ValueError, match="no training sample"):
        split_holdout(1, 0.5, seed=0)


def test_subset_keeps_dataset_index(image_dir):
    ds = MultiLabelImages(image_dir, GOOD, 5)
    train, val = split_holdout(len(ds), 0.34, seed=0)
    sub = Subset(ds, val)
    assert [sub[k][2] for k in range(len(sub))] == val


def test_nus_num_classes():
    assert NUS_NUM_CLASSES == 81


def test_a_jpeg_cut_short_and_closed_with_ffd9_is_a_bad_image(tmp_path, caplog):
    good = _jpeg(48, 64, 3)
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2] + b"\xff\xd9")  # libjpeg only warns about it
    with pytest.raises(BadImageError, match=r"cut.jpg: bad image: corrupt data: Corrupt JPEG data"):
        MultiLabelImages(tmp_path, [LabelEntry("cut.jpg", (0,))], 2)[0]
    skip = MultiLabelImages(tmp_path, [LabelEntry("cut.jpg", (0,))], 2, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="src.data.datasets"):
        assert skip[0] is None
    assert "cut.jpg" in caplog.text


@pytest.mark.parametrize("workers", [0, 1])
def test_raw_batches_carry_their_file_names(image_dir, workers):
    from src.data.datasets import RawBatch
    ds = MultiLabelImages(image_dir, GOOD, 5, raw=True)
    (images, _, _, _), = list(DataLoader(ds, batch_size=3, collate_fn=collate_multilabel, num_workers=workers))
    assert isinstance(images, RawBatch) and images.names == [str(image_dir / e.name) for e in GOOD]


# ----------------------------------------------------------------------------- the class set

def test_categories_are_checked(tmp_path):
    from src.data.datasets import coco_categories
    ann = _instances(tmp_path)
    d = json.loads(ann.read_text())
    for change, message in [(lambda d: d.pop("categories"), "no 'categories' list"),
                            (lambda d: d["categories"].append({"id": 1, "name": "x"}), "category id 1 appears twice"),
                            (lambda d: d["categories"].append({"id": 9, "name": "car"}),
                             "category name 'car' appears twice \\(ids 3 and 9\\)"),
                            (lambda d: d["categories"].append({"id": "9", "name": "y"}), "integer 'id'")]:
        bad = json.loads(json.dumps(d))
        change(bad)
        ann.write_text(json.dumps(bad))
        for read in (coco_categories, coco_entries_from_instances):
            with pytest.raises(AnnotationError, match=message):
                read(ann)


def test_a_val_file_missing_a_category_is_an_error(tmp_path):
    from src.data.datasets import COCO_2014_CATEGORIES, check_class_set
    assert len(COCO_2014_CATEGORIES) == 80 and COCO_2014_CATEGORIES[0] == (1, "person")
    assert COCO_2014_CATEGORIES[-1] == (90, "toothbrush")
    check_class_set(COCO_2014_CATEGORIES, "val.json")
    with pytest.raises(AnnotationError, match=r"val.json: its categories differ from the 80 COCO 2014 categories: "
                                              r"lacks 5 'airplane'"):
        check_class_set([c for c in COCO_2014_CATEGORIES if c[0] != 5], "val.json")
    toy = [(1, "red circle"), (4, "blue square")]
    check_class_set(toy, "val.json")  # not COCO's and no reference: nothing to compare with
    ref = tmp_path / "train.json"
    ref.write_text(json.dumps({"categories": [{"id": i, "name": n} for i, n in toy + [(7, "green star")]]}))
    with pytest.raises(AnnotationError, match=r"differ from .*train.json: lacks 7 'green star'"):
        check_class_set(toy, "val.json", reference=ref)


def test_annotation_file_names_stay_in_the_image_folder(tmp_path):
    ann = _instances(tmp_path)
    d = json.loads(ann.read_text())
    for name in ("../outside.jpg", "/etc/passwd", "a/../../b.jpg"):
        d["images"][0]["file_name"] = name  # image 30, which has an annotation
        ann.write_text(json.dumps(d))
        with pytest.raises(AnnotationError, match="image id 30: file_name"):
            coco_entries_from_instances(ann)


@pytest.mark.parametrize("text", ["[]", "7", '"x"', "null"])
def test_an_annotation_file_that_is_not_a_json_object_is_one_error_naming_it(tmp_path, text):
    """`[]` ended in pycocotools' AssertionError traceback."""
    ann = tmp_path / "empty.json"
    ann.write_text(text)
    for read in (coco_entries_from_instances, lambda p: coco_dataset(tmp_path, p)):
        with pytest.raises(AnnotationError, match=r"empty\.json: not a COCO instances file"):
            read(ann)


def _augmented_epoch(image_dir, workers: int, epoch: int, seed: int = 3) -> list[torch.Tensor]:
    from src.data.augment import train_transform

    ds = MultiLabelImages(image_dir, GOOD * 3, 5, transform=train_transform(16))  # each file at 3 indices
    ds.set_augment_epoch(seed, epoch)
    torch.manual_seed(workers)  # the global state (and the workers' seeds) must not matter
    loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate_multilabel,
                        generator=torch.Generator().manual_seed(100 + workers))
    return [images for images, *_ in loader]


def test_an_epochs_augmentation_does_not_depend_on_the_worker_count(image_dir):
    """Sample i's augmentation follows from (seed, epoch, i) only: -j 0, 1 and 2 give the same batches (a resume
    with another -j was not exact), and another epoch gives others."""
    batches = _augmented_epoch(image_dir, 0, epoch=1)
    for workers in (1, 2):
        other = _augmented_epoch(image_dir, workers, epoch=1)
        assert all(torch.equal(a, b) for a, b in zip(batches, other, strict=True)), workers
    assert not all(torch.equal(a, b) for a, b in zip(batches, _augmented_epoch(image_dir, 0, epoch=2)))
    # the same file at two indices gets two draws
    assert not torch.equal(batches[0][0], batches[1][1])  # indices 0 and 3: a.jpg
