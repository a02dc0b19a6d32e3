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


def test_a_bit_flipped_checkpoint_is_refused_naming_it(tmp_path, flip_a_bit):
    path = save_checkpoint({"kind": "best", "model": {"w": torch.ones(64)}}, tmp_path / "best.ckpt")
    flip_a_bit(path, at=40)
    assert not torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.ones(64))  # torch loads it
    with pytest.raises(CheckpointError, match=r"best.ckpt is corrupt: its record .*data/0 fails its CRC-32"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [os.urandom(4096), b'{"model": [1, 2, 3]}\n', b"\x80" + os.urandom(300)])
def test_a_file_that_is_no_checkpoint_is_named_without_unsafe_advice(tmp_path, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert str(path) in message and "weights_only=False" not in message and "weights_only` set to `False" \
        not in message and "\n" not in message


@pytest.mark.parametrize("key", ["model", "ema"])
def test_non_finite_weights_are_refused_naming_the_file_and_tensor(tmp_path, key):
    bad = torch.ones(3)
    bad[1] = float("nan")
    path = save_checkpoint({"kind": "last", "model": {"w": torch.ones(3)}, "ema": {"w": torch.ones(3)},
                            key: {"fc.weight": bad, "steps": torch.tensor(3)}}, tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match=r"last.ckpt.* holds non-finite weights \(NaN or inf in fc.weight\)"):
        load_checkpoint(path)


def test_resuming_a_best_ckpt_says_to_resume_last_ckpt(tmp_path):
    path = save_checkpoint({"kind": "best", "model": {"w": torch.ones(3)}}, tmp_path / "best.ckpt")
    with pytest.raises(CheckpointError, match=r"best.ckpt is a best.ckpt: .*no optimizer.*resume from last.ckpt"):
        load_checkpoint(path, required=("optimizer", "ema"), kind="last")


def test_a_legacy_format_checkpoint_loads_only_with_a_warning_naming_it(tmp_path, capsys):
    from src.checkpoint import load_file

    zipped, legacy = tmp_path / "zip.pth", tmp_path / "legacy.pth"
    weights = {"w": torch.arange(4.0)}
    torch.save(weights, zipped)
    torch.save(weights, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_file(zipped)["w"], weights["w"]) and capsys.readouterr().err == ""
    data = bytearray(legacy.read_bytes())
    data[-8] ^= 0x40  # a flipped bit in the last tensor bytes: nothing in the file can tell
    legacy.write_bytes(bytes(data))
    loaded = load_file(legacy)
    assert not torch.equal(loaded["w"], weights["w"])  # it loads, changed ...
    err = capsys.readouterr().err  # ... but never silently
    assert f"warning: {legacy} is in torch's legacy (non-zip) format, which carries no integrity check" in err


def test_upgrade_never_writes_onto_old_or_an_existing_file(tmp_path, capsys):
    from src.tools import upgrade_checkpoint as tool

    old = save_checkpoint({"kind": "last"}, tmp_path / "last.ckpt")
    before = old.read_bytes()
    other = tmp_path / "notes.txt"
    other.write_text("keep\n")
    for new, extra, message in ((old, ["--overwrite"], "is one of the inputs"), (other, [], "exists and is not")):
        with pytest.raises(SystemExit) as e:
            tool.main([str(old), str(new), *extra])
        assert e.value.code == 2 and f"NEW {new} {message}" in capsys.readouterr().err
    assert old.read_bytes() == before and other.read_text() == "keep\n"
