"""Train on NUS-WIDE, or any folder of images with a training and a test label list, with missing labels.

    python train_nus.py --loss Hill --data /home/NUS_wide/ \
        --train-dataset ./dataset/nus_train_singlelabel.txt --val-dataset ./dataset/nus_val.txt

Images live under DATA/images/ (or DATA itself when it has no images/ folder); both lists use the label-list
format. The classes: NUS-WIDE's 81 concepts (src/data/class_names.py) by default, or those of --classes FILE (one
name per line; their count is the class count), or --num-classes N unnamed ones. Checkpoints store the names.
Your own data, Pascal VOC and CUB: docs/data.md, "Training on your own data". The official spellings
--train_dataset and --val_dataset work too, as every multi-word flag's underscore spelling does.
"""
import argparse

from src import cli
from src.data.data_flags import add_nus_args, check_nus_data
from src.errors import report_user_errors
from src.training_flags import add_training_args


def get_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description="Multi-label training with missing labels on NUS-WIDE or your own label lists")
    return add_training_args(add_nus_args(parser))


def main(argv=None) -> dict:
    parser = get_parser()
    args = parser.parse_args(argv)  # -h and flag errors answer before torch loads
    with report_user_errors():
        check_nus_data(args)  # the data first: within seconds, before the weights are looked for
    from src.data.builders import nus_datasets
    from src.trainer import run_training
    return run_training(parser, args, nus_datasets)


if __name__ == "__main__":
    main()
