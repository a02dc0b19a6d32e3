"""A run's folder (--output): one writer at a time, what a killed writer left, which checkpoint a resume takes,
and whether this run may write there; and whether a checkpoint belongs to this run and its data. A resume that
would not continue the same run is an error that names what changed, never a silent fresh start.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from src.checkpoint import CheckpointError, load_checkpoint
from src.data.builders import Datasets
from src.data.labels import describe_list_change
from src.distributed import DistInfo, log
from src.errors import UserError
from src.io_utils import RunFolderLock, WriteError, atomic_write, remove_stale_temporaries
from src.training_flags import RUN_DEFINING, RUN_DEFINING_BEFORE

__all__ = ["run_folder", "open_run_folder", "checkpoint_to_resume", "check_same_data", "check_same_run", "adopt_best",
           "append_line"]


def run_folder(args: argparse.Namespace, data: Datasets) -> Path:
    return Path(args.output or f"runs/{args.loss}-{args.model_name}-{Path(data.train_list).stem}")


def open_run_folder(args, data: Datasets, info: DistInfo, held: contextlib.ExitStack) -> Path | None:
    """Hold the run folder's lock for the whole run, remove what a killed writer left, and check that this run may
    write there; return the checkpoint to resume from (None: a fresh start)."""
    out_dir = run_folder(args, data)
    if info.is_main:  # one writer per run folder
        held.enter_context(RunFolderLock(out_dir))
        for tmp in remove_stale_temporaries(out_dir):
            log(info, f"removed {tmp}, left by a writer that was killed")
    resume_path = checkpoint_to_resume(args.resume, out_dir)
    check_output_folder(args, out_dir, resume_path)
    return resume_path


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
    from a file elsewhere needs one too (it then continues that run there)."""
    present = run_files(out_dir)
    if not present:
        return
    if resume_path is None and args.resume is None:
        raise UserError(f"{out_dir} already holds a run ({', '.join(present)}): pass --resume auto to continue it, "
                        "or choose another --output")
    if resume_path is None:  # --resume auto, and no last.ckpt: killed during its first epoch
        saved_args = out_dir / "args.json"
        saved = json.loads(saved_args.read_text()) if saved_args.exists() else {}
        changed = [f"--{k.replace('_', '-')} {saved[k]} -> {getattr(args, k)}" for k in RUN_DEFINING
                   if k in saved and saved[k] != getattr(args, k)]
        if changed:
            raise UserError(f"{out_dir} holds another run ({saved_args} differs: {'; '.join(changed)}); "
                            "choose another --output")
        return  # nothing was checkpointed: start the same run again
    if resume_path.resolve() != (out_dir / "last.ckpt").resolve():
        raise UserError(f"--resume {resume_path} lies outside --output {out_dir}, which already holds another run "
                        f"({', '.join(present)}); resume into an empty --output, or resume {out_dir / 'last.ckpt'}")


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


def check_same_run(path: Path, ckpt: dict, args) -> None:
    if ckpt.get("kind") != "last":
        raise CheckpointError(f"{path} is a {ckpt.get('kind')} checkpoint; resume needs a last.ckpt")
    saved = ckpt["args"]
    changed = [f"--{k.replace('_', '-')} {saved.get(k)} -> {getattr(args, k)}" for k in RUN_DEFINING
               if saved.get(k, RUN_DEFINING_BEFORE.get(k)) != getattr(args, k)]
    if changed:
        raise CheckpointError(f"{path} was written by a different run: " + "; ".join(changed))


def adopt_best(resume_path: Path, out_dir: Path, best: dict, info: DistInfo) -> None:
    """Resuming a run into another folder continues it there: bring its best.ckpt along."""
    source, target = resume_path.parent / "best.ckpt", out_dir / "best.ckpt"
    if resume_path.parent.resolve() == out_dir.resolve() or best.get("epoch") is None:
        return
    if source.is_file() and load_checkpoint(source).get("epoch") == best["epoch"]:
        data = source.read_bytes()
        atomic_write(target, lambda f: f.write(data))
        log(info, f"copied {source} (epoch {best['epoch']}) to {target}")
    else:
        log(info, f"warning: {source} of epoch {best['epoch']} is not beside {resume_path}: {target} will be "
                  "written by the first epoch that beats its mAP")


def append_line(path: Path, line: str) -> None:
    try:
        with open(path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise WriteError(f"cannot append to {path}: {e.strerror or e}") from e
