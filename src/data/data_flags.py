"""The data flags of train.py, train_nus.py and validate.py, and the checks of those flags that run right after
parsing, before torch loads and before any weights are looked for: the folders exist, the lists exist, and a few
entries sampled from each list name image files that are there (a list of other data fails within seconds,
naming its flag, instead of at the first batch). Standard library and src.data.labels only.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from src.data.labels import LabelListError, parse_label_line
from src.errors import UserError
from src.io_utils import read_text_lines

__all__ = ["COCO_DEFAULT_LIST", "NUS_LISTS_URL", "SAMPLED_ENTRIES", "add_coco_args", "add_nus_args",
           "check_coco_data", "check_nus_data", "check_val_data", "check_list_fits", "list_image_root", "missing_list_message"]

# train.py's --dataset when not given: the paper's list for the real MS-COCO 2014 (the official default).
COCO_DEFAULT_LIST = "./dataset/coco_train_0.4left.txt"
# Where the official NUS-WIDE lists are: the dataset/ folder of the official code (not shipped here, see
# dataset/README.md); each file is NUS_LISTS_URL/<name>, e.g. NUS_LISTS_URL/nus_train_singlelabel.txt.
NUS_LISTS_URL = "https://github.com/xinyu1205/robust-loss-mlml/raw/HEAD/dataset"
NUS_LISTS_FOLDER = "https://github.com/xinyu1205/robust-loss-mlml/tree/HEAD/dataset"
SAMPLED_ENTRIES = 5  # entries of a list checked at start: first, last and three spread between


def add_coco_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """train.py's data flags (the official names and defaults)."""
    parser.add_argument("--dataset", default=COCO_DEFAULT_LIST, metavar="LIST",
                        help=f"training label list (default: {COCO_DEFAULT_LIST}, the paper's 40%%-left list of "
                             "the real MS-COCO train2014; the toy COCO has its own lists in its folder)")
    parser.add_argument("--data", metavar="DIR", default="/home/MSCOCO_2014/",
                        help="COCO 2014 root holding train2014/, val2014/, annotations/ "
                             "(default: /home/MSCOCO_2014/, the official code's; see docs/coco.md)")
    return parser


def add_nus_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """train_nus.py's data flags (the official defaults; --train_dataset / --val_dataset are accepted too)."""
    parser.add_argument("--train-dataset", default="./dataset/nus_train_singlelabel.txt", metavar="LIST",
                        help="training list (default: ./dataset/nus_train_singlelabel.txt, which you download "
                             f"first from {NUS_LISTS_FOLDER} or make: dataset/README.md)")
    parser.add_argument("--val-dataset", default="./dataset/nus_val.txt", metavar="LIST",
                        help="validation (test) list (default: ./dataset/nus_val.txt)")
    parser.add_argument("--data", metavar="DIR", default="/home/NUS_wide/",
                        help="image root: the lists name files under DATA/images/, or under DATA when it has no "
                             "images/ folder (default: /home/NUS_wide/, the official code's)")
    parser.add_argument("--classes", default=None, metavar="FILE",
                        help="class names, one per line in class-index order; their count is the class count "
                             "(default: NUS-WIDE's 81 concepts, or --num-classes N unnamed classes)")
    return parser


def list_image_root(data: str | Path) -> Path:
    """The image folder of a label list over --data: DATA/images when there is one, else DATA."""
    data = Path(data)
    return data / "images" if (data / "images").is_dir() else data


def missing_list_message(flag: str, path: str) -> str:
    """'FLAG PATH: no such label list', with where the official NUS-WIDE lists are when it names one."""
    name = Path(path).name
    if name.startswith("nus_"):
        return (f"{flag} {path}: no such label list; the official NUS-WIDE lists are in {NUS_LISTS_FOLDER} "
                f"(download {NUS_LISTS_URL}/{name} into {Path(path).parent}/, see dataset/README.md)")
    return f"{flag} {path}: no such label list (see dataset/README.md to make it)"


def _sample(lines: list[str], k: int) -> list[tuple[int, str]]:
    """(line number, line) of up to ``k`` lines spread evenly from the first to the last."""
    if len(lines) <= k:
        return list(enumerate(lines, start=1))
    picks = sorted({round(i * (len(lines) - 1) / (k - 1)) for i in range(k)})
    return [(i + 1, lines[i]) for i in picks]


def check_list_fits(flag: str, path: str, images: Path, hint: str = "") -> None:
    """Entries of the label list ``path``, sampled first to last, name files under ``images``; when none of them
    does, the list is not this data's: a UserError naming ``flag``, the list and a missing file (``hint``
    appended). A list with some of its images missing is left to the per-image checks (--check-images,
    --skip-bad-images)."""
    if not Path(path).is_file():
        raise UserError(missing_list_message(flag, path))
    lines = read_text_lines(path, LabelListError)
    sampled = _sample([x for x in lines if x.strip()], SAMPLED_ENTRIES)
    missing = []
    for lineno, line in sampled:
        try:
            name = parse_label_line(line).name
        except LabelListError as e:
            raise LabelListError(f"{path}:{lineno}: {e}: {line!r}") from None
        if not (images / name).exists():
            missing.append((lineno, images / name))
    if sampled and len(missing) == len(sampled):
        lineno, file = missing[0]
        raise UserError(f"{flag} {path} does not fit the images: none of the {len(sampled)} entries checked "
                        f"exists, e.g. {file} (line {lineno}); is {flag} the list of this data?{hint}")


def check_coco_data(args: argparse.Namespace) -> None:
    """train.py: --data has the COCO 2014 layout and --dataset (given or not) names images of DATA/train2014."""
    data = Path(args.data)
    needed = [data / "train2014", data / "val2014", data / "annotations" / "instances_val2014.json"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise UserError(f"--data {data}: missing {', '.join(missing)} (expected the COCO 2014 layout; for images "
                        f"with your own label lists use train_nus.py, docs/data.md)")
    hint = ""
    if args.dataset == COCO_DEFAULT_LIST:
        hint = (f" --dataset was not given: its default {COCO_DEFAULT_LIST} is for the real MS-COCO 2014; pass "
                f"--dataset with a list of your data (the toy COCO's are in its folder, e.g. --dataset "
                f"{data / 'coco_train_0.4left.txt'})")
    check_list_fits("--dataset", args.dataset, data / "train2014", hint)


def check_nus_data(args: argparse.Namespace) -> None:
    """train_nus.py: --data is a folder and both lists name images under it."""
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: no such folder (expected the images under DATA/images/ or DATA/)")
    images = list_image_root(args.data)
    for flag, path in (("--train-dataset", args.train_dataset), ("--val-dataset", args.val_dataset)):
        check_list_fits(flag, path, images)


def check_val_data(args: argparse.Namespace) -> None:
    """validate.py: --val-dataset names images under --data; without it, --data has COCO's val2014/ and
    annotations (else the error says that own data needs --val-dataset)."""
    data = Path(args.data)
    if args.val_dataset:
        if not data.is_dir():
            raise UserError(f"--data {args.data}: no such folder (expected the images of --val-dataset under "
                            f"DATA/images/ or DATA/)")
        check_list_fits("--val-dataset", args.val_dataset, list_image_root(data))
        return
    ann = data / "annotations" / "instances_val2014.json"
    missing = [str(p) for p in (data / "val2014", ann) if not p.exists()]
    if missing:
        raise UserError(f"--data {data}: missing {', '.join(missing)} (COCO 2014's layout, scored when "
                        f"--val-dataset is not given); to score a label list of your data, give --val-dataset LIST")
