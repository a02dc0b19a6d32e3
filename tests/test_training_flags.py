"""src/training_flags.py: the official defaults, the loss hyperparameter flags, and the checks across flags."""
import argparse
from pathlib import Path

import pytest

from src.training_flags import (FLAG_ROLES, FLAG_TABLE_END, FLAG_TABLE_START, LOSS_FLAGS, RUN_DEFINING,
                                RUN_DEFINING_BEFORE, add_training_args, check_args, flag_table, loss_kwargs)


def parse(*argv):
    p = add_training_args(argparse.ArgumentParser(prog="t"))
    return p, p.parse_args(["--pretrained", "none", *argv])


def test_official_defaults():
    p, a = parse()
    check_args(p, a)
    assert (a.lr, a.model_name, a.image_size, a.batch_size, a.epochs, a.stop_epoch, a.ema_decay, a.loss) == \
        (1e-4, "resnet50", 448, 128, 80, 30, 0.9997, "Hill")


def test_loss_flags_reach_the_loss_only_when_set():
    _, a = parse("--loss", "splc", "--tau", "0.65")
    assert a.loss == "SPLC" and loss_kwargs(a) == {"tau": 0.65}
    assert set(LOSS_FLAGS) <= set(RUN_DEFINING)


@pytest.mark.parametrize("argv, message", [
    (["--stop-epoch", "80"], "--stop-epoch 80 must lie in"),
    (["--val-split", "1"], "--val-split 1.0 must lie in"),
    (["-b", "0"], "--batch-size must be positive"),
    (["--loss", "Hill", "--tau", "0.5"], "--loss Hill: "),
])
def test_check_args_names_the_flags(argv, message, capsys):
    p, a = parse(*argv)
    with pytest.raises(SystemExit):
        check_args(p, a)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("epochs, stop", [(1, 0), (3, 2), (30, 29), (31, 30), (80, 30)])
def test_stop_epoch_unset_is_the_official_30_or_the_whole_shorter_schedule(epochs, stop):
    """`--epochs 3` alone was an error (--stop-epoch 30 must lie in [0, 3))."""
    p, a = parse("--epochs", str(epochs))
    assert a.stop_epoch is None
    check_args(p, a)
    assert a.stop_epoch == stop


def test_stop_epoch_given_is_kept_and_checked(capsys):
    p, a = parse("--epochs", "3", "--stop-epoch", "1")
    check_args(p, a)
    assert a.stop_epoch == 1
    for argv in (["--epochs", "3", "--stop-epoch", "3"], ["--epochs", "0"]):
        p, a = parse(*argv)
        with pytest.raises(SystemExit):
            check_args(p, a)
    assert "--epochs 0 must be positive" in capsys.readouterr().err


@pytest.mark.parametrize("typo, match", [("hil", "Hill"), ("spcl", "SPLC"), ("bce_ls", "BCE-LS"), ("llr", "LL-R")])
def test_an_unknown_loss_gets_its_close_matches(capsys, typo, match):
    with pytest.raises(SystemExit):
        parse("--loss", typo)
    err = capsys.readouterr().err
    assert f"did you mean {match}" in err and "known losses:" in err


def test_help_says_the_stop_epoch_default():
    text = add_training_args(argparse.ArgumentParser(prog="t")).format_help()
    assert "whole schedule" in " ".join(text.split())


def test_freeze_backbone_is_off_by_default_and_run_defining():
    _, a = parse()
    _, frozen = parse("--freeze-backbone")
    assert a.freeze_backbone is False and frozen.freeze_backbone is True
    assert "freeze_backbone" in RUN_DEFINING
    # a run written before a flag existed counts as having had the flag's default
    assert set(RUN_DEFINING_BEFORE) <= set(RUN_DEFINING)
    assert all(getattr(a, k) == v for k, v in RUN_DEFINING_BEFORE.items())


def test_every_flag_of_both_training_scripts_says_what_a_resume_may_do():
    import train
    import train_nus

    dests = {a.dest for parser in (train.get_parser(), train_nus.get_parser()) for a in parser._actions} - {"help"}
    assert dests == set(FLAG_ROLES)  # every flag classified, none classified that does not exist
    assert {"pretrained", "max_steps_per_epoch"} <= set(RUN_DEFINING)


def test_the_table_in_docs_training_md_is_the_one_in_code():
    text = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    start = text.index(FLAG_TABLE_START) + len(FLAG_TABLE_START) + 1
    assert text[start:text.index(FLAG_TABLE_END)] == flag_table(), \
        "regenerate the table: python -c 'from src.training_flags import flag_table; print(flag_table())'"
