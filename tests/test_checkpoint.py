"""Checkpoints are atomic, and a missing, torn, foreign or mismatched file is a clear error."""
import os

import pytest
import torch
from torch import nn

from src.checkpoint import CheckpointError, load_checkpoint, load_weights, rng_state, save_checkpoint, set_rng_state
from src.io_utils import atomic_write


def test_round_trip_and_format_tag(tmp_path):
    path = save_checkpoint({"kind": "last", "x": torch.arange(3)}, tmp_path / "a.ckpt")
    ckpt = load_checkpoint(path)
    assert ckpt["kind"] == "last" and torch.equal(ckpt["x"], torch.arange(3))
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_missing_torn_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    good = save_checkpoint({"kind": "last", "w": torch.randn(100, 100)}, tmp_path / "good.ckpt")
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*torn.ckpt"):
        load_checkpoint(torn)
    foreign = tmp_path / "sd.pth"
    torch.save(nn.Linear(2, 2).state_dict(), foreign)
    with pytest.raises(CheckpointError, match="not a checkpoint written by this project"):
        load_checkpoint(foreign)


def test_mismatched_weights_name_the_file():
    with pytest.raises(CheckpointError, match="x.ckpt does not match the model"):
        load_weights(nn.Linear(2, 3), nn.Linear(2, 2).state_dict(), "x.ckpt")


def test_failed_write_leaves_the_old_file(tmp_path):
    path = save_checkpoint({"kind": "last", "v": 1}, tmp_path / "last.ckpt")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert load_checkpoint(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_rng_state_round_trip():
    state = rng_state()
    a = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), a)
