"""src/training_flags.py: the official defaults, the loss hyperparameter flags, and the checks across flags."""
import argparse

import pytest

from src.training_flags import LOSS_FLAGS, RUN_DEFINING, RUN_DEFINING_BEFORE, add_training_args, check_args, loss_kwargs


def parse(*argv):
    p = add_training_args(argparse.ArgumentParser(prog="t"))
    return p, p.parse_args(["--pretrained", "none", *argv])


def test_official_defaults():
    _, a = parse()
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


def test_freeze_backbone_is_off_by_default_and_run_defining():
    _, a = parse()
    _, frozen = parse("--freeze-backbone")
    assert a.freeze_backbone is False and frozen.freeze_backbone is True
    assert "freeze_backbone" in RUN_DEFINING
    # a run written before a flag existed counts as having had the flag's default
    assert set(RUN_DEFINING_BEFORE) <= set(RUN_DEFINING)
    assert all(getattr(a, k) == v for k, v in RUN_DEFINING_BEFORE.items())
