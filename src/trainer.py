"""The training run shared by train.py (COCO) and train_nus.py (NUS-WIDE).

The two scripts differ only in their data flags and in how they build their datasets; the flags below,
the recipe, evaluation, logging, checkpoints and resume live here once. The official code's defaults:
Adam lr 1e-4 (weight decay 1e-4 on weights only), OneCycleLR over 80 epochs with pct_start 0.2 stepped
every batch, training stopped after epoch index 30 (31 epochs), EMA decay 0.9997, batch 128, 448 px,
summed loss, model and EMA evaluated after every epoch.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from src.checkpoint import (CheckpointError, load_checkpoint, load_weights, plain, rng_state, save_checkpoint,
                            set_rng_state)
from src.cli import torchrun_hint
from src.data.datasets import MultiLabelImages, collate_multilabel, split_holdout
from src.data.labels import describe_list_change, list_fingerprint, read_label_list
from src.distributed import DistInfo, EpochShuffleSampler, ShardSampler, barrier, cleanup, init_distributed
from src.engine import MissingLabelOracle, NonFiniteLossError, predict, to_device, train_one_epoch
from src.errors import UserError, report_user_errors
from src.io_utils import RunFolderLock, WriteError, atomic_write, atomic_write_text, remove_stale_temporaries
from src.loss_functions.losses import LOSS_NAMES, build_loss, canonical_loss_name, loss_hyperparameters
from src.metrics import mAP, threshold_metrics
from src.models import (PretrainedUnavailable, check_model_name, create_model, create_model_with_weights,
                        locate_imagenet_weights, pretrained_arg)

# Loss hyperparameter flags: flag dest -> keyword of the loss constructors. They default to None so that
# only what the user sets reaches build_loss; the loss signatures hold the defaults (one place).
LOSS_FLAGS = {"lamb": "lamb", "margin": "margin", "gamma": "gamma", "tau": "tau",
              "change_epoch": "change_epoch", "eps": "eps", "expected_positives": "expected_positives",
              "delta": "delta"}
# Flags that define a run: a resume with different values would not continue the same run.
RUN_DEFINING = ("model_name", "loss", "lr", "epochs", "batch_size", "image_size", "seed", "weight_decay",
                "ema_decay", "val_split", "split_seed") + tuple(LOSS_FLAGS)
# What a last.ckpt must hold for a resume.
LAST_KEYS = ("kind", "model_name", "num_classes", "args", "model", "ema", "optimizer", "scheduler", "scaler",
             "epoch", "global_step", "history", "best", "label_store", "rng")


def add_training_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags shared by train.py and train_nus.py (official names and defaults first)."""
    p = parser
    p.add_argument("--lr", default=1e-4, type=float, help="max learning rate of OneCycle (default: 1e-4)")
    p.add_argument("--model-name", default="resnet50", type=check_model_name,
                   help="any timm model name: resnet50, resnet101, tresnet_m, tresnet_l, ... (default: resnet50)")
    p.add_argument("--num-classes", default=None, type=int,
                   help="class count; taken from the data, so this only checks it (official default 80 / 81)")
    p.add_argument("-j", "--workers", default=16, type=int, metavar="N",
                   help="data loading workers per process (default: 16; capped at the CPU count)")
    p.add_argument("--image-size", default=448, type=int, metavar="N", help="input size (default: 448)")
    p.add_argument("--thre", default=0.5, type=float, metavar="N",
                   help="threshold for CP/CR/CF1/OP/OR/OF1 (default: 0.5)")
    p.add_argument("-b", "--batch-size", default=128, type=int, metavar="N",
                   help="global batch size; each of W torchrun processes takes batch-size / W (default: 128)")
    p.add_argument("--print-freq", "-p", default=64, type=int, metavar="N",
                   help="print (and check the loss is finite) every N steps (default: 64)")
    p.add_argument("--loss", default="Hill", type=_loss_name, choices=LOSS_NAMES,
                   help="loss function (default: Hill; case-insensitive)")
    g = p.add_argument_group("loss hyperparameters (unset: the loss's own default, which is the official one)")
    for dest, kw in LOSS_FLAGS.items():
        owners = [n for n in LOSS_NAMES if kw in loss_hyperparameters(n)]
        defaults = ", ".join(f"{n} {loss_hyperparameters(n)[kw]}" for n in owners)
        g.add_argument("--" + dest.replace("_", "-"), dest=dest, type=float if dest != "change_epoch" else int,
                       default=None, help=f"default: {defaults}")
    s = p.add_argument_group("schedule and recipe")
    s.add_argument("--epochs", default=80, type=int, help="length of the OneCycle schedule (default: 80)")
    s.add_argument("--stop-epoch", default=30, type=int,
                   help="last 0-based epoch trained; the official code trains epochs 0..30 (default: 30)")
    s.add_argument("--weight-decay", default=1e-4, type=float, help="on weights, not biases/1-D (default: 1e-4)")
    s.add_argument("--ema-decay", default=0.9997, type=float, help="EMA decay per step (default: 0.9997)")
    s.add_argument("--pretrained", default="imagenet", type=pretrained_arg, metavar="imagenet|none|PATH",
                   help="starting weights: imagenet = the paper's ImageNet weights through timm (downloaded once "
                        "into the Hugging Face cache), none = random, or a torchvision/timm/ASL weights file; "
                        "the head is always re-initialised (default: imagenet; see docs/pretrained.md)")
    s.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision; auto = bf16 on GPUs that support it, else fp16; off on the CPU")
    s.add_argument("--device", default="auto", help="cuda, cpu, cuda:1, ... (default: cuda if present)")
    s.add_argument("--seed", default=0, type=int, help="seed of data order, augmentation and init (default: 0)")
    s.add_argument("--compile", action="store_true", help="torch.compile the model")
    s.add_argument("--gpu-pipeline", default="auto", choices=["auto", "on", "off"],
                   help="decode (nvjpeg), resize and augment batches on the device; workers only read file "
                        "bytes (auto: on when training on CUDA)")
    o = p.add_argument_group("data checks, evaluation and outputs")
    o.add_argument("--val-split", default=0.0, type=float,
                   help="hold out this fraction of the training list to choose the best epoch on; the test "
                        "set is then scored once, with the best checkpoint (default: 0 = official: choose on test)")
    o.add_argument("--split-seed", default=0, type=int, help="seed of the held-out split (default: 0)")
    o.add_argument("--check-images", action="store_true", help="check every image file exists before training")
    o.add_argument("--skip-bad-images", action="store_true",
                   help="log and leave out corrupt images (counted per epoch) instead of stopping")
    o.add_argument("--allow-small-data", action="store_true",
                   help="accept a --batch-size larger than the training set (each epoch is then one step)")
    o.add_argument("--oracle-list", default=None, metavar="FULL.txt",
                   help="full-label list of the training images: log how well the model finds missing labels")
    o.add_argument("--oracle-threshold", default=None, type=float,
                   help="probability above which a missing label counts as found (default: SPLC's tau, else 0.5)")
    o.add_argument("--output", default=None, metavar="DIR",
                   help="run folder for metrics.jsonl, last.ckpt, best.ckpt (default: runs/<loss>-<model>-<list>)")
    o.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="continue from a last.ckpt; 'auto' takes OUTPUT/last.ckpt if present")
    o.add_argument("--max-steps-per-epoch", default=None, type=int, help=argparse.SUPPRESS)  # tests only
    return p


def _loss_name(name: str) -> str:
    try:
        return canonical_loss_name(name)
    except ValueError:
        return name  # argparse's choices check then reports it with the list


@dataclass
class Datasets:
    """What a training script builds: the training list and the test set, plus how they were named.

    ``class_names``: the name of each class index (length num_classes), or None when unknown; stored in
    every checkpoint and checked on resume."""
    train: MultiLabelImages
    test: MultiLabelImages
    num_classes: int
    train_list: str
    class_names: list[str] | None = None


BuildDatasets = Callable[[argparse.Namespace, Callable | None, Callable | None, bool], Datasets]


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks that need more than one flag; each failure is an argparse error naming the flags."""
    if not 0 <= args.stop_epoch < args.epochs:
        parser.error(f"--stop-epoch {args.stop_epoch} must lie in [0, --epochs {args.epochs})")
    if not 0.0 <= args.val_split < 1.0:
        parser.error(f"--val-split {args.val_split} must lie in [0, 1)")
    for flag in ("batch_size", "image_size", "print_freq"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    if args.pretrained == "imagenet" and args.resume is None:  # offline and not cached: say so before any work
        try:
            locate_imagenet_weights(args.model_name, args.image_size)
        except PretrainedUnavailable as e:
            parser.exit(2, f"{e}\n")
    try:
        build_loss(args.loss, **loss_kwargs(args))
    except (ValueError, TypeError) as e:
        parser.error(f"--loss {args.loss}: {e}")


def loss_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The loss hyperparameters the user set, keyed as the loss constructors name them."""
    return {kw: getattr(args, dest) for dest, kw in LOSS_FLAGS.items() if getattr(args, dest) is not None}


def resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        if info.enabled:
            device = torch.device("cuda", info.local_rank)
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """--amp to an autocast dtype (None = full precision)."""
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def log(info: DistInfo, *msg: Any) -> None:
    if info.is_main:
        print(*msg, flush=True)


def run_training(parser: argparse.ArgumentParser, args: argparse.Namespace, build_datasets: BuildDatasets) -> dict:
    """Train as the flags say, evaluating model and EMA after every epoch; return the best result."""
    check_args(parser, args)
    info = init_distributed("cuda" if args.device.startswith("cuda") or
                            (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        with report_user_errors(), contextlib.ExitStack() as held:  # a UserError: one line, exit status 2
            return _run(parser, args, build_datasets, info, held)
    finally:
        cleanup(info)


def _run(parser, args, build_datasets: BuildDatasets, info: DistInfo, held: contextlib.ExitStack) -> dict:
    device = resolve_device(args.device, info)
    amp_dtype = resolve_amp(args.amp, device)
    if not info.enabled and args.device in ("auto", "cuda") and device.type == "cuda" \
            and torch.cuda.device_count() > 1:
        log(info, torchrun_hint([Path(sys.argv[0]).name, *sys.argv[1:]], torch.cuda.device_count()))
    if args.batch_size % info.world_size:
        parser.error(f"--batch-size {args.batch_size} is not divisible by the {info.world_size} processes")
    seed_everything(args.seed)
    gpu_pipeline = args.gpu_pipeline == "on" or (args.gpu_pipeline == "auto" and device.type == "cuda")
    if gpu_pipeline and args.skip_bad_images:
        parser.error("--skip-bad-images needs the CPU input pipeline: add --gpu-pipeline off")
    if gpu_pipeline:
        from src.data.gpu_pipeline import GpuEvalPreprocess, GpuTrainPreprocess
        train_pre, eval_pre = GpuTrainPreprocess(args.image_size, device), GpuEvalPreprocess(args.image_size, device)
        data = build_datasets(args, None, None, True)
    else:
        from src.data.augment import train_transform, val_transform
        train_pre = eval_pre = to_device(device)
        data = build_datasets(args, train_transform(args.image_size), val_transform(args.image_size), False)
    num_classes = data.num_classes
    if args.num_classes is not None and args.num_classes != num_classes:
        parser.error(f"--num-classes {args.num_classes} disagrees with the data, which has {num_classes} classes")
    if data.class_names is not None and len(data.class_names) != num_classes:
        raise ValueError(f"{len(data.class_names)} class names for {num_classes} classes")
    if len(data.train) == 0:
        raise UserError(f"the training list {data.train_list} holds no images")
    if len(data.test) == 0:
        raise UserError(f"the test set ({data.test.source or 'test data'}) holds no images")
    out_dir = Path(args.output or f"runs/{args.loss}-{args.model_name}-{Path(data.train_list).stem}")
    if info.is_main:  # one writer per run folder, for the whole run
        held.enter_context(RunFolderLock(out_dir))
        for tmp in remove_stale_temporaries(out_dir):
            log(info, f"removed {tmp}, left by a writer that was killed")
    resume_path = _resume_path(args.resume, out_dir)
    _check_output_folder(args, out_dir, resume_path)
    if args.check_images:
        data.train.check_images()
        data.test.check_images()

    # Training and evaluation sets: the held-out part of the training list, if asked, else the test set.
    all_train = list(range(len(data.train)))
    try:
        train_idx, held_idx = split_holdout(len(data.train), args.val_split, args.split_seed) if args.val_split \
            else (all_train, [])
    except ValueError as e:
        raise UserError(f"--val-split {args.val_split}: {e}") from None
    if args.batch_size > len(train_idx) and not args.allow_small_data:
        raise UserError(f"--batch-size {args.batch_size} is larger than the training set ({len(train_idx)} images "
                        f"of {data.train_list}): each epoch would be a single step; lower --batch-size or pass "
                        "--allow-small-data")
    if held_idx:
        eval_set = copy.copy(data.train)
        eval_set.transform = data.test.transform
        eval_idx = held_idx
    else:
        eval_set, eval_idx = data.test, list(range(len(data.test)))
    workers = min(args.workers, os.cpu_count() or 1)
    local_batch = args.batch_size // info.world_size
    sampler = EpochShuffleSampler(train_idx, info, args.seed)
    loader_gen = torch.Generator()
    train_loader = torch.utils.data.DataLoader(
        data.train, batch_size=local_batch, sampler=sampler, num_workers=workers, drop_last=False,
        collate_fn=collate_multilabel, pin_memory=device.type == "cuda", generator=loader_gen,
        persistent_workers=False)
    if args.max_steps_per_epoch:
        train_loader = _Truncated(train_loader, args.max_steps_per_epoch)

    def eval_loader(dataset, indices):
        return torch.utils.data.DataLoader(dataset, batch_size=local_batch, sampler=ShardSampler(indices, info),
                                           num_workers=workers, collate_fn=collate_multilabel,
                                           pin_memory=device.type == "cuda")

    # Model, EMA, optimizer, schedule, loss.
    if resume_path is not None:  # the weights come from the checkpoint
        model = create_model(args.model_name, num_classes)
    else:
        try:
            model, weights_line = create_model_with_weights(args.model_name, num_classes, args.pretrained,
                                                            args.image_size)
        except PretrainedUnavailable as e:
            parser.exit(2, f"{e}\n")
        except (ValueError, FileNotFoundError) as e:
            parser.error(f"--pretrained: {e}")
        log(info, weights_line)
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    from timm.optim import param_groups_weight_decay
    from timm.utils import ModelEmaV3
    ema = ModelEmaV3(model, decay=args.ema_decay)
    groups = param_groups_weight_decay(model, weight_decay=args.weight_decay)
    optimizer = torch.optim.Adam(groups, lr=args.lr, **({"fused": True} if device.type == "cuda" else {}))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                    steps_per_epoch=len(train_loader), pct_start=0.2)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = build_loss(args.loss, **_loss_kwargs_with_data(args))
    step_model: nn.Module = model
    if info.enabled:
        step_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        step_model = torch.compile(step_model)
    loss_scale = float(info.world_size) if getattr(criterion, "reduction", "sum") == "sum" else 1.0
    label_store = data.train.targets_matrix().to(device)
    oracle = _oracle(args, data.train, label_store, device) if args.oracle_list else None

    state = {"epoch": -1, "global_step": 0, "history": [], "best": {"map": -1.0}}
    identity = _data_identity(data)
    last_epoch = min(args.stop_epoch, args.epochs - 1)
    if resume_path is not None:
        state = _restore(resume_path, args, model, ema, optimizer, scheduler, scaler, label_store, info, identity)
        if state["epoch"] >= last_epoch:
            best = state["best"]
            log(info, f"already finished at epoch {state['epoch']} (best mAP {best['map']:.2f} in "
                      f"{out_dir / 'best.ckpt'})")
            return dict(best)
        if info.is_main:
            _adopt_best(resume_path, out_dir, state["best"], info)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state["history"]))
        atomic_write_text(out_dir / "args.json", json.dumps(vars(args), indent=1, default=str) + "\n")
    log(info, f"train {len(train_idx)} images ({data.train_list}), evaluate on {len(eval_idx)} "
              f"({'held-out split' if held_idx else 'test set'}), {num_classes} classes, {args.model_name}, "
              f"loss {args.loss}, device {device}, amp {amp_dtype}, world size {info.world_size}, output {out_dir}")

    eval_batches = eval_loader(eval_set, eval_idx)
    eval_targets = eval_set.targets_matrix()
    for epoch in range(state["epoch"] + 1, last_epoch + 1):
        epoch_seed = args.seed * 100_003 + epoch
        seed_everything(epoch_seed + 7919 * info.rank)  # everything random in epoch e follows from (seed, e)
        loader_gen.manual_seed(epoch_seed + 7919 * info.rank)
        if hasattr(train_pre, "generator"):  # the GPU pipeline draws its augmentation from its own generator
            train_pre.generator.manual_seed(epoch_seed + 7919 * info.rank)
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        try:
            stats = train_one_epoch(step_model, criterion, train_loader, optimizer, scheduler, scaler, ema,
                                    epoch=epoch, num_epochs=last_epoch + 1, device=device, amp_dtype=amp_dtype,
                                    preprocess=train_pre, label_store=label_store, info=info,
                                    loss_scale=loss_scale, oracle=oracle, print_freq=args.print_freq)
        except NonFiniteLossError as e:
            raise SystemExit(f"error: {e}") from e
        state["global_step"] += len(train_loader)
        scores, seen = predict({"model": model, "ema": ema.module}, eval_batches, len(eval_set), num_classes,
                               device=device, amp_dtype=amp_dtype, preprocess=eval_pre, info=info)
        targets = eval_targets[seen]
        maps = {name: mAP(targets, s[seen]) for name, s in scores.items()}
        which = "ema" if maps["ema"] >= maps["model"] else "model"
        row = {"epoch": epoch, **stats, "map": maps["model"], "map_ema": maps["ema"], "selected": which,
               **threshold_metrics(targets, scores[which][seen], args.thre),
               "seconds": time.perf_counter() - start}
        improved = maps[which] > state["best"]["map"]
        if improved:
            state["best"] = {"map": maps[which], "epoch": epoch, "which": which}
        state["history"].append(row)
        state["epoch"] = epoch
        if info.is_main:
            _write_epoch(out_dir, row, state, improved, which, model, ema, optimizer, scheduler, scaler,
                         label_store, args, identity)
            print(_epoch_line(row, state["best"], last_epoch), flush=True)
        barrier(info)

    result = dict(state["best"])
    if held_idx and state["best"]["map"] >= 0:
        result["test"] = _score_best_on_test(out_dir, args, model, data.test, eval_loader, device, amp_dtype,
                                             eval_pre, info)
    return result


class _Truncated:
    """A DataLoader cut to its first n batches (tests use it to keep epochs tiny)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return min(self.n, len(self.loader))

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i >= self.n:
                break
            yield batch


def _loss_kwargs_with_data(args) -> dict[str, Any]:
    """EPR's expected positives default to the full list's labels per image when --oracle-list is given."""
    kwargs = loss_kwargs(args)
    if args.loss == "EPR" and "expected_positives" not in kwargs and args.oracle_list:
        entries = read_label_list(args.oracle_list)
        kwargs["expected_positives"] = sum(len(e.labels) for e in entries) / max(len(entries), 1)
    return kwargs


def _oracle(args, train_set: MultiLabelImages, observed: torch.Tensor, device) -> MissingLabelOracle:
    """Align the full-label list with the training list by file name."""
    full_entries = {e.name: e.labels for e in read_label_list(args.oracle_list, train_set.num_classes)}
    full = torch.zeros_like(observed)
    for i, e in enumerate(train_set.entries):
        labels = full_entries.get(e.name)
        if labels is None:
            raise UserError(f"--oracle-list {args.oracle_list} has no line for training image {e.name}")
        if not set(e.labels) <= set(labels):
            raise UserError(f"--oracle-list {args.oracle_list}: {e.name} has labels {sorted(e.labels)} in the "
                             f"training list that the full list lacks ({sorted(labels)})")
        full[i, list(labels)] = 1
    threshold = args.oracle_threshold
    if threshold is None:
        threshold = (args.tau if args.tau is not None else loss_hyperparameters("SPLC")["tau"]) \
            if args.loss == "SPLC" else 0.5
    return MissingLabelOracle(full=full.to(device), observed=observed.clone(), threshold=threshold)


def _resume_path(resume: str | None, out_dir: Path) -> Path | None:
    if resume is None:
        return None
    if resume == "auto":
        path = out_dir / "last.ckpt"
        return path if path.exists() else None
    return Path(resume)


def _run_files(out_dir: Path) -> list[str]:
    """The files of a run that has finished at least part of an epoch (an empty metrics.jsonl does not count)."""
    found = [n for n in ("last.ckpt", "best.ckpt") if (out_dir / n).exists()]
    metrics = out_dir / "metrics.jsonl"
    if metrics.exists() and metrics.stat().st_size > 0:
        found.append("metrics.jsonl")
    return found


def _check_output_folder(args, out_dir: Path, resume_path: Path | None) -> None:
    """A run writes only into its own folder: a fresh start needs a folder without a run, and a resume
    from a file elsewhere needs one too (it then continues that run there)."""
    present = _run_files(out_dir)
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


def _data_identity(data: Datasets) -> dict:
    """What a checkpoint records about its data: the training list's fingerprint and path, the classes."""
    return {"train_list": str(data.train_list), "train_fingerprint": list_fingerprint(data.train.entries),
            "num_classes": data.num_classes, "class_names": data.class_names}


def _check_same_data(path: Path, ckpt: dict, identity: dict) -> None:
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


def _restore(path: Path, args, model, ema, optimizer, scheduler, scaler, label_store, info: DistInfo,
             identity: dict) -> dict:
    """Load last.ckpt into the run's objects; a mismatch is an error, never a silent fresh start."""
    ckpt = load_checkpoint(path, required=LAST_KEYS)
    if ckpt.get("kind") != "last":
        raise CheckpointError(f"{path} is a {ckpt.get('kind')} checkpoint; resume needs a last.ckpt")
    saved = ckpt["args"]
    changed = [f"--{k.replace('_', '-')} {saved.get(k)} -> {getattr(args, k)}" for k in RUN_DEFINING
               if saved.get(k) != getattr(args, k)]
    if changed:
        raise CheckpointError(f"{path} was written by a different run: " + "; ".join(changed))
    _check_same_data(path, ckpt, identity)
    load_weights(model, ckpt["model"], str(path))
    load_weights(ema.module, ckpt["ema"], f"{path} (EMA)")
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: optimizer/scheduler state does not match this run: {e}") from e
    if ckpt["label_store"].shape != label_store.shape:
        raise CheckpointError(f"{path}: label store {tuple(ckpt['label_store'].shape)} does not match the "
                              f"training list {tuple(label_store.shape)}")
    label_store.copy_(ckpt["label_store"])
    set_rng_state(ckpt["rng"])
    log(info, f"resumed from {path}: epoch {ckpt['epoch']} done, continuing at epoch {ckpt['epoch'] + 1}")
    return {"epoch": ckpt["epoch"], "global_step": ckpt["global_step"], "history": ckpt["history"],
            "best": ckpt["best"]}


def _adopt_best(resume_path: Path, out_dir: Path, best: dict, info: DistInfo) -> None:
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


def _append_line(path: Path, line: str) -> None:
    try:
        with open(path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise WriteError(f"cannot append to {path}: {e.strerror or e}") from e


def _write_epoch(out_dir: Path, row, state, improved, which, model, ema, optimizer, scheduler, scaler,
                 label_store, args, identity: dict) -> None:
    """Append the metrics row, then write last.ckpt (and best.ckpt), each atomically. Only tensors and plain
    values go in, so that both load with torch.load(weights_only=True)."""
    meta = {"model_name": args.model_name, "num_classes": identity["num_classes"], "image_size": args.image_size,
            "class_names": identity["class_names"], "args": plain(vars(args))}
    _append_line(out_dir / "metrics.jsonl", json.dumps(row) + "\n")
    if improved:
        weights = ema.module.state_dict() if which == "ema" else model.state_dict()
        save_checkpoint({"kind": "best", **meta, "model": weights, "which": which, "epoch": row["epoch"],
                         "map": float(state["best"]["map"])}, out_dir / "best.ckpt")
    save_checkpoint({"kind": "last", **meta, "model": model.state_dict(), "ema": ema.module.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "epoch": state["epoch"], "global_step": state["global_step"],
                     "history": plain(state["history"]), "best": plain(state["best"]),
                     "label_store": label_store.cpu(), "rng": rng_state(),
                     "train_list": identity["train_list"], "train_fingerprint": identity["train_fingerprint"]},
                    out_dir / "last.ckpt")


def _epoch_line(row: dict, best: dict, last_epoch: int) -> str:
    line = (f"epoch {row['epoch']}/{last_epoch}  loss {row['train_loss']:.2f}  lr {row['lr']:.2e}  "
            f"mAP {row['map']:.2f}  EMA mAP {row['map_ema']:.2f}  "
            f"best {best['map']:.2f} ({best['which']}, epoch {best['epoch']})  "
            f"CF1 {row['cf1']:.2f} OF1 {row['of1']:.2f}")
    if "missing_recall" in row:
        line += (f"  missing labels: precision {row['missing_precision']:.1f}% recall {row['missing_recall']:.1f}%"
                 f" of {row['missing_count']}")
    if row.get("skipped_images"):
        line += f"  skipped {row['skipped_images']} bad images"
    return line + f"  {row['seconds']:.1f}s {row['images_per_second']:.0f} img/s"


def _score_best_on_test(out_dir, args, model, test_set, eval_loader, device, amp_dtype, preprocess, info) -> dict:
    """Score best.ckpt once on the test set (every rank takes part in the pass; rank 0 writes)."""
    best = load_checkpoint(out_dir / "best.ckpt")
    load_weights(model, best["model"], str(out_dir / "best.ckpt"))
    scores, seen = predict({"best": model}, eval_loader(test_set, list(range(len(test_set)))), len(test_set),
                           test_set.num_classes, device=device, amp_dtype=amp_dtype, preprocess=preprocess,
                           info=info)
    targets = test_set.targets_matrix()[seen]
    result = {"map": mAP(targets, scores["best"][seen]), **threshold_metrics(targets, scores["best"][seen], args.thre)}
    if info.is_main:
        atomic_write_text(out_dir / "test_metrics.json", json.dumps(result, indent=1) + "\n")
        print(f"test set, best checkpoint (epoch {best['epoch']}, {best['which']}): mAP {result['map']:.2f}",
              flush=True)
    return result
