"""Make the toy COCO: a small multi-label dataset of coloured shapes with COCO's 80 classes and label sets.

    python -m src.tools.make_toy_coco --out data/toy_coco [--seed 0] [--train 4000] [--val 1000]
        [--image-size 64] [--force] [--preview pics/toy_coco_samples.png]
    python -m src.tools.make_toy_coco --imagenet --out data/toy_imagenet [--per-class 200]

writes DIR/train2014/*.jpg, DIR/val2014/*.jpg, DIR/annotations/instances_{train,val}2014.json and
the official label lists DIR/coco_train_{full,0.75left,0.4left,singlelabel}.txt; a complete dataset made with
the same seed and sizes is reused (``--force`` regenerates). Every image takes the label set of its own line of the
official dataset/coco_train_full.txt (train and val from disjoint lines); after writing, the command prints the
label structure of the toy's train lists beside the official ones (a markdown table). ``--imagenet`` makes the single-object "toy ImageNet"
instead, in an ImageFolder layout (DIR/{train,val}/NN_class_name/*.jpg). The generators are ``src.toy.generate``;
the scenes and their statistics ``src.toy.shapes``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from src.errors import report_user_errors
from src.outputs import Outputs, png_kind
from src.toy.generate import (DEFAULT_IMAGE_SIZE, DEFAULT_PER_CLASS, DEFAULT_TRAIN, DEFAULT_VAL,
                              DEFAULT_VAL_PER_CLASS, PREVIEW_TOOL, ToyCoco, ToyImageNet, ToySizeError, make_toy_coco,
                              make_toy_imagenet, write_preview)

PREVIEW_KIND = png_kind(PREVIEW_TOOL)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m src.tools.make_toy_coco",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=DEFAULT_TRAIN, help="train images (toy COCO)")
    p.add_argument("--val", type=int, default=DEFAULT_VAL, help="val images (toy COCO)")
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="square image side in pixels")
    p.add_argument("--force", action="store_true", help="regenerate even if DIR holds the same dataset")
    p.add_argument("--workers", type=int, default=None, help="processes (default: available cores)")
    p.add_argument("--preview", type=Path, default=None, help="also write a PNG grid of train images")
    p.add_argument("--overwrite", action="store_true",
                   help="let --preview replace an existing file that this tool did not draw")
    p.add_argument("--imagenet", action="store_true", help="make the single-object toy ImageNet instead")
    p.add_argument("--per-class", type=int, default=DEFAULT_PER_CLASS, help="toy ImageNet train images per class")
    p.add_argument("--val-per-class", type=int, default=DEFAULT_VAL_PER_CLASS,
                   help="toy ImageNet val images per class")
    a = p.parse_args(argv)
    if a.workers is not None and a.workers < 1:
        p.error(f"--workers must be >= 1, got {a.workers}")
    if a.imagenet and a.preview:
        p.error("--preview is for the toy COCO only")
    for flag, v, low in (("--train", a.train, 1), ("--val", a.val, 1), ("--image-size", a.image_size, 16),
                         ("--per-class", a.per_class, 1), ("--val-per-class", a.val_per_class, 0)):
        if v < low:
            p.error(f"{flag} must be >= {low}, got {v}")
    with report_user_errors(), Outputs(a.overwrite, vars(a), skip=("preview",)) as outputs:
        outputs.check("--preview", a.preview, PREVIEW_KIND)
        _make(a, p)
        if a.preview:
            outputs.check("--preview", a.preview, PREVIEW_KIND)
            print(f"preview -> {write_preview(a.out, a.preview)}")
    return 0


def _make(a: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    """Make (or reuse) the dataset the flags describe; its folder errors are usage errors naming the flag."""
    try:
        if a.imagenet:
            make_toy_imagenet(a.out, ToyImageNet(a.seed, a.per_class, a.val_per_class, a.image_size),
                              force=a.force, workers=a.workers)
        else:
            make_toy_coco(a.out, ToyCoco(a.seed, a.train, a.val, a.image_size), force=a.force, workers=a.workers)
    except FileExistsError as e:
        p.error(f"--out: {e}")
    except ToySizeError as e:
        p.error(f"--train/--val: {e}")


if __name__ == "__main__":
    raise SystemExit(main())
