"""Train on NUS-WIDE with missing labels (the paper's NUS-WIDE experiment, one label per image).

    python train_nus.py --loss Hill --data /home/NUS_wide/ \
        --train_dataset ./dataset/nus_train_singlelabel.txt --val_dataset ./dataset/nus_val.txt

Images live under DATA/images/; both lists use the label-list format with 81 classes. Checkpoints store
NUS-WIDE's 81 concept names (src/data/class_names.py), or those of --classes FILE (one per line).
"""
import argparse
from pathlib import Path

from src import cli
from src.data.class_names import NUS_WIDE_CLASSES, read_classes_flag
from src.data.datasets import NUS_NUM_CLASSES, label_list_dataset
from src.errors import UserError
from src.trainer import Datasets, add_training_args, run_training


def build_datasets(args, train_tf, val_tf, raw: bool) -> Datasets:
    images = Path(args.data) / "images"
    if not images.is_dir():
        raise UserError(f"--data {args.data}: missing {images} (expected NUS-WIDE images under DATA/images/)")
    for flag, path in (("--train_dataset", args.train_dataset), ("--val_dataset", args.val_dataset)):
        if not Path(path).is_file():
            raise UserError(f"{flag} {path}: no such label list (see dataset/README.md)")
    names = read_classes_flag(args.classes, NUS_NUM_CLASSES) or list(NUS_WIDE_CLASSES)
    kw = dict(raw=raw, skip_bad_images=args.skip_bad_images, class_names=names)
    train = label_list_dataset(images, args.train_dataset, NUS_NUM_CLASSES, transform=train_tf, **kw)
    test = label_list_dataset(images, args.val_dataset, NUS_NUM_CLASSES, transform=val_tf, **kw)
    return Datasets(train=train, test=test, num_classes=NUS_NUM_CLASSES, train_list=args.train_dataset,
                    class_names=names)





def get_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description="Multi-label training with missing labels on NUS-WIDE")
    parser.add_argument("--train_dataset", default="./dataset/nus_train_singlelabel.txt", help="training list")
    parser.add_argument("--val_dataset", default="./dataset/nus_val.txt", help="validation (test) list")
    parser.add_argument("--data", metavar="DIR", default="/home/NUS_wide/", help="NUS-WIDE root (holds images/)")
    parser.add_argument("--classes", default=None, metavar="FILE",
                        help="class names, one per line in class-index order (default: NUS-WIDE's 81 concepts)")
    return add_training_args(parser)


def main(argv=None) -> dict:
    parser = get_parser()
    return run_training(parser, parser.parse_args(argv), build_datasets)


if __name__ == "__main__":
    main()
