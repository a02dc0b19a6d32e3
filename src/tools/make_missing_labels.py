"""Make the paper's missing-label training lists by dropping positives from a fully labelled list.

For an image with n labels the paper's lists keep, chosen uniformly at random without replacement:

    {prefix}_train_0.75left.txt     floor(n/2) + 1
    {prefix}_train_0.4left.txt      floor(n/5) + 1
    {prefix}_train_singlelabel.txt  1

(never more than n). From the official coco_train_full.txt (241,035 labels) this gives exactly the
paper's 181,422 / 96,251 / 82,081 labels, whatever the seed. ``--keep-ratio r`` instead keeps each
positive independently with probability r, at least one per image, into {prefix}_train_{r}left.txt.

    python -m src.tools.make_missing_labels --full-list coco_train_full.txt --out-dir dataset --seed 0
    python -m src.tools.make_missing_labels --instances annotations/instances_train2014.json --out-dir dataset
    python -m src.tools.make_missing_labels --nus-release /home/NUS_wide --nus-images /home/NUS_wide/images \
        --out-dir dataset

``--nus-release`` reads NUS-WIDE's own release files (81-concept ground truth, see src/data/nus_release.py)
and writes nus_train_full.txt with the lists made from it.

``--voc DIR``, ``--cub DIR`` and ``--csv TRAIN [TEST]`` convert other annotations (src/data/converters.py):
they write ``{prefix}_classes.txt`` (one name per line, train_nus.py's ``--classes``), one list per split that
does not train (``{prefix}_test.txt``, ``{prefix}_val.txt``, ...), and the lists above from the training split.

    python -m src.tools.make_missing_labels --voc VOCdevkit/VOC2007 --out-dir voc_lists
    python -m src.tools.make_missing_labels --cub CUB_200_2011 --out-dir cub_lists
    python -m src.tools.make_missing_labels --csv train.csv test.csv --images photos --label-sep ";" \
        --out-dir my_lists

No output may be a list shipped in dataset/ (named in dataset/SHA256SUMS): the tool stops before writing. The
outputs follow the output rule (src/outputs.py): an existing, non-empty ``--out-dir`` is refused without
``--overwrite`` (the lists in it may be in use by runs trained on them), and no output replaces an input.

The converters' lists are checked before anything is written (``check_converted``): every listed image is a file
(``--images DIR`` for ``--csv``; ``--allow-missing`` leaves out and names those that are not), every split holds
an image, and the training split shares no image with the test split.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from src.data.class_names import read_classes_flag, write_class_names
from src.data.converters import Converted, check_converted, read_cub, read_label_csv, read_voc
from src.data.labels import LabelEntry, label_stats, read_label_list, write_label_list
from src.data.missing_labels import bernoulli_keep, drop_labels, list_paths, missing_label_lists, write_lists
from src.data.nus_release import read_nus_release
from src.data.shipped import refuse_shipped
from src.errors import report_user_errors
from src.outputs import ANY_NEW_FILE, Outputs

__all__ = ["format_table", "main"]  # the lists themselves: src.data.missing_labels

_ROW_NAMES = {"full": "full", "0.75left": "75% left", "0.4left": "40% left", "singlelabel": "single"}
_DEFAULT_PREFIX = {"nus_release": "nus", "voc": None, "cub": "cub", "csv": "own"}  # voc: the folder's name


def format_table(lists: dict[str, Sequence[LabelEntry]], num_classes: int) -> str:
    """The official README's dataset table (markdown): samples, classes, labels, avg labels/image."""
    rows = ["| list | samples | classes | labels | avg labels/image |", "| --- | ---: | ---: | ---: | ---: |"]
    for key, entries in lists.items():
        s = label_stats(entries)
        name = _ROW_NAMES.get(key, key)
        rows.append(f"| {name} | {s['samples']:,} | {num_classes} | {s['labels']:,} | {s['avg_labels']:.2f} |")
    return "\n".join(rows)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m src.tools.make_missing_labels",
        description="Write the paper's missing-label lists (75% left, 40% left, single label) from full labels, "
                    "or from Pascal VOC, CUB-200-2011 or a CSV after converting them.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--full-list", type=Path, help="fully labelled list 'name,i j k' (e.g. coco_train_full.txt)")
    src.add_argument("--instances", type=Path, help="COCO instances json (e.g. annotations/instances_train2014.json)")
    src.add_argument("--nus-release", type=Path, metavar="DIR",
                     help="NUS-WIDE release folder (Concepts81.txt, ImageList/, Groundtruth/TrainTestLabels/)")
    src.add_argument("--voc", type=Path, metavar="DIR",
                     help="a VOCdevkit/VOC2007 or VOC2012 folder (ImageSets/Main/*.txt, Annotations/*.xml)")
    src.add_argument("--cub", type=Path, metavar="DIR",
                     help="a CUB_200_2011 folder: its 312 attributes as labels (images.txt, train_test_split.txt, "
                          "attributes/image_attribute_labels.txt, attributes.txt)")
    src.add_argument("--csv", type=Path, nargs="+", metavar="FILE",
                     help="'filename,labels' CSV of the training images, optionally followed by one of the test images")
    _add_converter_args(p.add_argument_group("converter options (--voc, --cub, --csv)"))
    p.add_argument("--nus-images", type=Path, metavar="DIR",
                   help="with --nus-release: name each image by its file in DIR (matched by Flickr photo id, as "
                        "nus_val.txt names them) and leave out images not there")
    p.add_argument("--out-dir", type=Path, required=True, help="folder for the lists (new or empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing, non-empty --out-dir, replacing its lists (never an input)")
    p.add_argument("--prefix", default=None,
                   help="file name prefix (default: coco; nus, voc2007/voc2012 (the folder's name), cub, own with "
                        "--nus-release, --voc, --cub, --csv)")
    p.add_argument("--seed", type=int, default=0, help="numpy seed of the random drops (default: 0)")
    p.add_argument(
        "--num-classes", type=int, default=None,
        help="number of classes (validates --full-list; default: largest index + 1, or the categories of --instances)",
    )
    p.add_argument(
        "--keep-ratio", type=float, default=None,
        help="instead of the paper's lists, keep each label with this probability (at least one per image)",
    )
    args = p.parse_args(argv)
    if args.keep_ratio is not None and not 0.0 < args.keep_ratio <= 1.0:
        p.error(f"--keep-ratio must be in (0, 1], got {args.keep_ratio}")
    if args.num_classes is not None and args.num_classes <= 0:
        p.error(f"--num-classes must be positive, got {args.num_classes}")
    if args.nus_images is not None and args.nus_release is None:
        p.error("--nus-images needs --nus-release")
    if args.csv is not None and len(args.csv) > 2:
        p.error(f"--csv takes one or two files (training, test), got {len(args.csv)}")
    if args.classes is not None and args.csv is None:
        p.error("--classes goes with --csv (VOC's and CUB's classes are fixed)")
    if args.csv is not None and args.images is None:
        p.error("--csv needs --images DIR, the folder its file names are relative to (every image is checked)")
    if args.images is not None and args.csv is None:
        p.error("--images goes with --csv (VOC's and CUB's image folders are known)")
    if args.prefix is None:
        source = next((k for k in _DEFAULT_PREFIX if getattr(args, k) is not None), None)
        args.prefix = "coco" if source is None else _DEFAULT_PREFIX[source] or args.voc.resolve().name.lower()
    return args


def _add_converter_args(g) -> None:
    g.add_argument("--voc-difficult", choices=["positive", "negative"], default="positive",
                   help="objects marked difficult: count them as positive (default, the common choice) or ignore "
                        "them (as VOC's per-class lists, and Cole et al.'s code, do)")
    g.add_argument("--voc-train-split", choices=["train", "trainval"], default=None,
                   help="the VOC split to train on (default: trainval when test.txt exists, as for VOC 2007, else "
                        "train, as for VOC 2012)")
    g.add_argument("--cub-min-certainty", type=int, choices=[1, 2, 3, 4], default=1,
                   help="count a present CUB attribute only at this certainty or above (1 not visible, 2 guessing, "
                        "3 probably, 4 definitely; default 1: is_present alone, as Cole et al.'s code)")
    g.add_argument("--label-sep", default=None, metavar="SEP",
                   help="--csv: what separates the label names in the labels field (default: whitespace)")
    g.add_argument("--csv-header", action=argparse.BooleanOptionalAction, default=None,
                   help="--csv: the first row is a header (--csv-header) or an image (--no-csv-header); without "
                        "either, a first row that names no image is an error asking which")
    g.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="--csv: the folder the file names are relative to (train_nus.py's --data)")
    g.add_argument("--allow-missing", action="store_true",
                   help="leave out (and name) the listed images that have no file, instead of stopping")
    g.add_argument("--class-order", choices=["sorted", "first-seen"], default="sorted",
                   help="--csv without --classes: class order of the classes file (default: sorted)")
    g.add_argument("--classes", default=None, metavar="FILE",
                   help="--csv: the class names, one per line, in index order; a label not in it is an error")


def _nus_full_list(args: argparse.Namespace) -> tuple[list[LabelEntry], int]:
    """The full list from the NUS-WIDE release files, saying what was left out and why."""
    read = read_nus_release(args.nus_release, args.nus_images)
    if args.num_classes is not None and args.num_classes != len(read.concepts):
        raise SystemExit(f"--num-classes {args.num_classes} but {args.nus_release} lists {len(read.concepts)} concepts")
    total = len(read.entries) + read.unlabelled + read.no_image
    print(f"{args.nus_release}: {total} training images, {len(read.concepts)} concepts; left out: "
          f"{read.unlabelled} with no concept"
          + (f", {read.no_image} with no file in {args.nus_images}" if args.nus_images is not None else ""))
    if read.odd_values:
        print(f"warning: {len(read.odd_values)} label values other than 0/1, read as 0: "
              + "; ".join(read.odd_values[:5]))
    return read.entries, len(read.concepts)


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    args = _parse_args(argv)
    with report_user_errors(), Outputs(args.overwrite, vars(args), skip=("out_dir",)) as outputs:
        outputs.claim_folder("--out-dir", args.out_dir)
        return _make(args, outputs)


def _check_outputs(paths: Sequence[Path], outputs: Outputs) -> None:
    """Before writing any: no shipped list, and the output rule for each file (none is an input)."""
    refuse_shipped(paths)
    for path in paths:
        outputs.check("--out-dir", path, ANY_NEW_FILE)


def _converted(args: argparse.Namespace) -> Converted:
    """The --voc, --cub or --csv input, read and converted."""
    if args.voc is not None:
        return read_voc(args.voc, args.voc_difficult, args.voc_train_split)
    if args.cub is not None:
        return read_cub(args.cub, args.cub_min_certainty)
    names = read_classes_flag(args.classes)
    return read_label_csv(args.csv, args.label_sep, args.csv_header, names, f"--classes {args.classes}",
                          args.class_order, args.images)


def _report_left_out(converted: Converted) -> None:
    """Print the images left out (no positive label; no file, with --allow-missing): counts and the first ones."""
    for line in converted.left_out[:5]:
        print(f"left out: {line}")
    if converted.left_out:
        print(f"left out {len(converted.left_out)} images with no positive label"
              + (" (first 5 above)" if len(converted.left_out) > 5 else ""))
    if converted.missing:
        shown = ", ".join(converted.missing[:5]) + (", ..." if len(converted.missing) > 5 else "")
        print(f"left out {len(converted.missing)} images with no file under {converted.image_root} "
              f"(--allow-missing): {shown}")


def _convert(args: argparse.Namespace, outputs: Outputs) -> dict[str, Path]:
    """--voc / --cub / --csv: the classes file, the lists of the other splits, then the paper's lists."""
    converted = check_converted(_converted(args), args.allow_missing)
    num_classes = len(converted.class_names)
    if args.num_classes is not None and args.num_classes != num_classes:
        raise SystemExit(f"--num-classes {args.num_classes} but the data has {num_classes} classes")
    _report_left_out(converted)
    full = converted.splits[converted.train_split]
    lists = _paper_lists(args, full)
    others = {split: e for split, e in converted.splits.items() if split != converted.train_split}
    out = Path(args.out_dir)
    planned = {**list_paths(lists, out, args.prefix), **{split: out / f"{args.prefix}_{split}.txt" for split in others}}
    classes_path = out / f"{args.prefix}_classes.txt"
    _check_outputs([classes_path, *planned.values()], outputs)
    paths = {"classes": write_class_names(classes_path, converted.class_names)}
    for key, entries in {**lists, **others}.items():
        paths[key] = write_label_list(planned[key], entries)
    for path in paths.values():
        print(f"wrote {path}")
    print(f"classes: {num_classes} ({converted.class_names[0]}, ...); training split: {converted.train_split}")
    print(format_table({**lists, **others}, num_classes))
    return paths


def _paper_lists(args: argparse.Namespace, full: Sequence[LabelEntry]) -> dict[str, list[LabelEntry]]:
    """The paper's lists from ``full``, or full + the --keep-ratio list."""
    if args.keep_ratio is None:
        return missing_label_lists(full, args.seed)
    rng = np.random.default_rng(args.seed)
    kept = drop_labels(full, bernoulli_keep(args.keep_ratio, rng), rng)
    return {"full": list(full), f"{args.keep_ratio:g}left": kept}


def _make(args: argparse.Namespace, outputs: Outputs) -> dict[str, Path]:
    if any(x is not None for x in (args.voc, args.cub, args.csv)):
        return _convert(args, outputs)
    if args.nus_release is not None:
        full, num_classes = _nus_full_list(args)
    elif args.instances is not None:
        from src.data.datasets import coco_entries_from_instances  # here: it loads torch, the tool's -h does not
        full, names = coco_entries_from_instances(args.instances)
        if args.num_classes is not None and args.num_classes != len(names):
            raise SystemExit(f"--num-classes {args.num_classes} but {args.instances} has {len(names)} categories")
        num_classes = len(names)
    else:
        full = read_label_list(args.full_list, args.num_classes)
        num_classes = args.num_classes or label_stats(full)["max_index"] + 1

    lists = _paper_lists(args, full)
    _check_outputs(list(list_paths(lists, args.out_dir, args.prefix).values()), outputs)
    paths = write_lists(lists, args.out_dir, args.prefix)
    for path in paths.values():
        print(f"wrote {path}")
    print(format_table(lists, num_classes))
    return paths


if __name__ == "__main__":
    main()
