"""What a user sees while training and evaluating (issue 35): rates below 1 img/s, the step's own lr, the CPU
estimate, a zero-size terminal, and the mAP warning said once."""
from __future__ import annotations

import fcntl
import os
import struct
import termios
import warnings

import pytest
import torch
from torch import nn

from src.data.prefetch import Prefetcher
from src.engine import (CPU_WARN_RUN_S, Compute, Learner, Progress, cpu_estimate_line, format_duration, format_rate,
                        map_said_once, to_device, train_one_epoch, usable_terminal)
from src.distributed import DistInfo

CPU = Compute(torch.device("cpu"), None, DistInfo())


class _EMA:
    def update(self, model):
        pass


def test_rates_below_one_image_a_second_are_not_zero():
    assert format_rate(412.3) == "412 img/s" and format_rate(3.46) == "3.5 img/s"
    assert format_rate(0.42) == "0.42 img/s" and format_rate(0.004) == "0.004 img/s"


def test_durations_read_in_the_unit_that_fits():
    assert format_duration(40 * 60) == "40 minutes" and format_duration(5 * 3600) == "5.0 hours"
    assert format_duration(3 * 86400) == "3.0 days" and format_duration(30 * 86400) == "4.3 weeks"


def test_the_cpu_estimate_names_the_epoch_and_run_times():
    """The paper's recipe on a 2-core CPU: 642 steps of batch 128 at ~60 s each, 31 epochs: hours an epoch, weeks
    in all. A quick try (a few seconds in all) gets no line; the limit is the run's estimated length."""
    line = cpu_estimate_line(60.0, 642, 31)
    assert line.startswith("warning: this runs on the CPU: about 10.7 hours an epoch (642 steps at 60.0 s)")
    assert "2.0 weeks for the 31 epochs" in line and "--model-name resnet10t" in line
    assert cpu_estimate_line(0.05, 100, 3) is None
    just_under = (CPU_WARN_RUN_S - 1) / (10 * 3)
    assert cpu_estimate_line(just_under, 10, 3) is None and cpu_estimate_line(just_under * 1.01, 10, 3)


def _learner(lr_lambda):
    torch.manual_seed(0)
    model = nn.Linear(5, 4)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    crit = lambda lg, t, epoch=None: nn.functional.binary_cross_entropy_with_logits(lg, t, reduction="sum")  # noqa
    return Learner(model, crit, opt, sched, torch.amp.GradScaler("cpu", enabled=False), _EMA(), torch.zeros(12, 4),
                   CPU)


def _batches(n=4, b=3):
    x = torch.randn(n * b, 5)
    return Prefetcher([(x[i * b:(i + 1) * b], None, torch.arange(i * b, (i + 1) * b), 0) for i in range(n)],
                      to_device(torch.device("cpu")), "cpu")


def test_the_step_line_shows_the_lr_the_step_used(capsys):
    """The lr of step s is lambda(s); it was read after the scheduler stepped, so it showed lambda(s + 1)."""
    learner = _learner(lambda s: 0.5 ** s)
    train_one_epoch(learner, _batches(), 0, Progress(last_epoch=0, print_freq=1, interval_s=3600, terminal=False))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[3] for line in lines] == [f"lr {0.5 ** s:.1e}" for s in range(4)]


def test_the_cpu_estimate_is_printed_once_after_the_first_steps(capsys, monkeypatch):
    """Steps made to look slow (an hour each): one warning on stderr after the first steps, not one per step."""
    clock = iter(range(0, 10 ** 9, 3600))
    monkeypatch.setattr("src.engine.time.perf_counter", lambda: float(next(clock)))
    progress = Progress(last_epoch=5, print_freq=100, interval_s=1e12, terminal=False)
    for epoch in (0, 1):
        train_one_epoch(_learner(lambda s: 1.0), _batches(), epoch, progress)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: this runs on the CPU")]
    assert len(err) == 1 and "steps at" in err[0]


def test_a_zero_size_terminal_gets_lines_not_a_bar():
    master, slave = os.openpty()
    try:
        with os.fdopen(os.dup(slave), "w") as stream:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
            assert stream.isatty() and not usable_terminal(stream)
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            assert usable_terminal(stream)
    finally:
        os.close(master)
        os.close(slave)


def test_the_map_warning_is_one_line_said_once(capsys):
    """Every catch_warnings (each image decode enters one) reset Python's once-per-place rule: the warning and
    its source line came back at every evaluation of a small validation set."""
    targets = torch.tensor([[1, 0, 0], [0, 0, 1], [1, 0, 1]], dtype=torch.float32)
    scores = torch.rand(3, 3)
    first = map_said_once(targets, scores)
    with warnings.catch_warnings():
        pass
    assert map_said_once(targets, scores) == pytest.approx(first)
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: mAP: 1 of 3 classes have no positive target and are left out of the mean: "
                   "class indices [1]"]


def test_the_epoch_line_shows_a_slow_rate():
    from src.trainer import _epoch_line
    row = {"epoch": 0, "train_loss": 1.0, "lr": 1e-4, "map": 10.0, "map_ema": 9.0, "cf1": 1.0, "of1": 2.0,
           "seconds": 300.0, "images_per_second": 0.43}
    assert _epoch_line(row, {"map": 10.0}, 3).endswith("300.0s 0.43 img/s")
