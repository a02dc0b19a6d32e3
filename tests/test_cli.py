"""The official README's commands parse unchanged; both spellings of every multi-word flag; the torchrun hint."""
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

import infer
import train
import train_nus
import validate
from src.cli import SPELLING_NOTE, ArgumentParser, other_spelling, torchrun_hint

ROOT = Path(__file__).resolve().parents[1]

# The official robust-loss-mlml README's command lines (placeholders filled in), and its train_nus.py flags.
OFFICIAL_TRAIN = [
    "python train.py --loss Hill --data '/home/MSCOCO_2014/' --dataset './dataset/coco_train_0.4left.txt'",
    "python train.py --loss SPLC --data /home/MSCOCO_2014/ --dataset ./dataset/coco_train_0.75left.txt",
]
OFFICIAL_VALIDATE = "python validate.py --model_path /home/model/coco_75_hill.tar --data /home/MSCOCO_2014/"
OFFICIAL_NUS = ("python train_nus.py --loss Hill --data /home/NUS_wide/ "
                "--train_dataset ./dataset/nus_train_singlelabel.txt --val_dataset ./dataset/nus_val.txt")
PARSERS = {"train.py": train.get_parser, "train_nus.py": train_nus.get_parser, "validate.py": validate.get_parser,
           "infer.py": infer.get_parser}


def _argv(line: str) -> list[str]:
    return shlex.split(line)[2:]  # drop "python script.py"


def test_other_spelling():
    assert other_spelling("--model-path") == "--model_path"
    assert other_spelling("--train_dataset") == "--train-dataset"
    assert other_spelling("--data") is None and other_spelling("-b") is None and other_spelling("--a-b_c") is None


@pytest.mark.parametrize("line", OFFICIAL_TRAIN)
def test_official_train_commands_parse_unchanged(line):
    args = train.get_parser().parse_args(_argv(line))
    assert args.data == "/home/MSCOCO_2014/" and args.dataset.startswith("./dataset/coco_train_")
    assert args.loss in ("Hill", "SPLC") and args.model_name == "resnet50" and args.pretrained == "imagenet"


def test_official_validate_and_nus_commands_parse_unchanged():
    args = validate.get_parser().parse_args(_argv(OFFICIAL_VALIDATE))
    assert args.model_path == "/home/model/coco_75_hill.tar" and args.data == "/home/MSCOCO_2014/"
    nus = train_nus.get_parser().parse_args(_argv(OFFICIAL_NUS))
    assert nus.train_dataset == "./dataset/nus_train_singlelabel.txt" and nus.val_dataset == "./dataset/nus_val.txt"
    dashed = train_nus.get_parser().parse_args(["--train-dataset", "a.txt", "--val-dataset=b.txt"])
    assert (dashed.train_dataset, dashed.val_dataset) == ("a.txt", "b.txt")


@pytest.mark.parametrize("script", PARSERS)
def test_every_multi_word_flag_takes_both_spellings(script):
    parser = PARSERS[script]()
    flags = [f for a in parser._actions for f in a.option_strings if other_spelling(f)]
    assert len(flags) >= 3
    for flag in flags:
        other = other_spelling(flag)
        assert parser._respell([other, "x", f"{other}=y"]) == [flag, "x", f"{flag}=y"], flag
    # help lists one spelling per flag and says the other works
    text = "".join(parser.format_help().split())  # without argparse's line wrapping
    note = "".join(SPELLING_NOTE.split())
    assert note in text
    parser.epilog = None
    options = parser.format_help()
    assert not [other_spelling(f) for f in flags if other_spelling(f) + " " in options]


def test_the_scripts_declare_one_spelling_the_dash():
    """train.py, train_nus.py, validate.py and infer.py show every multi-word flag as --a-b in their -h."""
    for script, get_parser in PARSERS.items():
        underscored = [f for a in get_parser()._actions for f in a.option_strings if "_" in f]
        assert not underscored, script
    assert "--val-dataset" in train_nus.get_parser().format_help()


def test_underscore_flags_with_values_reach_the_same_destination():
    args = train.get_parser().parse_args(["--model_name", "resnet101", "--batch_size=64", "--image_size", "224",
                                          "--print_freq", "10", "--num_classes", "80", "--stop_epoch", "5",
                                          "--pretrained", "none", "--oracle_list", "full.txt"])
    assert (args.model_name, args.batch_size, args.image_size, args.print_freq) == ("resnet101", 64, 224, 10)
    assert (args.num_classes, args.stop_epoch, args.oracle_list) == (80, 5, "full.txt")


def test_words_after_double_dash_and_unknown_flags_are_left_alone(capsys):
    parser = ArgumentParser(prog="x")
    parser.add_argument("--model-path")
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args(["--model_path", "m", "--", "--model_path"])
    assert args.model_path == "m" and args.rest == ["--model_path"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--model_pth", "m"])
    assert "unrecognized arguments: --model_pth" in capsys.readouterr().err


def test_torchrun_hint_is_the_exact_command():
    line = torchrun_hint(["train.py", "--loss", "Hill", "--data", "/home/MS COCO/"], 4)
    assert "4 GPUs" in line
    assert line.splitlines()[-1].strip() == \
        "torchrun --standalone --nproc_per_node=4 train.py --loss Hill --data '/home/MS COCO/'"


def _offline_env(tmp_path) -> dict:
    return {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
            "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "t")}


def test_the_official_command_offline_names_the_data_first(tmp_path):
    """The paper's command, verbatim, on a machine with no network, no cached weights and no /home/MSCOCO_2014:
    the data error comes first (one line naming --data, exit 2, no traceback), so one run shows the first fix."""
    proc = subprocess.run([sys.executable, *shlex.split(OFFICIAL_TRAIN[0])[1:]], cwd=ROOT, env=_offline_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: --data /home/MSCOCO_2014") and "resnet50.tv_in1k" not in proc.stderr


def test_the_official_recipe_offline_explains_the_weights(tmp_path, toy_coco):
    """With the data in place, the recipe offline with no cached weights: one paragraph naming the weights and
    --pretrained none, exit 2, no traceback, within seconds of start (most of it Python imports)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py", "--loss", "Hill", "--data", str(toy_coco),
                           "--dataset", str(toy_coco / "coco_train_0.4left.txt")], cwd=ROOT,
                          env=_offline_env(tmp_path), capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "\n\n" not in proc.stderr.strip()
    assert "resnet50.tv_in1k" in proc.stderr and "--pretrained none" in proc.stderr
    assert elapsed < 60
