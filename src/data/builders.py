"""The data of the training scripts: their data flags, and the ``Datasets`` (train + test) those flags name.

``add_coco_args`` / ``coco_datasets``: train.py on MS-COCO 2014 (DATA/train2014, DATA/val2014,
DATA/annotations/instances_val2014.json, a training label list); ``add_nus_args`` / ``nus_datasets``: train_nus.py
on a training and a test label list over DATA/images (or DATA itself when it has no images/ folder): NUS-WIDE's
81 concepts by default, or the classes of ``--classes FILE``, or ``--num-classes N`` unnamed classes. A builder is
called by ``src.trainer.run_training`` as ``build(args, train_transform, val_transform, raw)``.

Both builders compare the training list with the test set (``class_space_mismatch``) and print a warning when
they look like two different class spaces (e.g. a list written with shifted indices).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from src.data.class_names import NUS_WIDE_CLASSES, read_classes_flag
# The data flags and their early checks live in a module free of torch (the scripts parse before it loads);
# re-exported here with the builders that use them.
from src.data.data_flags import (COCO_DEFAULT_LIST, add_coco_args, add_nus_args, check_coco_data, check_nus_data,
                                 list_image_root)
from src.data.datasets import NUS_NUM_CLASSES, MultiLabelImages, coco_dataset, label_list_dataset
from src.data.labels import LabelListError
from src.errors import UserError

__all__ = ["COCO_DEFAULT_LIST", "Datasets", "add_coco_args", "coco_datasets", "add_nus_args", "nus_datasets",
           "class_counts", "class_space_mismatch"]


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


def coco_datasets(args: argparse.Namespace, train_tf: Callable | None, val_tf: Callable | None,
                  raw: bool) -> Datasets:
    """--dataset (the training list) over DATA/train2014; the test set is val2014 with its annotations."""
    check_coco_data(args)
    data = Path(args.data)
    ann = data / "annotations" / "instances_val2014.json"
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
    _warn_mismatch(train, test)
    return Datasets(train=train, test=test, num_classes=test.num_classes, train_list=args.dataset,
                    class_names=test.class_names)


def _nus_classes(args: argparse.Namespace) -> tuple[int, list[str] | None]:
    """(class count, names): --classes FILE's names (checked against --num-classes when given), else
    --num-classes N without names (NUS-WIDE's concepts when N is 81), else NUS-WIDE's 81 concepts."""
    wanted = getattr(args, "num_classes", None)
    names = read_classes_flag(args.classes)
    if names is not None:
        if wanted is not None and wanted != len(names):
            raise UserError(f"--num-classes {wanted} disagrees with --classes {args.classes} ({len(names)} names)")
        return len(names), names
    if wanted is not None and wanted != NUS_NUM_CLASSES:
        if wanted <= 0:
            raise UserError(f"--num-classes {wanted} must be positive")
        return wanted, None
    return NUS_NUM_CLASSES, list(NUS_WIDE_CLASSES)


def nus_datasets(args: argparse.Namespace, train_tf: Callable | None, val_tf: Callable | None,
                 raw: bool) -> Datasets:
    """--train-dataset and --val-dataset over DATA/images (or DATA), with the classes of ``_nus_classes``."""
    check_nus_data(args)
    images = list_image_root(args.data)
    num_classes, names = _nus_classes(args)
    kw = dict(raw=raw, skip_bad_images=args.skip_bad_images, class_names=names)
    train = label_list_dataset(images, args.train_dataset, num_classes, transform=train_tf, **kw)
    test = label_list_dataset(images, args.val_dataset, num_classes, transform=val_tf, **kw)
    _check_class_count(args, train, test, names)
    _warn_mismatch(train, test)
    return Datasets(train=train, test=test, num_classes=num_classes, train_list=args.train_dataset,
                    class_names=names)


def _check_class_count(args: argparse.Namespace, train: MultiLabelImages, test: MultiLabelImages,
                       names: list[str] | None) -> None:
    """Lists whose highest class index is below the last named class were written for fewer classes: 7-class
    lists read as NUS-WIDE's 81 concepts would train 81 outputs and name the 7 classes wrongly, and a --classes
    file with a name too many shifts nothing but names a class no image has. Unnamed classes (--num-classes N)
    are the user's count and are not checked."""
    if names is None:
        return
    used = 1 + max((max(e.labels) for ds in (train, test) for e in ds.entries if e.labels), default=-1)
    if used == len(names):
        return
    named = (f"--classes {args.classes} has {len(names)} names" if args.classes else
             f"without --classes the classes are NUS-WIDE's {len(names)} concepts")
    raise UserError(f"the label lists {train.source} and {test.source} use {used} classes (indices 0..{used - 1}), "
                    f"but {named}: pass --classes FILE with the lists' {used} class names, one per line in index "
                    "order")


def class_counts(dataset: MultiLabelImages) -> np.ndarray:
    """The number of positive labels of each class in ``dataset`` (length num_classes)."""
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    for entry in dataset.entries:
        counts[list(entry.labels)] += 1
    return counts


def class_space_mismatch(train: np.ndarray, test: np.ndarray, min_expected: float = 5.0) -> str | None:
    """Why per-class positive counts ``train`` and ``test`` look like two different class spaces, or None.

    The counts are scaled by the lists' label totals (a missing-label training list has fewer labels per
    image): class c is expected to have e_test(c) = train(c) * T_test / T_train positives in the test set,
    and e_train(c) = test(c) * T_train / T_test in the training list. A class is *informative* when
    max(e_test(c), e_train(c)) >= ``min_expected``, *absent* when it is informative and has no positive in the
    list that was expected to have them (a Poisson count of mean 5 is 0 with probability e^-5 < 1%).
    Mismatch when at least 3 classes are informative and
      - at least a quarter of them (and 2 or more) are absent, or
      - with 8 or more, the Spearman rank correlation of their train and test counts is below 0.2.
    Real splits of one dataset (and their missing-label lists) correlate far above that; the same list with
    indices shifted by k classes does not."""
    train, test = np.asarray(train, dtype=np.float64), np.asarray(test, dtype=np.float64)
    total_train, total_test = train.sum(), test.sum()
    if total_train == 0 or total_test == 0:
        return None
    expected_test, expected_train = train * total_test / total_train, test * total_train / total_test
    informative = np.maximum(expected_test, expected_train) >= min_expected
    absent = informative & (((expected_test >= min_expected) & (test == 0))
                            | ((expected_train >= min_expected) & (train == 0)))
    n_info, n_absent = int(informative.sum()), int(absent.sum())
    if n_info < 3:
        return None
    if n_absent >= max(2, n_info / 4):
        shown = ", ".join(map(str, np.flatnonzero(absent)[:8].tolist()))
        return (f"{n_absent} of {n_info} frequent classes have positives in one list and none in the other "
                f"(class indices {shown}{', ...' if n_absent > 8 else ''})")
    if n_info >= 8:
        rho = _spearman(train[informative], test[informative])
        if rho < 0.2:
            return f"the class frequencies of the two lists do not correlate (Spearman {rho:.2f} over {n_info} classes)"
    return None


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 when either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # ties share their mean rank
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _warn_mismatch(train: MultiLabelImages, test: MultiLabelImages) -> None:
    """Print a warning on stderr when the training list and the test set look like different class spaces."""
    why = class_space_mismatch(class_counts(train), class_counts(test))
    if why:
        print(f"warning: the training list {train.source} and the test set {test.source} may use different class "
              f"indices: {why}. Check that both lists were written with the same classes file.", file=sys.stderr,
              flush=True)
