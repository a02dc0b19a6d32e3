"""Train on MS-COCO 2014 with missing labels (the paper's COCO experiments).

    python train.py --loss Hill --data /home/MSCOCO_2014/ --dataset ./dataset/coco_train_0.4left.txt

--data holds train2014/, val2014/ and annotations/instances_val2014.json; --dataset is the training
label list. Evaluation is on val2014 (or on a held-out part of the list with --val-split).
"""
import argparse
from pathlib import Path

from src.data.datasets import coco_dataset, coco_num_classes, label_list_dataset
from src.trainer import Datasets, add_training_args, run_training


def build_datasets(args, train_tf, val_tf, raw: bool) -> Datasets:
    data = Path(args.data)
    ann = data / "annotations" / "instances_val2014.json"
    needed = [data / "train2014", data / "val2014", ann]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise SystemExit(f"--data {data}: missing {', '.join(missing)} (expected the COCO 2014 layout)")
    if not Path(args.dataset).is_file():
        raise SystemExit(f"--dataset {args.dataset}: no such label list (see dataset/README.md to make it)")
    num_classes = coco_num_classes(ann)
    train = label_list_dataset(data / "train2014", args.dataset, num_classes, transform=train_tf, raw=raw,
                               skip_bad_images=args.skip_bad_images)
    test = coco_dataset(data / "val2014", ann, transform=val_tf, raw=raw, skip_bad_images=args.skip_bad_images)
    return Datasets(train=train, test=test, num_classes=num_classes, train_list=args.dataset)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Multi-label training with missing labels on MS-COCO 2014")
    parser.add_argument("--dataset", default="./dataset/coco_train_0.4left.txt", help="training label list")
    parser.add_argument("--data", metavar="DIR", default="/home/MSCOCO_2014/", help="COCO 2014 root")
    return add_training_args(parser)


def main(argv=None) -> dict:
    parser = get_parser()
    return run_training(parser, parser.parse_args(argv), build_datasets)


if __name__ == "__main__":
    main()
