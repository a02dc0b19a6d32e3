"""Train on MS-COCO 2014 with missing labels (the paper's COCO experiments).

    python train.py --loss Hill --data /home/MSCOCO_2014/ --dataset ./dataset/coco_train_0.4left.txt

--data holds train2014/, val2014/ and annotations/instances_val2014.json; --dataset is the training
label list. Evaluation is on val2014 (or on a held-out part of the list with --val-split).
"""
import argparse

from src import cli
from src.data.data_flags import add_coco_args, check_coco_data
from src.errors import report_user_errors
from src.training_flags import add_training_args


def get_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description="Multi-label training with missing labels on MS-COCO 2014")
    return add_training_args(add_coco_args(parser))


def main(argv=None) -> dict:
    parser = get_parser()
    args = parser.parse_args(argv)  # -h and flag errors answer before torch loads
    with report_user_errors():
        check_coco_data(args)  # the data first: within seconds, before the weights are looked for
    from src.data.builders import coco_datasets
    from src.trainer import run_training
    return run_training(parser, args, coco_datasets)


if __name__ == "__main__":
    main()
