"""Checkpoints are atomic, and a missing, torn, foreign or mismatched file is a clear error."""
import os

import pytest
import torch
from torch import nn

from src.checkpoint import (CheckpointError, load_checkpoint, load_weights, plain, rng_state, save_checkpoint,
                            set_rng_state)
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


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_loading_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": "robust-loss-mlml/1", "x": _RunsCode(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match=r"refused to load .*evil.ckpt: its pickle imports posix.system"):
        load_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_the_old_format_upgrade_never_runs_code_either(tmp_path):
    import numpy as np

    from src.checkpoint import upgrade_checkpoint
    marker = tmp_path / "pwned"
    torch.save({"format": "robust-loss-mlml/1", "rng": {"numpy": np.random.get_state()}, "x": _RunsCode(marker)},
               tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="refused to load .*evil.ckpt"):
        upgrade_checkpoint(tmp_path / "evil.ckpt", tmp_path / "new.ckpt")
    assert not marker.exists() and not (tmp_path / "new.ckpt").exists()


def test_a_last_checkpoint_holds_only_plain_values(tmp_path):
    import random

    import numpy as np
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    path = save_checkpoint({"kind": "last", "rng": rng_state(), "args": plain({"lr": 1e-3, "out": tmp_path})},
                           tmp_path / "last.ckpt")
    want = (random.random(), np.random.rand(), torch.rand(1))
    ckpt = load_checkpoint(path, required=("rng", "args"))  # weights_only=True
    assert ckpt["args"] == {"lr": 1e-3, "out": str(tmp_path)}
    set_rng_state(ckpt["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == want


def test_old_format_gets_the_conversion_command_and_converts(tmp_path):
    import numpy as np

    from src.checkpoint import upgrade_checkpoint
    old = tmp_path / "last.ckpt"
    np.random.seed(7)
    torch.save({"format": "robust-loss-mlml/1", "kind": "last", "rng": {"numpy": np.random.get_state()},
                "history": [{"map": np.float64(1.5)}]}, old)
    want = np.random.rand()
    with pytest.raises(CheckpointError, match=r"old format.*python -m src.tools.upgrade_checkpoint .*last.ckpt NEW"):
        load_checkpoint(old)
    new = upgrade_checkpoint(old, tmp_path / "new.ckpt")
    ckpt = load_checkpoint(new)
    assert ckpt["history"] == [{"map": 1.5}] and type(ckpt["history"][0]["map"]) is float
    np.random.set_state(("MT19937", ckpt["rng"]["numpy"]["keys"].numpy().astype(np.uint32),
                         ckpt["rng"]["numpy"]["pos"], 0, 0.0))
    assert np.random.rand() == want


def test_required_keys_are_named(tmp_path):
    path = save_checkpoint({"kind": "last"}, tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match="last.ckpt is incomplete: it lacks model, epoch"):
        load_checkpoint(path, required=("kind", "model", "epoch"))
