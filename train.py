"""Train on MS-COCO 2014 with missing labels (the paper's COCO experiments).

    python train.py --loss Hill --data /home/MSCOCO_2014/ --dataset ./dataset/coco_train_0.4left.txt

--data holds train2014/, val2014/ and annotations/instances_val2014.json; --dataset is the training
label list. Evaluation is on val2014 (or on a held-out part of the list with --val-split).
"""
import argparse
from pathlib import Path

from src import cli
from src.data.datasets import coco_dataset, label_list_dataset
from src.errors import UserError
from src.trainer import Datasets, add_training_args, run_training


def build_datasets(args, train_tf, val_tf, raw: bool) -> Datasets:
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
    train = label_list_dataset(data / "train2014", args.dataset, test.num_classes, transform=train_tf, raw=raw,
                               skip_bad_images=args.skip_bad_images)
    return Datasets(train=train, test=test, num_classes=test.num_classes, train_list=args.dataset,
                    class_names=test.class_names)


def get_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description="Multi-label training with missing labels on MS-COCO 2014")
    parser.add_argument("--dataset", default="./dataset/coco_train_0.4left.txt", help="training label list")
    parser.add_argument("--data", metavar="DIR", default="/home/MSCOCO_2014/", help="COCO 2014 root")
    return add_training_args(parser)


def main(argv=None) -> dict:
    parser = get_parser()
    return run_training(parser, parser.parse_args(argv), build_datasets)


if __name__ == "__main__":
    main()
