"""The run planning shared by the demo and the grid (the end-to-end runs are in test_demo.py / test_reproduce.py)."""
import argparse
import json
from pathlib import Path

import pytest

import train
from src.experiments import experiments as E


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


def test_stop_epoch_and_freeze_backbone_reach_train_py_and_completeness_counts_epochs_run():
    parser = argparse.ArgumentParser()
    E.add_size_args(parser)
    a = parser.parse_args(["--epochs", "8", "--stop-epoch", "2", "--freeze-backbone", "--ema-decay", "0.5"])
    recipe = E.recipe_from_args(a)
    flags = recipe.flags()
    assert flags[flags.index("--epochs") + 1] == "8" and flags[flags.index("--stop-epoch") + 1] == "2"
    assert "--freeze-backbone" in flags and flags[flags.index("--ema-decay") + 1] == "0.5"
    assert recipe.epochs_run == 3
    documented = {f for act in train.get_parser()._actions for f in act.option_strings}
    assert {w for w in flags if w.startswith("-")} <= documented
    assert "--freeze-backbone" not in E.recipe_from_args(parser.parse_args([])).flags()
    with pytest.raises(SystemExit, match="--stop-epoch 8 must lie in"):
        E.recipe_from_args(parser.parse_args(["--epochs", "8", "--stop-epoch", "8"]))


def _fake_pretraining(monkeypatch, tmp_path):
    """pretrain() with the toy ImageNet and the training replaced: returns the calls it made."""
    calls = []

    def fake_imagenet(out, spec, **kw):
        calls.append(("imagenet", Path(out).name, spec.seed))
        return Path(out)

    def fake_train(argv, run_dir, epochs, parser, build):
        calls.append(("train", run_dir.name, argv, epochs))

    monkeypatch.setattr(E, "make_toy_imagenet", fake_imagenet)
    monkeypatch.setattr(E, "toy_imagenet_lists", lambda root: (root / "train.txt", root / "val.txt"))
    monkeypatch.setattr(E, "_train", fake_train)
    return calls


def test_pretrain_seed_makes_an_independent_pretraining_cached_apart(monkeypatch, tmp_path):
    calls = _fake_pretraining(monkeypatch, tmp_path)
    recipe = E.Recipe(epochs=6, stop_epoch=1, freeze_backbone=True)
    E.pretrain(tmp_path, recipe, 4, seed=0)
    E.pretrain(tmp_path, recipe, 4, seed=3)
    (_, data0, s0), (_, run0, argv0, ep0), (_, data3, s3), (_, run3, argv3, ep3) = calls
    assert (data0, s0, data3, s3) == ("toy_imagenet-200-48px", 0, "toy_imagenet-200-48px-seed3", 3)
    assert run0 != run3 and "-seed3-" in run3 and "seed" not in run0
    assert argv0[argv0.index("--seed") + 1] == "0" and argv3[argv3.index("--seed") + 1] == "3"
    # the pretraining trains its whole schedule, every layer, whatever the fine-tuning recipe says
    assert ep0 == 4 and argv0[argv0.index("--stop-epoch") + 1] == "3" and "--freeze-backbone" not in argv0
    # seed 0's cache key is the one made before --stop-epoch / --freeze-backbone existed
    E.pretrain(tmp_path, E.Recipe(epochs=6), 4, seed=0)
    assert calls[-1][1] == run0
