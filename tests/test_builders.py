"""The training scripts' data: their flags' folders and lists -> Datasets, or a one-line error naming the flag."""
import argparse

import pytest

from src.data.builders import add_coco_args, add_nus_args, coco_datasets, nus_datasets
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
    with pytest.raises(UserError, match=r"^--data .*: missing .*images"):
        nus_datasets(_args(add_nus_args, ["--data", str(tmp_path / "train.txt")]), None, None, False)
