"""src/run_folder.py on its own, without training: which checkpoint a resume takes, when a run may write into a
folder, and the checks that a checkpoint belongs to this run and its data. tests/test_train.py and
tests/test_faults.py run the same checks through train.py."""
import argparse
import hashlib
import json

import pytest
import torch

import train
from src.checkpoint import CheckpointError, best_checkpoint, load_checkpoint, save_checkpoint
from src.data.labels import LabelEntry, list_fingerprint
from src.distributed import DistInfo
from src.errors import UserError
from src.run_folder import (check_output_folder, check_same_data, check_same_run, checkpoint_to_resume,
                            remove_if_unused, settle_record)
from src.training_flags import FLAG_ROLES, PRETRAINED_SHA256, RUN, RUN_DEFINING, check_args


def run_args(**changes):
    """train.py's flags at their defaults (``pretrained_sha256`` as check_args records it), with ``changes``."""
    values = vars(train.get_parser().parse_args([])) | {PRETRAINED_SHA256: None} | changes
    return argparse.Namespace(**values)


def test_checkpoint_to_resume(tmp_path):
    assert checkpoint_to_resume(None, tmp_path) is None
    assert checkpoint_to_resume("auto", tmp_path) is None  # nothing to resume: a fresh start
    (tmp_path / "last.ckpt").write_bytes(b"x")
    assert checkpoint_to_resume("auto", tmp_path) == tmp_path / "last.ckpt"
    assert checkpoint_to_resume("other/last.ckpt", tmp_path).as_posix() == "other/last.ckpt"


def test_a_fresh_start_needs_a_folder_without_a_run(tmp_path):
    check_output_folder(run_args(), tmp_path, None)  # empty: fine
    (tmp_path / "metrics.jsonl").write_text("")
    check_output_folder(run_args(), tmp_path, None)  # an empty metrics file is no run yet
    (tmp_path / "best.ckpt").write_bytes(b"x")
    with pytest.raises(UserError, match="already holds a run .*--resume auto"):
        check_output_folder(run_args(), tmp_path, None)


def test_auto_resume_after_a_first_epoch_kill_must_be_the_same_run(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")  # killed before its first epoch ended: no row yet
    (tmp_path / "args.json").write_text(json.dumps({"loss": "Hill", "lr": 1e-4}))
    check_output_folder(run_args(resume="auto"), tmp_path, None)  # same run: starts again
    with pytest.raises(UserError, match=r"--lr 0.0001 -> 0.001"):
        check_output_folder(run_args(resume="auto", lr=1e-3), tmp_path, None)


@pytest.mark.parametrize("left", [["metrics.jsonl"], ["best.ckpt"], ["metrics.jsonl", "best.ckpt"]])
def test_auto_resume_without_last_ckpt_never_restarts_over_recorded_epochs(tmp_path, left):
    """A finished run whose last.ckpt was deleted (to save space) must not be started again over its files."""
    for name in left:
        (tmp_path / name).write_text('{"epoch": 0}\n')
    (tmp_path / "args.json").write_text(json.dumps({"loss": "Hill", "lr": 1e-4}))
    with pytest.raises(UserError) as e:
        check_output_folder(run_args(resume="auto"), tmp_path, None)
    message = str(e.value)
    assert "\n" not in message and "no last.ckpt" in message and "another --output" in message
    assert all(name in message for name in left)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\udcff"])
def test_a_corrupt_args_json_is_one_line_naming_it(tmp_path, text):
    (tmp_path / "args.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(UserError) as e:
        check_output_folder(run_args(resume="auto"), tmp_path, None)
    assert str(tmp_path / "args.json") in str(e.value) and "\n" not in str(e.value)


def test_resume_of_another_file_of_the_same_folder_points_at_last_ckpt(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"x")
    (tmp_path / "best.ckpt").write_bytes(b"x")
    with pytest.raises(UserError, match=r"best.ckpt is not .*last.ckpt.*no optimizer state.*--resume auto"):
        check_output_folder(run_args(resume=str(tmp_path / "best.ckpt")), tmp_path, tmp_path / "best.ckpt")


def test_remove_if_unused_takes_only_a_folder_holding_just_its_lock(tmp_path):
    empty, used = tmp_path / "empty", tmp_path / "used"
    for folder in (empty, used):
        folder.mkdir()
        (folder / ".lock").write_text("1\n")
    (used / "args.json").write_text("{}")
    remove_if_unused(empty)
    remove_if_unused(used)
    assert not empty.exists() and (used / "args.json").exists() and (used / ".lock").exists()


def test_a_resume_from_elsewhere_into_a_used_folder_is_refused(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"x")
    elsewhere = tmp_path / "other" / "last.ckpt"
    with pytest.raises(UserError, match="lies outside --output"):
        check_output_folder(run_args(resume=str(elsewhere)), tmp_path, elsewhere)
    check_output_folder(run_args(resume="auto"), tmp_path, tmp_path / "last.ckpt")


def test_check_same_run_names_the_changed_flags(tmp_path):
    ckpt = {"kind": "last", "args": vars(run_args())}
    check_same_run(tmp_path / "last.ckpt", ckpt, run_args())
    with pytest.raises(CheckpointError, match="--loss Hill -> SPLC"):
        check_same_run(tmp_path / "last.ckpt", ckpt, run_args(loss="SPLC"))
    with pytest.raises(CheckpointError, match="resume needs a last.ckpt"):
        check_same_run(tmp_path / "best.ckpt", {**ckpt, "kind": "best"}, run_args())


def test_a_checkpoint_from_before_freeze_backbone_counts_as_unfrozen(tmp_path):
    saved = {k: v for k, v in vars(run_args()).items() if k != "freeze_backbone"}
    ckpt = {"kind": "last", "args": saved}
    check_same_run(tmp_path / "last.ckpt", ckpt, run_args(freeze_backbone=False))
    with pytest.raises(CheckpointError, match="--freeze-backbone None -> True"):
        check_same_run(tmp_path / "last.ckpt", ckpt, run_args(freeze_backbone=True))


def test_check_same_data_names_the_change(tmp_path):
    identity = {"num_classes": 2, "class_names": ["cat", "dog"], "train_fingerprint": None, "train_list": "t.txt"}
    path = tmp_path / "last.ckpt"
    with pytest.raises(CheckpointError, match="trained on 3 classes"):
        check_same_data(path, {"num_classes": 3}, identity)
    with pytest.raises(CheckpointError, match="class 1 was 'cow', is now 'dog'"):
        check_same_data(path, {"num_classes": 2, "class_names": ["cat", "cow"]}, identity)


def test_check_same_data_refuses_another_test_set(tmp_path, capsys):
    train_entries = [LabelEntry("a.jpg", (0,)), LabelEntry("b.jpg", (1,))]
    test_entries = [LabelEntry("c.jpg", (0,)), LabelEntry("d.jpg", (1,))]
    identity = {"num_classes": 2, "class_names": None, "train_list": "t.txt",
                "train_fingerprint": list_fingerprint(train_entries), "test_source": "val.json",
                "test_fingerprint": list_fingerprint(test_entries)}
    ckpt = {"num_classes": 2, "train_fingerprint": identity["train_fingerprint"],
            "test_fingerprint": identity["test_fingerprint"]}
    path = tmp_path / "last.ckpt"
    check_same_data(path, ckpt, identity)  # the same test set
    grown = {**identity, "test_fingerprint": list_fingerprint([*test_entries, LabelEntry("e.jpg", (0,))])}
    with pytest.raises(CheckpointError, match=r"test set val.json differs .*3 images, the run was scored on 2"):
        check_same_data(path, ckpt, grown)
    relabelled = {**identity, "test_fingerprint": list_fingerprint([test_entries[0], LabelEntry("d.jpg", (0,))])}
    with pytest.raises(CheckpointError, match="other labels"):
        check_same_data(path, ckpt, relabelled)
    old = {k: v for k, v in ckpt.items() if k != "test_fingerprint"}  # written before test sets were recorded
    check_same_data(path, old, grown)
    assert "records no test-set fingerprint" in capsys.readouterr().err


def _another(value):
    """A value other than ``value`` of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    return f"{value}-other"


@pytest.mark.parametrize("dest", RUN_DEFINING)
def test_every_run_defining_flag_changed_on_resume_is_refused_naming_it(tmp_path, dest):
    """The walk over the table of docs/training.md (FLAG_ROLES): last.ckpt's flags and args.json's both."""
    saved = vars(run_args())
    changed = run_args(**{dest: _another(saved[dest])})
    flag = "--" + dest.replace("_", "-")
    with pytest.raises(CheckpointError, match=f"different run: {flag} "):
        check_same_run(tmp_path / "last.ckpt", {"kind": "last", "args": saved}, changed)
    (tmp_path / "args.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match=f"args.json differs: {flag} "):
        check_output_folder(run_args(resume="auto", **{dest: changed.__dict__[dest]}), tmp_path, None)


def test_the_flags_that_may_change_on_resume_are_accepted(tmp_path):
    saved = vars(run_args())
    free = [d for d, (role, _) in FLAG_ROLES.items() if role != RUN and d in saved]
    check_same_run(tmp_path / "last.ckpt", {"kind": "last", "args": saved},
                   run_args(**{d: _another(saved[d]) for d in free}))


def test_another_pretrained_file_at_the_same_path_is_refused(tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"first")
    p = train.get_parser()
    saved = p.parse_args(["--pretrained", str(weights), "--epochs", "3"])
    check_args(p, saved)
    assert getattr(saved, PRETRAINED_SHA256) == hashlib.sha256(b"first").hexdigest()
    ckpt = {"kind": "last", "args": vars(saved)}
    now = p.parse_args(["--pretrained", str(weights), "--epochs", "3", "--resume", "auto"])
    check_args(p, now)
    check_same_run(tmp_path / "last.ckpt", ckpt, now)  # the same file
    weights.write_bytes(b"second")
    check_args(p, now)
    with pytest.raises(CheckpointError, match=f"--pretrained {weights}: another file at that path"):
        check_same_run(tmp_path / "last.ckpt", ckpt, now)
    old = {k: v for k, v in vars(saved).items() if k != PRETRAINED_SHA256}  # recorded before the hash was
    check_same_run(tmp_path / "last.ckpt", {"kind": "last", "args": old}, now)


def _last(epoch: int, best_epoch: int, which: str = "ema") -> dict:
    """A last.ckpt state of epoch ``epoch`` whose best is ``best_epoch`` (its model and EMA weights tell apart)."""
    history = [{"epoch": e, "map": 10.0 + e, "map_ema": 9.0 + e, "selected": "model"} for e in range(epoch + 1)]
    return {"kind": "last", "epoch": epoch, "history": history, "args": {"image_size": 32},
            "best": {"map": 10.0 + best_epoch, "epoch": best_epoch, "which": which},
            "model": {"w": torch.zeros(2)}, "ema": {"w": torch.ones(2)}, "model_name": "resnet10t",
            "num_classes": 2, "image_size": 32, "class_names": None}


def _record(folder, row_epochs, best_epoch, torn=False):
    rows = "".join(json.dumps({"epoch": e, "map": 1.0, "map_ema": 1.0}) + "\n" for e in row_epochs)
    (folder / "metrics.jsonl").write_text(rows + ('{"epoch": 9, "ma' if torn else ""))
    if best_epoch is not None:
        save_checkpoint({"kind": "best", "epoch": best_epoch, "model": {"w": torch.full((2,), 5.0)}},
                        folder / "best.ckpt")


def test_a_record_ahead_of_last_ckpt_is_cut_back_saying_what_was_dropped(tmp_path, capsys):
    """An older version's order (row, best.ckpt, last.ckpt) killed before last.ckpt of epoch 2: rows of epoch 2
    and a torn line, and best.ckpt of epoch 2, are ahead of last.ckpt (epoch 1, itself the best)."""
    _record(tmp_path, [0, 1, 2], best_epoch=2, torn=True)
    settle_record(tmp_path / "last.ckpt", tmp_path, _last(1, 1), DistInfo())
    out = capsys.readouterr().out.splitlines()
    assert [r["epoch"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())] == [0, 1]
    assert any(f"dropped the rows of epochs 2 and 1 torn line from {tmp_path / 'metrics.jsonl'}" in x for x in out)
    assert any(f"dropped {tmp_path / 'best.ckpt'} (epoch 2), ahead of" in x for x in out)
    best = load_checkpoint(tmp_path / "best.ckpt")  # rebuilt from last.ckpt: the EMA, epoch 1
    assert (best["epoch"], best["which"], best["model_name"]) == (1, "ema", "resnet10t")
    assert torch.equal(best["model"]["w"], torch.ones(2))


def test_a_best_ckpt_that_cannot_be_rebuilt_is_said_so(tmp_path, capsys):
    _record(tmp_path, [0, 1, 2], best_epoch=2)
    settle_record(tmp_path / "last.ckpt", tmp_path, _last(1, 0), DistInfo())  # the best epoch 0 is gone
    out = capsys.readouterr().out
    assert "dropped" in out and "warning: no best.ckpt of epoch 0" in out and not (tmp_path / "best.ckpt").exists()


def test_a_consistent_record_is_left_untouched(tmp_path, capsys):
    last = _last(1, 1, which="model")
    save_checkpoint(best_checkpoint(last), tmp_path / "best.ckpt")
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in last["history"]))
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    settle_record(tmp_path / "last.ckpt", tmp_path, last, DistInfo())
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before
    assert capsys.readouterr().out == ""
