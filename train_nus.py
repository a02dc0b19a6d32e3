"""Train on NUS-WIDE with missing labels (the paper's NUS-WIDE experiment, one label per image).

    python train_nus.py --loss Hill --data /home/NUS_wide/ \
        --train-dataset ./dataset/nus_train_singlelabel.txt --val-dataset ./dataset/nus_val.txt

Images live under DATA/images/; both lists use the label-list format with 81 classes. Checkpoints store
NUS-WIDE's 81 concept names (src/data/class_names.py), or those of --classes FILE (one per line). The official
spellings --train_dataset and --val_dataset work too, as every multi-word flag's underscore spelling does.
"""
import argparse

from src import cli
from src.data.builders import add_nus_args, nus_datasets
from src.trainer import run_training
from src.training_flags import add_training_args


def get_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description="Multi-label training with missing labels on NUS-WIDE")
    return add_training_args(add_nus_args(parser))


def main(argv=None) -> dict:
    parser = get_parser()
    return run_training(parser, parser.parse_args(argv), nus_datasets)


if __name__ == "__main__":
    main()
