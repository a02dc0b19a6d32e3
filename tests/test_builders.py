"""The training scripts' data: their flags' folders and lists -> Datasets, or a one-line error naming the flag."""
import argparse

import pytest

from src.data.builders import COCO_DEFAULT_LIST, add_coco_args, add_nus_args, coco_datasets, nus_datasets
from src.errors import UserError
from src.toy.shapes import NUM_CLASSES


def _args(add, argv):
    parser = add(argparse.ArgumentParser())
    parser.add_argument("--skip-bad-images", action="store_true")
    return parser.parse_args(argv)


def test_coco_builds_the_list_over_train2014_and_tests_on_val2014(toy_coco):
    args = _args(add_coco_args, ["--data", str(toy_coco), "--dataset", str(toy_coco / "coco_train_0.4left.txt")])
    data = coco_datasets(args, None, None, raw=False)
    assert data.num_classes == data.train.num_classes == data.test.num_classes == NUM_CLASSES
    assert (len(data.train), len(data.test)) == (48, 24) and data.train_list == args.dataset
    assert data.class_names == data.test.class_names and len(data.class_names) == NUM_CLASSES


def test_coco_errors_name_the_flag(toy_coco, tmp_path):
    with pytest.raises(UserError, match=r"^--data .*: missing .*val2014.*COCO 2014 layout"):
        coco_datasets(_args(add_coco_args, ["--data", str(tmp_path)]), None, None, raw=False)
    with pytest.raises(UserError, match=r"^--dataset nowhere.txt: no such label list"):
        coco_datasets(_args(add_coco_args, ["--data", str(toy_coco), "--dataset", "nowhere.txt"]), None, None, False)


def test_nus_reads_images_and_both_lists_with_81_classes(nus_folder, tmp_path):
    nus_folder(tmp_path, 4, 2)
    flags = ["--data", str(tmp_path), "--train-dataset", str(tmp_path / "train.txt")]
    data = nus_datasets(_args(add_nus_args, flags + ["--val-dataset", str(tmp_path / "val.txt")]), None, None, False)
    assert data.num_classes == 81 and (len(data.train), len(data.test)) == (4, 2) and len(data.class_names) == 81
    with pytest.raises(UserError, match=r"^--val-dataset nowhere.txt: no such label list"):
        nus_datasets(_args(add_nus_args, flags + ["--val-dataset", "nowhere.txt"]), None, None, False)
    with pytest.raises(UserError, match=r"^--data .*train\.txt: no such folder"):
        nus_datasets(_args(add_nus_args, ["--data", str(tmp_path / "train.txt")]), None, None, False)
    # a folder without images/: the lists name files under DATA itself
    data = nus_datasets(_args(add_nus_args, ["--data", str(tmp_path / "images"), "--train-dataset",
                                             str(tmp_path / "train.txt"), "--val-dataset", str(tmp_path / "val.txt")]),
                        None, None, False)
    assert data.train.path(0) == tmp_path / "images" / data.train.entries[0].name and data.train.path(0).is_file()


def test_class_space_mismatch_flags_shifted_or_disjoint_counts_only():
    import numpy as np

    from src.data.builders import class_space_mismatch

    rng = np.random.default_rng(0)
    freq = rng.pareto(1.0, 81) + 0.05  # long-tailed class frequencies, as in NUS-WIDE
    full = rng.poisson(4000 * freq / freq.sum() * 20)
    test = rng.poisson(2000 * freq / freq.sum() * 20)
    single = rng.binomial(full, 0.4)  # a missing-label list keeps a part of each class's positives
    assert class_space_mismatch(full, test) is None and class_space_mismatch(single, test) is None
    assert class_space_mismatch(np.zeros(81), test) is None  # an empty list is another error's business
    assert "do not correlate" in class_space_mismatch(full, np.roll(test, 1))  # indices shifted by one
    disjoint = np.zeros(81, dtype=int)
    disjoint[50:74] = test[:24]  # 24 classes moved by +50, as in issue 22
    small = np.zeros(81, dtype=int)
    small[:24] = test[:24]
    assert "have positives in one list and none in the other" in class_space_mismatch(small, disjoint)
    tiny = np.zeros(81, dtype=int)
    tiny[[0, 1, 2]] = 1  # too few labels to judge: no warning
    assert class_space_mismatch(tiny, np.roll(tiny, 50)) is None


def test_help_shows_the_data_defaults():
    coco = add_coco_args(argparse.ArgumentParser()).format_help().replace("\n", " ")
    nus = add_nus_args(argparse.ArgumentParser()).format_help().replace("\n", " ")
    for default in (COCO_DEFAULT_LIST, "/home/MSCOCO_2014/"):
        assert f"default: {default}" in " ".join(coco.split()), default
    for default in ("./dataset/nus_train_singlelabel.txt", "./dataset/nus_val.txt", "/home/NUS_wide/"):
        assert f"default: {default}" in " ".join(nus.split()), default


def test_a_bad_default_list_says_it_is_the_default_for_real_coco(toy_coco, tmp_path, monkeypatch):
    """Without --dataset the official list is read; on other data its error says so and what to pass."""
    (tmp_path / "dataset").mkdir()
    bad = "COCO_train2014_000000000001.jpg,0\nCOCO_train2014_000000000002.jpg,999\n"
    (tmp_path / COCO_DEFAULT_LIST).write_text(bad)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        coco_datasets(_args(add_coco_args, ["--data", str(toy_coco)]), None, None, raw=False)
    first, second = str(err.value).splitlines()
    assert first.startswith("dataset/coco_train_0.4left.txt:2: class index 999 out of range")
    assert "--dataset was not given" in second and "real MS-COCO" in second
    assert str(toy_coco / "coco_train_0.4left.txt") in second
    given = tmp_path / "mine.txt"
    given.write_text((tmp_path / COCO_DEFAULT_LIST).read_text())
    with pytest.raises(UserError) as err:
        coco_datasets(_args(add_coco_args, ["--data", str(toy_coco), "--dataset", str(given)]), None, None, False)
    assert "not given" not in str(err.value) and len(str(err.value).splitlines()) == 1


def test_nus_lists_of_another_class_count_than_the_names_are_refused_naming_classes(nus_folder, tmp_path):
    """7-class lists were trained as NUS-WIDE's 81 concepts without a word; an 8-name --classes file for them
    named a class no image has."""
    nus_folder(tmp_path, 4, 3)
    for split in ("train", "val"):  # the same images, labels in 7 classes (index 6 used)
        names = [line.split(",")[0] for line in (tmp_path / f"{split}.txt").read_text().splitlines()]
        (tmp_path / f"{split}7.txt").write_text("".join(f"{n},{i % 7} 6\n" for i, n in enumerate(names)))
    flags = ["--data", str(tmp_path), "--train-dataset", str(tmp_path / "train7.txt"), "--val-dataset",
             str(tmp_path / "val7.txt")]
    seven, eight = tmp_path / "seven.txt", tmp_path / "eight.txt"
    seven.write_text("".join(f"c{i}\n" for i in range(7)))
    eight.write_text("".join(f"c{i}\n" for i in range(8)))

    def build(*extra):
        return nus_datasets(_args(add_nus_args, [*flags, *extra]), None, None, False)

    with pytest.raises(UserError, match=r"use 7 classes \(indices 0\.\.6\), but without --classes the classes are "
                                        r"NUS-WIDE's 81 concepts: pass --classes FILE"):
        build()
    with pytest.raises(UserError, match=rf"use 7 classes .*but --classes {eight} has 8 names: pass --classes"):
        build("--classes", str(eight))
    assert build("--classes", str(seven)).class_names == [f"c{i}" for i in range(7)]
