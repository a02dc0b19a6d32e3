"""The toy COCO and toy ImageNet writers (src.toy.generate): layout, COCO validity, determinism, cache."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from src.data.class_names import COCO_2014_CATEGORIES
from src.data.labels import read_label_list
from src.toy import generate as gen
from src.toy.shapes import CATEGORY_IDS, CLASSES, NUM_CLASSES, max_objects

LISTS = ("full", "0.75left", "0.4left", "singlelabel")
SMALL = dict(train=10, val=5, image_size=32)
QUIET = dict(workers=1, verbose=False)


def small(seed: int = 0, **change) -> gen.ToyCoco:
    return gen.ToyCoco(**{**SMALL, "seed": seed, **change})


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _labels_by_image(ann_file: Path) -> tuple[COCO, dict[str, tuple[int, ...]]]:
    coco = COCO(str(ann_file))
    rank = {cid: i for i, cid in enumerate(sorted(coco.getCatIds()))}
    out = {}
    for img in coco.dataset["images"]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        out[img["file_name"]] = tuple(sorted({rank[a["category_id"]] for a in anns}))
    return coco, out


def test_layout(toy_coco):
    for p in ("train2014", "val2014", "annotations/instances_train2014.json",
              "annotations/instances_val2014.json", "toy_coco.json", *(f"coco_train_{k}.txt" for k in LISTS)):
        assert (toy_coco / p).exists(), p
    assert len(list((toy_coco / "train2014").glob("COCO_train2014_*.jpg"))) == 48
    assert len(list((toy_coco / "val2014").glob("COCO_val2014_*.jpg"))) == 24
    assert (toy_coco / "train2014" / "COCO_train2014_000000000001.jpg").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' own numpy 2 warning
@pytest.mark.parametrize("split", ["train", "val"])
def test_pycocotools_loads_with_gapped_category_ids(toy_coco, split):
    coco = COCO(str(toy_coco / "annotations" / f"instances_{split}2014.json"))
    ids = sorted(coco.getCatIds())
    assert len(ids) == NUM_CLASSES == 80
    assert ids == list(CATEGORY_IDS) and np.diff(ids).max() > 1  # gaps, as in COCO
    assert [(c["id"], c["name"]) for c in coco.loadCats(ids)] == list(COCO_2014_CATEGORIES)
    ann_ids = coco.getAnnIds()
    assert len(set(ann_ids)) == len(ann_ids) > 0
    for a in coco.loadAnns(ann_ids):
        x, y, w, h = a["bbox"]
        assert a["iscrowd"] == 0 and a["area"] > 0 and w > 0 and h > 0
        assert x >= 0 and y >= 0 and x + w <= 40 + 1e-6 and y + h <= 40 + 1e-6
        mask = coco.annToMask(a)  # the polygon is valid COCO segmentation
        assert mask.shape == (40, 40) and mask.sum() > 0


def test_train_and_val_ids_are_disjoint(toy_coco):
    ids = [set(COCO(str(toy_coco / "annotations" / f"instances_{s}2014.json")).getImgIds()) for s in ("train", "val")]
    assert not ids[0] & ids[1]


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_image_exists_decodes_and_is_not_noise(toy_coco, split):
    data = json.loads((toy_coco / "annotations" / f"instances_{split}2014.json").read_text())
    assert len(data["images"]) == {"train": 48, "val": 24}[split]
    for im in data["images"]:
        with Image.open(toy_coco / f"{split}2014" / im["file_name"]) as f:
            assert f.format == "JPEG"
            x = np.asarray(f.convert("RGB"), dtype=np.float64)
        assert x.shape == (im["height"], im["width"], 3)
        # smooth background + flat shapes: neighbouring pixels are close (uniform noise gives ~85)
        assert np.abs(np.diff(x, axis=1)).mean() < 20
        assert x.std() > 5  # not a flat image either


def test_objects_and_labels_per_image(toy_coco):
    for split in ("train", "val"):
        coco = COCO(str(toy_coco / "annotations" / f"instances_{split}2014.json"))
        for img_id in coco.getImgIds():
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
            k = len({a["category_id"] for a in anns})
            assert 1 <= k <= len(anns) <= max_objects(40, k)


def test_label_sets_come_from_disjoint_lines_of_the_official_list(toy_coco, dataset_dir):
    official = read_label_list(dataset_dir / "coco_train_full.txt", NUM_CLASSES)
    lines = {}
    for split in ("train", "val"):
        ann = toy_coco / "annotations" / f"instances_{split}2014.json"
        images = json.loads(ann.read_text())["images"]
        _, truth = _labels_by_image(ann)
        lines[split] = [im["source_line"] for im in images]
        for im in images:
            assert truth[im["file_name"]] == tuple(sorted(official[im["source_line"] - 1].labels))
    assert len(set(lines["train"])) == 48 and len(set(lines["val"])) == 24
    assert not set(lines["train"]) & set(lines["val"])


def test_source_lines_are_seeded_disjoint_and_nested():
    train, val = gen.source_lines(0, 100, 30, 20)
    assert len(set(train) | set(val)) == 50 and set(train) | set(val) <= set(range(100))
    again = gen.source_lines(0, 100, 30, 20)
    assert (train == again[0]).all() and (val == again[1]).all()
    more_train, same_val = gen.source_lines(0, 100, 60, 20)
    assert (more_train[:30] == train).all() and (same_val == val).all()
    assert not (gen.source_lines(1, 100, 30, 20)[0] == train).all()
    with pytest.raises(gen.ToySizeError, match="only 100 lines"):
        gen.source_lines(0, 100, 90, 11)


def test_too_many_images_for_the_official_list_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(gen, "official_label_sets", lambda: ((0,), (1, 2), (3,)))
    with pytest.raises(gen.ToySizeError, match="train \\+ val = 4 images"):
        gen.make_toy_coco(tmp_path / "d", gen.ToyCoco(train=2, val=2, image_size=32), verbose=False)
    assert not (tmp_path / "d").exists()


def test_label_lists_parse_and_match_annotations(toy_coco):
    _, truth = _labels_by_image(toy_coco / "annotations" / "instances_train2014.json")
    lists = {k: read_label_list(toy_coco / f"coco_train_{k}.txt", NUM_CLASSES) for k in LISTS}
    full = {e.name: tuple(sorted(e.labels)) for e in lists["full"]}
    assert full == truth
    for k in LISTS:
        assert [e.name for e in lists[k]] == [e.name for e in lists["full"]]
        for e in lists[k]:
            assert 1 <= len(e.labels) and set(e.labels) <= set(full[e.name])
    assert all(len(e.labels) == 1 for e in lists["singlelabel"])


def test_deterministic_and_seed_dependent(tmp_path):
    a = _files(gen.make_toy_coco(tmp_path / "a", small(3), **QUIET))
    b = _files(gen.make_toy_coco(tmp_path / "b", small(3), **QUIET))
    c = _files(gen.make_toy_coco(tmp_path / "c", small(4), **QUIET))
    assert a == b
    assert a.keys() == c.keys()
    differ = [k for k in a if a[k] != c[k]]
    assert "annotations/instances_train2014.json" in differ
    assert sum(k.endswith(".jpg") for k in differ) == 15


def test_process_pool_gives_the_same_bytes(tmp_path, monkeypatch):
    contexts = []
    real = gen.multiprocessing.get_context
    monkeypatch.setattr(gen.multiprocessing, "get_context", lambda m: contexts.append(m) or real(m))
    for d in ("one", "two"):
        (tmp_path / d / "train2014").mkdir(parents=True)
    tasks = gen._coco_tasks(tmp_path / "one", gen.ToyCoco(seed=0, train=8, val=0, image_size=32))
    one = gen._run(gen._coco_image, tasks, workers=1)
    two = gen._run(gen._coco_image, [(str(tmp_path / "two"), *t[1:]) for t in tasks], workers=2, min_per_worker=1)
    assert contexts == ["spawn"]  # the second run really used a pool
    assert json.dumps(gen.coco_json(one)) == json.dumps(gen.coco_json(two))
    assert _files(tmp_path / "one") == _files(tmp_path / "two")


def test_cache_skip_force_and_stale_images(tmp_path, capsys):
    out = gen.make_toy_coco(tmp_path / "d", small(), workers=1)
    assert "10 train + 5 val images" in capsys.readouterr().out
    ann = out / "annotations" / "instances_train2014.json"
    stamp = ann.stat().st_mtime_ns
    gen.make_toy_coco(out, small(), workers=1)
    assert "cached" in capsys.readouterr().out
    assert ann.stat().st_mtime_ns == stamp
    gen.make_toy_coco(out, small(), force=True, **QUIET)
    assert ann.stat().st_mtime_ns != stamp
    # other arguments regenerate, and images of the old run do not linger
    gen.make_toy_coco(out, small(train=4), **QUIET)
    assert len(list((out / "train2014").glob("*.jpg"))) == 4
    assert json.loads((out / "toy_coco.json").read_text())["train"] == 4
    assert len(read_label_list(out / "coco_train_full.txt")) == 4


def test_incomplete_run_is_not_cached(tmp_path):
    out = gen.make_toy_coco(tmp_path / "d", small(), **QUIET)
    manifest = json.loads((out / "toy_coco.json").read_text())
    (out / "toy_coco.json").write_text(json.dumps({**manifest, "complete": False}))
    before = (out / "annotations" / "instances_val2014.json").stat().st_mtime_ns
    gen.make_toy_coco(out, small(), **QUIET)
    assert (out / "annotations" / "instances_val2014.json").stat().st_mtime_ns != before
    assert json.loads((out / "toy_coco.json").read_text())["complete"] is True


def test_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "train2014").mkdir()
    (tmp_path / "train2014" / "real.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="toy_coco.json"):
        gen.make_toy_coco(tmp_path, small(), **QUIET)
    assert (tmp_path / "train2014" / "real.jpg").exists()


def test_bad_sizes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="train"):
        gen.make_toy_coco(tmp_path, gen.ToyCoco(train=0, val=1))
    with pytest.raises(ValueError, match="image_size"):
        gen.make_toy_coco(tmp_path, gen.ToyCoco(train=1, val=1, image_size=8))


def test_toy_imagenet_layout_and_separate_stream(tmp_path):
    from torchvision.datasets import ImageFolder

    spec = gen.ToyImageNet(seed=0, per_class=2, val_per_class=1, image_size=32)
    root = gen.make_toy_imagenet(tmp_path / "inet", spec, **QUIET)
    train = ImageFolder(str(root / "train"))
    assert len(train.classes) == NUM_CLASSES and len(train) == 2 * NUM_CLASSES
    assert [c.split("_", 1)[1].replace("_", " ") for c in train.classes] == [c.name for c in CLASSES]
    assert len(ImageFolder(str(root / "val"))) == NUM_CLASSES
    again = gen.make_toy_imagenet(tmp_path / "inet2", spec, **QUIET)
    assert _files(root) == _files(again)
    # a different stream from the toy COCO: no toy COCO image of the same seed is reused
    coco = _files(gen.make_toy_coco(tmp_path / "coco", small(), **QUIET))
    assert not set(coco.values()) & set(_files(root).values())


def test_the_manifest_is_the_spec_with_kind_and_version():
    """Caches written before the specs existed (the same keys) stay valid."""
    assert gen.ToyCoco().manifest() == {"kind": "toy_coco", "version": gen.GENERATOR_VERSION, "seed": 0,
                                        "train": 4000, "val": 1000, "image_size": 64}
    assert gen.ToyImageNet(seed=1, per_class=60).manifest() == {
        "kind": "toy_imagenet", "version": gen.GENERATOR_VERSION, "seed": 1, "per_class": 60, "val_per_class": 50,
        "image_size": 64}
