"""The run planning shared by the demo and the grid (the end-to-end runs are in test_demo.py / test_reproduce.py)."""
import argparse
import json

import pytest

import train
from src.tools import experiments as E


def test_every_flag_a_run_passes_is_a_documented_train_py_flag():
    recipe = E.Recipe(max_steps_per_epoch=2)
    passed = [w for w in recipe.flags() if w.startswith("-")] + ["--oracle-list", "--pretrained", "--resume"]
    documented = {f: a.help for a in train.get_parser()._actions for f in a.option_strings}
    assert "--max-steps-per-epoch" in passed
    for flag in passed:
        assert documented.get(flag) not in (None, argparse.SUPPRESS), flag


def test_a_run_is_complete_with_every_epoch_and_best_ckpt(tmp_path):
    assert not E.run_is_complete(tmp_path / "none", 2)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "map": 1.0, "map_ema": 1.0}) + "\n"
                                                    for e in range(2)))
    assert not E.run_is_complete(tmp_path, 2)  # no best.ckpt yet
    (tmp_path / "best.ckpt").write_bytes(b"")
    assert E.run_is_complete(tmp_path, 2) and not E.run_is_complete(tmp_path, 3)


def test_a_folder_made_by_other_flags_is_refused(tmp_path):
    (tmp_path / "command.json").write_text(json.dumps(["--loss", "Hill"]) + "\n")
    E._check_same_run(tmp_path, ["--loss", "Hill"])
    E._check_same_run(tmp_path, ["--loss", "Hill", "--pretrained", "none"])  # the old default, now written out
    with pytest.raises(SystemExit, match="other flags"):
        E._check_same_run(tmp_path, ["--loss", "SPLC"])


def test_size_flags_make_the_recipe_and_reject_bad_sizes():
    parser = argparse.ArgumentParser()
    E.add_size_args(parser)
    recipe = E.recipe_from_args(parser.parse_args(["--epochs", "3", "--max-steps-per-epoch", "5", "-j", "0"]))
    assert (recipe.epochs, recipe.max_steps_per_epoch, recipe.workers) == (3, 5, 0)
    assert recipe.flags()[recipe.flags().index("--stop-epoch") + 1] == "2"  # the whole schedule is trained
    with pytest.raises(SystemExit, match="--train-images must be positive"):
        E.recipe_from_args(parser.parse_args(["--train-images", "0"]))
    assert E.parse_losses("bce,hill") == ["BCE", "Hill"]
    with pytest.raises(argparse.ArgumentTypeError):
        E.parse_losses("nope")
