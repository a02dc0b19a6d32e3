"""A run's folder (--output): one writer at a time, what a killed writer left, which checkpoint a resume takes,
and whether this run may write there; and whether a checkpoint belongs to this run and its data. A resume that
would not continue the same run is an error that names what changed, never a silent fresh start.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from src.checkpoint import CheckpointError, best_checkpoint, load_checkpoint, save_checkpoint
from src.data.builders import Datasets
from src.data.labels import describe_list_change
from src.distributed import DistInfo, log
from src.errors import UserError
from src.io_utils import LOCK_NAME, RunFolderLock, atomic_write, atomic_write_text, remove_stale_temporaries
from src.run_metrics import METRICS_FILE, recorded_epochs, rows_text
from src.training_flags import changed_run_flags

__all__ = ["run_folder", "open_run_folder", "checkpoint_to_resume", "check_same_data", "check_same_test_set",
           "check_same_run", "settle_record", "read_saved_args", "remove_if_unused"]


def run_folder(args: argparse.Namespace, data: Datasets) -> Path:
    return Path(args.output or f"runs/{args.loss}-{args.model_name}-{Path(data.train_list).stem}")


def open_run_folder(args, data: Datasets, info: DistInfo, held: contextlib.ExitStack) -> Path | None:
    """Hold the run folder's lock for the whole run, remove what a killed writer left, and check that this run may
    write there; return the checkpoint to resume from (None: a fresh start)."""
    out_dir = run_folder(args, data)
    if info.is_main:  # one writer per run folder
        created = not out_dir.exists()
        held.enter_context(RunFolderLock(out_dir))
        if created:  # runs before the lock's release (last in, first out)
            held.callback(remove_if_unused, out_dir)
        for tmp in remove_stale_temporaries(out_dir):
            log(info, f"removed {tmp}, left by a writer that was killed")
    resume_path = checkpoint_to_resume(args.resume, out_dir)
    check_output_folder(args, out_dir, resume_path)
    return resume_path


def remove_if_unused(out_dir: Path) -> None:
    """Remove a run folder this run created when it holds nothing but its lock (the run failed at its start).
    Called while the lock is held."""
    try:
        if {p.name for p in out_dir.iterdir()} <= {LOCK_NAME}:
            (out_dir / LOCK_NAME).unlink(missing_ok=True)
            out_dir.rmdir()
    except OSError:  # something appeared meanwhile, or the folder went: leave it as it is
        pass


def checkpoint_to_resume(resume: str | None, out_dir: Path) -> Path | None:
    """--resume: None, OUT_DIR/last.ckpt for 'auto' when it exists (else None: a fresh start), or the path."""
    if resume is None:
        return None
    if resume == "auto":
        path = out_dir / "last.ckpt"
        return path if path.exists() else None
    return Path(resume)


def run_files(out_dir: Path) -> list[str]:
    """The files of a run that has finished at least part of an epoch (an empty metrics.jsonl does not count)."""
    found = [n for n in ("last.ckpt", "best.ckpt") if (out_dir / n).exists()]
    metrics = out_dir / "metrics.jsonl"
    if metrics.exists() and metrics.stat().st_size > 0:
        found.append("metrics.jsonl")
    return found


def check_output_folder(args, out_dir: Path, resume_path: Path | None) -> None:
    """A run writes only into its own folder: a fresh start needs a folder without a run, and a resume
    from a file elsewhere needs one too (it then continues that run there). ``--resume auto`` without a
    last.ckpt starts the run again only where nothing of a run exists (killed before its first epoch ended)."""
    present = run_files(out_dir)
    if resume_path is None and args.resume == "auto":
        check_restart(args, out_dir, present)
        return
    if not present:
        return
    if resume_path is None:
        raise UserError(f"{out_dir} already holds a run ({', '.join(present)}): pass --resume auto to continue it, "
                        "or choose another --output")
    last = out_dir / "last.ckpt"
    if resume_path.resolve() == last.resolve():
        return
    if resume_path.parent.resolve() == out_dir.resolve():
        why = " (a best.ckpt holds no optimizer state)" if resume_path.name == "best.ckpt" else ""
        raise UserError(f"--resume {resume_path} is not {last}, the checkpoint that continues the run in --output "
                        f"{out_dir}{why}: pass --resume auto")
    raise UserError(f"--resume {resume_path} lies outside --output {out_dir}, which already holds another run "
                    f"({', '.join(present)}); resume into an empty --output, or resume {last}")


def check_restart(args, out_dir: Path, present: list[str]) -> None:
    """--resume auto and no last.ckpt: start the same run again, but only where no epoch was recorded (metrics
    rows or a best.ckpt: a finished run whose last.ckpt was deleted, say) and args.json names the same run."""
    if present:
        raise UserError(f"{out_dir} holds {' and '.join(present)} but no last.ckpt, so --resume auto cannot continue "
                        "it and would overwrite them: keep that run and choose another --output, or move "
                        f"{' and '.join(present)} away to start it again there")
    saved_args = out_dir / "args.json"
    if not saved_args.exists():
        return
    saved = read_saved_args(saved_args)
    changed = changed_run_flags(saved, args)
    if changed:
        raise UserError(f"{out_dir} holds another run ({saved_args} differs: {'; '.join(changed)}); "
                        "choose another --output")


def read_saved_args(path: Path) -> dict:
    """A run folder's args.json (the flags it was started with); a UserError naming it when unreadable."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}): it records the flags of the run in this folder; restore it, "
                        "or delete it if the folder holds no run you want to keep") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path} holds a {type(saved).__name__}, not the run's flags (a JSON object): restore it, "
                        "or delete it if the folder holds no run you want to keep")
    return saved


def check_same_data(path: Path, ckpt: dict, identity: dict) -> None:
    """A resume must see the data its checkpoint was trained on: same classes, same list, same order."""
    if ckpt["num_classes"] != identity["num_classes"]:
        raise CheckpointError(f"{path} was trained on {ckpt['num_classes']} classes; the data now has "
                              f"{identity['num_classes']}")
    saved, now = ckpt.get("class_names"), identity["class_names"]
    if saved is not None and now is not None and list(saved) != list(now):
        k = next(i for i, (a, b) in enumerate(zip(saved, now)) if a != b)
        raise CheckpointError(f"{path}: the class names changed: class {k} was {saved[k]!r}, is now {now[k]!r}")
    fingerprint = ckpt.get("train_fingerprint")
    if fingerprint is None:
        print(f"warning: {path} records no training-list fingerprint (an upgraded old checkpoint): "
              "the list is not checked", file=sys.stderr, flush=True)
        return
    change = describe_list_change(fingerprint, identity["train_fingerprint"])
    if change:
        raise CheckpointError(f"the training list {identity['train_list']} differs from the one {path} was trained "
                              f"on ({ckpt.get('train_list', '?')}): {change}")
    check_same_test_set(path, ckpt, identity)


def check_same_test_set(path: Path, ckpt: dict, identity: dict) -> None:
    """A resume must evaluate on the test set its earlier epochs were scored on: the best epoch is chosen across
    all of them."""
    saved, now = ckpt.get("test_fingerprint"), identity.get("test_fingerprint")
    if now is None:
        return
    if saved is None:
        print(f"warning: {path} records no test-set fingerprint (written before they were recorded): the test "
              "set is not checked", file=sys.stderr, flush=True)
        return
    change = describe_list_change(saved, now, used="scored on")
    if change:
        raise CheckpointError(f"the test set {identity.get('test_source') or ''} differs from the one {path}'s "
                              f"epochs were scored on: {change}; the best epoch would be picked across two test "
                              "sets: resume with the same test data, or start a new run in another --output")


def check_same_run(path: Path, ckpt: dict, args) -> None:
    if ckpt.get("kind") != "last":
        raise CheckpointError(f"{path} is a {ckpt.get('kind')} checkpoint; resume needs a last.ckpt")
    saved = ckpt["args"]
    changed = changed_run_flags(saved, args)
    if changed:
        raise CheckpointError(f"{path} was written by a different run: " + "; ".join(changed))


def settle_record(resume_path: Path, out_dir: Path, ckpt: dict, info: DistInfo) -> None:
    """Bring the run folder's record to the last.ckpt ``ckpt`` read from ``resume_path``: metrics.jsonl holds
    exactly its history, and best.ckpt is the epoch its ``best`` names. What a kill left ahead of last.ckpt is cut
    back and what it left behind is rebuilt, each with a line saying so (the order of an epoch's writes:
    ``src.trainer.EPOCH_WRITES``). Main process only; a consistent folder is left untouched."""
    _settle_rows(resume_path, out_dir, ckpt, info)
    _settle_best(resume_path, out_dir, ckpt, info)


def _settle_rows(resume_path: Path, out_dir: Path, ckpt: dict, info: DistInfo) -> None:
    path, history = out_dir / METRICS_FILE, ckpt["history"]
    epochs, torn = recorded_epochs(out_dir)
    ahead = [e for e in epochs if e > ckpt["epoch"]]
    if ahead or torn:
        what = " and ".join(filter(None, [f"the rows of epochs {', '.join(map(str, ahead))}" if ahead else "",
                                          f"{torn} torn line{'s' * (torn > 1)}" if torn else ""]))
        log(info, f"dropped {what} from {path}, ahead of {resume_path} (epoch {ckpt['epoch']}): a run killed "
                  "before it committed them; those epochs are trained again")
    text = rows_text(history)
    if not path.exists() or path.read_text(encoding="utf-8", errors="replace") != text:
        atomic_write_text(path, text)


def _settle_best(resume_path: Path, out_dir: Path, ckpt: dict, info: DistInfo) -> None:
    """best.ckpt of the epoch ckpt["best"] names: kept; dropped when ahead of last.ckpt; brought from the resumed
    run's folder; or rebuilt from last.ckpt when that epoch is last.ckpt's own (a kill between the two writes)."""
    target, want = out_dir / "best.ckpt", ckpt["best"].get("epoch")
    have = _best_epoch(target)
    if want is None or have == want:
        return
    if have is not None and have > ckpt["epoch"]:
        target.unlink()
        log(info, f"dropped {target} (epoch {have}), ahead of {resume_path} (epoch {ckpt['epoch']}): a run killed "
                  "before it committed that epoch; it is trained again")
    source = resume_path.parent / "best.ckpt"
    if source.resolve() != target.resolve() and _best_epoch(source) == want:
        data = source.read_bytes()
        atomic_write(target, lambda f: f.write(data))
        log(info, f"copied {source} (epoch {want}) to {target}")
    elif want == ckpt["epoch"]:
        save_checkpoint(best_checkpoint(ckpt), target)
        log(info, f"wrote {target} (epoch {want}) from {resume_path}, which holds that epoch's weights (a run "
                  "killed between the two writes leaves no best.ckpt of it)")
    else:
        log(info, f"warning: no best.ckpt of epoch {want} beside {resume_path}: {target} will be written by the "
                  "first epoch that beats its mAP")


def _best_epoch(path: Path) -> int | None:
    """The epoch of the best.ckpt at ``path``; None when there is none."""
    return load_checkpoint(path, kind="best").get("epoch") if path.is_file() else None
