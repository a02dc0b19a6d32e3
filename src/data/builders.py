"""The data of the training scripts: their data flags, and the ``Datasets`` (train + test) those flags name.

``add_coco_args`` / ``coco_datasets``: train.py on MS-COCO 2014 (DATA/train2014, DATA/val2014,
DATA/annotations/instances_val2014.json, a training label list); ``add_nus_args`` / ``nus_datasets``: train_nus.py
on NUS-WIDE (DATA/images, a training and a test label list, 81 classes). A builder is called by
``src.trainer.run_training`` as ``build(args, train_transform, val_transform, raw)``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from src.data.class_names import NUS_WIDE_CLASSES, read_classes_flag
from src.data.datasets import NUS_NUM_CLASSES, MultiLabelImages, coco_dataset, label_list_dataset
from src.data.labels import LabelListError
from src.errors import UserError

# train.py's --dataset when not given: the paper's list for the real MS-COCO 2014 (the official default).
COCO_DEFAULT_LIST = "./dataset/coco_train_0.4left.txt"

__all__ = ["COCO_DEFAULT_LIST", "Datasets", "add_coco_args", "coco_datasets", "add_nus_args", "nus_datasets"]


@dataclass
class Datasets:
    """What a training script builds: the training list and the test set, plus how they were named.

    ``class_names``: the name of each class index (length num_classes), or None when unknown; stored in
    every checkpoint and checked on resume."""
    train: MultiLabelImages
    test: MultiLabelImages
    num_classes: int
    train_list: str
    class_names: list[str] | None = None


def add_coco_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """train.py's data flags (the official names and defaults)."""
    parser.add_argument("--dataset", default=COCO_DEFAULT_LIST, metavar="LIST",
                        help=f"training label list (default: {COCO_DEFAULT_LIST}, the paper's 40%%-left list of "
                             "the real MS-COCO train2014; the toy COCO has its own lists in its folder)")
    parser.add_argument("--data", metavar="DIR", default="/home/MSCOCO_2014/",
                        help="COCO 2014 root holding train2014/, val2014/, annotations/ "
                             "(default: /home/MSCOCO_2014/, the official code's; see docs/coco.md)")
    return parser


def coco_datasets(args: argparse.Namespace, train_tf: Callable | None, val_tf: Callable | None,
                  raw: bool) -> Datasets:
    """--dataset (the training list) over DATA/train2014; the test set is val2014 with its annotations."""
    data = Path(args.data)
    ann = data / "annotations" / "instances_val2014.json"
    needed = [data / "train2014", data / "val2014", ann]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise UserError(f"--data {data}: missing {', '.join(missing)} (expected the COCO 2014 layout)")
    if not Path(args.dataset).is_file():
        raise UserError(f"--dataset {args.dataset}: no such label list (see dataset/README.md to make it)")
    # The classes: val2014's categories sorted by id, checked against instances_train2014.json when present,
    # else against the 80 COCO categories when they are COCO's.
    test = coco_dataset(data / "val2014", ann, reference=data / "annotations" / "instances_train2014.json",
                        transform=val_tf, raw=raw, skip_bad_images=args.skip_bad_images)
    try:
        train = label_list_dataset(data / "train2014", args.dataset, test.num_classes, transform=train_tf, raw=raw,
                                   skip_bad_images=args.skip_bad_images)
    except LabelListError as e:
        if args.dataset != COCO_DEFAULT_LIST:
            raise
        raise LabelListError(f"{e}\n--dataset was not given: its default {COCO_DEFAULT_LIST} is for the real "
                             f"MS-COCO 2014; pass --dataset with a list of your data (the toy COCO's are in its "
                             f"folder, e.g. --dataset {data / 'coco_train_0.4left.txt'})") from None
    return Datasets(train=train, test=test, num_classes=test.num_classes, train_list=args.dataset,
                    class_names=test.class_names)


def add_nus_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """train_nus.py's data flags (the official defaults; --train_dataset / --val_dataset are accepted too)."""
    parser.add_argument("--train-dataset", default="./dataset/nus_train_singlelabel.txt", metavar="LIST",
                        help="training list (default: ./dataset/nus_train_singlelabel.txt, which you make or "
                             "download first: dataset/README.md)")
    parser.add_argument("--val-dataset", default="./dataset/nus_val.txt", metavar="LIST",
                        help="validation (test) list (default: ./dataset/nus_val.txt)")
    parser.add_argument("--data", metavar="DIR", default="/home/NUS_wide/",
                        help="NUS-WIDE root (holds images/; default: /home/NUS_wide/, the official code's)")
    parser.add_argument("--classes", default=None, metavar="FILE",
                        help="class names, one per line in class-index order (default: NUS-WIDE's 81 concepts)")
    return parser


def nus_datasets(args: argparse.Namespace, train_tf: Callable | None, val_tf: Callable | None,
                 raw: bool) -> Datasets:
    """--train-dataset and --val-dataset over DATA/images, 81 classes named by --classes or NUS-WIDE's concepts."""
    images = Path(args.data) / "images"
    if not images.is_dir():
        raise UserError(f"--data {args.data}: missing {images} (expected NUS-WIDE images under DATA/images/)")
    for flag, path in (("--train-dataset", args.train_dataset), ("--val-dataset", args.val_dataset)):
        if not Path(path).is_file():
            raise UserError(f"{flag} {path}: no such label list (see dataset/README.md)")
    names = read_classes_flag(args.classes, NUS_NUM_CLASSES) or list(NUS_WIDE_CLASSES)
    kw = dict(raw=raw, skip_bad_images=args.skip_bad_images, class_names=names)
    train = label_list_dataset(images, args.train_dataset, NUS_NUM_CLASSES, transform=train_tf, **kw)
    test = label_list_dataset(images, args.val_dataset, NUS_NUM_CLASSES, transform=val_tf, **kw)
    return Datasets(train=train, test=test, num_classes=NUS_NUM_CLASSES, train_list=args.train_dataset,
                    class_names=names)
