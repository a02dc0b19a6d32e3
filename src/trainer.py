"""The training run shared by train.py (COCO) and train_nus.py (NUS-WIDE).

The two scripts differ only in their data flags and in how they build their datasets; the recipe, evaluation,
logging, checkpoints and resume live here once, the other flags in ``src.training_flags`` and the run folder's
checks in ``src.run_folder``. The official code's defaults:
Adam lr 1e-4 (weight decay 1e-4 on weights only), OneCycleLR over 80 epochs with pct_start 0.2 stepped
every batch, training stopped after epoch index 30 (31 epochs), EMA decay 0.9997, batch 128, 448 px,
summed loss, model and EMA evaluated after every epoch.

``build_run`` makes everything a run trains with (model, EMA, optimizer, schedule, scaler, loss, loaders,
label store, input pipeline, device) as one ``Run``; ``run_training`` is DeiT's main over it (build, maybe
restore, then per epoch ``train_one_epoch`` + ``evaluate`` + write). ``benchmarks.bench_throughput`` times the
same ``Run``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import multiprocessing
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from timm.optim import param_groups_weight_decay
from timm.utils import ModelEmaV3, random_seed
from torch import nn

from src.checkpoint import (CheckpointError, best_checkpoint, load_checkpoint, load_weights, plain, rng_state,
                            save_checkpoint, set_rng_state)
from src.cli import torchrun_hint
from src.data.augment import train_transform
from src.data.builders import Datasets
from src.data.datasets import MultiLabelImages, collate_multilabel, split_holdout
from src.data.labels import list_fingerprint, read_label_list
from src.data.prefetch import Prefetcher
from src.distributed import (DistInfo, EpochShuffleSampler, ShardSampler, all_reduce_max, barrier, cleanup,
                             init_distributed, log)
from src.engine import (Compute, Evaluation, Learner, MissingLabelOracle, NonFiniteLossError, Preprocess, Progress,
                        evaluate, format_rate, resolve_amp, resolve_device, selected_map, to_device,
                        train_one_epoch)
from src.errors import UserError, report_user_errors
from src.frozen import FeatureBatches, FrozenBackbone, freeze
from src.io_utils import atomic_write_text
from src.loss_functions.losses import build_loss, loss_hyperparameters
from src.models import create_model, create_model_with_weights
from src.pretrained import PretrainedUnavailable
from src.run_folder import check_same_data, check_same_run, open_run_folder, run_folder, settle_record
from src.run_metrics import append_row, write_rows
from src.scoring import ScoringSetup, place_model, scoring_setup
from src.training_flags import check_args, loss_kwargs

# What a last.ckpt must hold for a resume.
LAST_KEYS = ("kind", "model_name", "num_classes", "args", "model", "ema", "optimizer", "scheduler", "scaler",
             "epoch", "global_step", "history", "best", "label_store", "rng")


BuildDatasets = Callable[[argparse.Namespace, Callable | None, Callable | None, bool], Datasets]


# ----------------------------------------------------------------------------- device and input pipeline

def resolve_compute(args: argparse.Namespace, info: DistInfo) -> Compute:
    """--device and --amp for this process (under torchrun: its local GPU)."""
    device = resolve_device(args.device, info)
    if args.batch_size % info.world_size:
        raise UserError(f"--batch-size {args.batch_size} is not divisible by the {info.world_size} processes")
    return Compute(device, resolve_amp(args.amp, device), info)


@dataclass
class InputPipeline:
    """Where images become model input: in the DataLoader workers (the datasets' transforms, then a copy) or on
    the device (the workers read file bytes, ``raw``; the preprocessors decode, resize and augment). The
    evaluation side is ``scoring``'s, as validate.py and infer.py set it up (src/scoring.py)."""
    train_tf: Callable | None
    val_tf: Callable | None
    raw: bool
    train_pre: Preprocess
    eval_pre: Preprocess
    scoring: ScoringSetup


def input_pipeline(args: argparse.Namespace, device: torch.device) -> InputPipeline:
    """--gpu-pipeline: on, off, or auto (on when training on CUDA)."""
    scoring = scoring_setup(device, args.image_size, args.workers, args.gpu_pipeline)
    if scoring.on_device:
        if args.skip_bad_images:
            raise UserError("--skip-bad-images needs the CPU input pipeline: add --gpu-pipeline off")
        from src.data.gpu_pipeline import GpuTrainPreprocess  # lazy: loads the GPU decode
        return InputPipeline(None, None, True, GpuTrainPreprocess(args.image_size, device), scoring.preprocess(),
                             scoring)
    return InputPipeline(train_transform(args.image_size), scoring.transform(), False, to_device(device),
                         scoring.preprocess(), scoring)


# ----------------------------------------------------------------------------- the run


@dataclass(eq=False)
class Run:
    """Everything a training run works with; ``build_run`` makes it."""
    args: argparse.Namespace
    data: Datasets
    compute: Compute
    pipeline: InputPipeline
    learner: Learner  # model (as stepped), loss, optimizer, schedule, scaler, EMA, label store, oracle
    sampler: EpochShuffleSampler
    loader_gen: torch.Generator  # the training DataLoader's: seeds its workers
    train_loader: Any
    eval_set: MultiLabelImages  # the test set, or the held-out part of the training list (--val-split)
    eval_idx: list[int]
    weights: str = ""  # one line saying what the model starts from ("" on a resume: the checkpoint's)
    frozen: FrozenBackbone | None = None  # --freeze-backbone: the full model and its features
    full_labels: torch.Tensor | None = None  # N x C full labels of the training list (--oracle-list), on the CPU

    @property
    def model(self) -> nn.Module:
        """The full model (with --freeze-backbone the learner steps only its classifier)."""
        return self.frozen.model if self.frozen is not None else self.learner.plain

    def scored_models(self) -> dict[str, nn.Module]:
        """What ``evaluate`` scores each epoch: the model and its EMA (with --freeze-backbone: their classifiers,
        on the features)."""
        return {"model": self.learner.plain, "ema": self.learner.ema.module}

    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA model's full state dict (with --freeze-backbone: the backbone and the EMA classifier)."""
        ema = self.learner.ema.module
        return self.frozen.full_state(ema) if self.frozen is not None else ema.state_dict()

    def load_ema(self, state: dict[str, torch.Tensor], source: str) -> None:
        ema = self.learner.ema.module
        load_weights(ema, self.frozen.head_state(state) if self.frozen is not None else state, source)

    @property
    def held_out(self) -> bool:
        return self.eval_set is not self.data.test

    @property
    def last_epoch(self) -> int:
        return min(self.args.stop_epoch, self.args.epochs - 1)

    @property
    def train_loader_drops_one(self) -> bool:
        """Whether each epoch leaves out a last batch of one image (``_single_last_batch``)."""
        return _single_last_batch(self.args, self.sampler, self.compute.info)

    @property
    def out_dir(self) -> Path:
        return run_folder(self.args, self.data)

    @functools.cached_property
    def identity(self) -> dict:
        """What a checkpoint records about its data: the training list's and the test set's fingerprints, the
        training list's path, the classes."""
        data = self.data
        return {"train_list": str(data.train_list), "train_fingerprint": list_fingerprint(data.train.entries),
                "test_source": data.test.source, "test_fingerprint": list_fingerprint(data.test.entries),
                "num_classes": data.num_classes, "class_names": data.class_names}

    def start_epoch(self, epoch: int) -> None:
        """Everything random in epoch ``epoch`` follows from (--seed, epoch, rank), so a resume repeats it; a
        sample's CPU augmentation from (--seed, epoch, sample index) only, so -j does not change it."""
        seed = self.args.seed * 100_003 + epoch + 7919 * self.compute.info.rank
        random_seed(seed % 2**32)  # python, numpy and torch
        self.loader_gen.manual_seed(seed)
        self.data.train.set_augment_epoch(self.args.seed, epoch)
        if hasattr(self.pipeline.train_pre, "generator"):  # the GPU pipeline draws its augmentation from its own
            self.pipeline.train_pre.generator.manual_seed(seed)
        self.sampler.set_epoch(epoch)

    @property
    def per_rank_batch(self) -> int:
        return self.args.batch_size // self.compute.info.world_size

    def train_batches(self) -> Prefetcher | FeatureBatches:
        """This epoch's training batches, prepared on the device one batch ahead of the step (with
        --freeze-backbone: rows of the training features, in the sampler's order)."""
        if self.frozen is not None:
            features, seen = self.features(self.data.train)
            return FeatureBatches(features, seen, list(self.sampler), self.per_rank_batch, len(self.train_loader))
        return Prefetcher(self.train_loader, self.pipeline.train_pre, self.compute.device)

    def evaluate(self, models: dict[str, nn.Module], desc: str, dataset: MultiLabelImages | None = None
                 ) -> Evaluation:
        """``engine.evaluate`` of ``models`` on the evaluation set, or on all of ``dataset`` (with
        --freeze-backbone: of classifiers, on the features)."""
        targets, also = dataset.targets_matrix() if dataset is not None else None, None
        if dataset is None:
            dataset, targets, also = self.eval_set, *self._held_out_targets()
        indices = self.eval_idx if dataset is self.eval_set else range(len(dataset))
        if self.frozen is not None:
            features, seen = self.features(dataset)
            batches = FeatureBatches(features, seen, ShardSampler(list(indices), self.compute.info).indices,
                                     self.per_rank_batch)
        else:
            batches = self._eval_batches(dataset, indices)
        return evaluate(models, batches, targets, self.compute, self.args.thre, desc, rows=indices, also=also)

    def _held_out_targets(self) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """The evaluation set's targets (--val-split-labels: the held-out images' observed or full labels) and,
        with the full labels known (--oracle-list), both, to log beside them."""
        observed = self.eval_set.targets_matrix()
        if not self.held_out or self.full_labels is None:
            return observed, None
        both = {"observed": observed, "full": self.full_labels}
        return both[self.args.val_split_labels], both

    def _eval_batches(self, dataset: MultiLabelImages, indices) -> Prefetcher:
        """``dataset[indices]`` through the evaluation transform, this rank's shard, on the device."""
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.per_rank_batch, sampler=ShardSampler(list(indices), self.compute.info),
            num_workers=self.pipeline.scoring.workers, collate_fn=collate_multilabel,
            worker_init_fn=_worker_ignores_sigterm, pin_memory=self.pipeline.scoring.pin_memory)
        return Prefetcher(loader, self.pipeline.eval_pre, self.compute.device)

    def features(self, dataset: MultiLabelImages) -> tuple[torch.Tensor, torch.Tensor]:
        """--freeze-backbone: the backbone features of the test set, or of the whole training list (the held-out
        part of --val-split included), without augmentation."""
        if dataset.entries is self.data.test.entries:
            key, source = "test", self.data.test
        else:
            key, source = "train", copy.copy(self.data.train)
            source.transform = self.data.test.transform  # the evaluation transform: no augmentation
        return self.frozen.features(key, lambda: self._eval_batches(source, range(len(source))), len(source))


def _worker_ignores_sigterm(worker_id: int) -> None:
    """A DataLoader worker leaves SIGTERM to the main process, which shuts the workers down as it stops: a
    scheduler signals the whole process group, and torch's workers would die of it and fill the log with the
    main process's complaint about them."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def build_run(args: argparse.Namespace, data: Datasets, compute: Compute, pipeline: InputPipeline,
              resuming: bool = False) -> Run:
    """The run the flags describe on ``data`` (built with ``pipeline``'s transforms): loaders, the model with its
    starting weights (--pretrained; none when ``resuming``: the checkpoint's come later), EMA, optimizer, schedule,
    scaler, loss, label store, oracle."""
    train_idx, eval_set, eval_idx = _evaluation_split(args, data)
    sampler = EpochShuffleSampler(train_idx, compute.info, args.seed)
    loader_gen = torch.Generator()
    train_loader = torch.utils.data.DataLoader(
        data.train, batch_size=args.batch_size // compute.info.world_size, sampler=sampler,
        num_workers=pipeline.scoring.workers, drop_last=_single_last_batch(args, sampler, compute.info),
        collate_fn=collate_multilabel, worker_init_fn=_worker_ignores_sigterm,
        pin_memory=pipeline.scoring.pin_memory, generator=loader_gen, persistent_workers=False)
    if args.max_steps_per_epoch:
        train_loader = _Truncated(train_loader, args.max_steps_per_epoch)
    random_seed(args.seed % 2**32)  # the model's initialisation
    model, weights = _initial_model(args, data.num_classes, resuming)
    full = full_labels(args, data.train) if args.oracle_list else None
    learner = _learner(args, model, data.train, compute, len(train_loader), full)
    frozen = FrozenBackbone(model, compute) if args.freeze_backbone else None
    return Run(args, data, compute, pipeline, learner, sampler, loader_gen, train_loader, eval_set, eval_idx,
               weights, frozen, full)


def _single_last_batch(args, sampler: EpochShuffleSampler, info: DistInfo) -> bool:
    """True when each epoch would end in a batch of one image per process, which is then left out (drop_last):
    BatchNorm cannot train on one image once the feature map is 1 x 1 (inputs up to 63 px for a ResNet), and a
    one-image batch norm is degenerate at any size. The official DataLoader keeps every batch (drop_last=False);
    the sampler reshuffles every epoch, so a different image sits out each time."""
    return len(sampler) % (args.batch_size // info.world_size) == 1 and len(sampler) > 1


def _evaluation_split(args, data: Datasets) -> tuple[list[int], MultiLabelImages, list[int]]:
    """(training indices, evaluation set, its indices): the held-out part of the list with --val-split, else the
    test set."""
    try:
        train_idx, held_idx = split_holdout(len(data.train), args.val_split, args.split_seed) if args.val_split \
            else (list(range(len(data.train))), [])
    except ValueError as e:
        raise UserError(f"--val-split {args.val_split}: {e}") from None
    if args.batch_size > len(train_idx) and not args.allow_small_data:
        raise UserError(f"--batch-size {args.batch_size} is larger than the training set ({len(train_idx)} images "
                        f"of {data.train_list}): each epoch would be a single step; lower --batch-size or pass "
                        "--allow-small-data")
    if not held_idx:
        return train_idx, data.test, list(range(len(data.test)))
    eval_set = copy.copy(data.train)
    eval_set.transform = data.test.transform
    return train_idx, eval_set, held_idx


def _initial_model(args, num_classes: int, resuming: bool) -> tuple[nn.Module, str]:
    if resuming:
        return create_model(args.model_name, num_classes), ""
    try:
        return create_model_with_weights(args.model_name, num_classes, args.pretrained, args.image_size)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(f"--pretrained {args.pretrained}: {e}") from None


def _learner(args, model: nn.Module, train_set: MultiLabelImages, compute: Compute, steps_per_epoch: int,
             full: torch.Tensor | None) -> Learner:
    """The model on the device, its EMA, Adam with weight decay on weights only, OneCycle stepped per batch, the
    GradScaler (fp16 only), the loss, the DDP / compile wrappers, the label store and the oracle. With
    --freeze-backbone all of these but the label store and the oracle are the classifier's alone."""
    device = compute.device
    model = place_model(model, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    if args.freeze_backbone:
        try:
            model = freeze(model)  # the classifier: what trains
        except ValueError as e:
            raise UserError(f"--freeze-backbone --model-name {args.model_name}: {e}") from None
    ema = ModelEmaV3(model, decay=args.ema_decay)
    optimizer = torch.optim.Adam(param_groups_weight_decay(model, weight_decay=args.weight_decay), lr=args.lr,
                                 **({"fused": True} if device.type == "cuda" else {}))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                    steps_per_epoch=steps_per_epoch, pct_start=0.2)
    scaler = torch.amp.GradScaler(device.type, enabled=compute.amp_dtype == torch.float16)
    criterion = build_loss(args.loss, **_loss_kwargs_with_data(args))
    step_model: nn.Module = model
    if compute.info.enabled:
        step_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                         else None)
    if args.compile:
        step_model = torch.compile(step_model)
    loss_scale = float(compute.info.world_size) if getattr(criterion, "reduction", "sum") == "sum" else 1.0
    label_store = train_set.targets_matrix().to(device)
    oracle = _oracle(args, full, label_store, device) if full is not None else None
    return Learner(step_model, criterion, optimizer, scheduler, scaler, ema, label_store, compute, loss_scale, oracle)


@dataclass
class RunState:
    """Where a run stands (saved in last.ckpt): the last finished epoch, the steps taken, every epoch's metrics
    row, and the best result so far ({"map", "epoch", "which": "model" or "ema"})."""
    epoch: int = -1
    global_step: int = 0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"map": -1.0})

    def record(self, row: dict, steps: int) -> bool:
        """Add an epoch's row (``steps`` taken); True when its selected model beats the best so far."""
        self.global_step += steps
        score = selected_map(row)
        improved = score > self.best["map"]
        if improved:
            self.best = {"map": score, "epoch": row["epoch"], "which": row["selected"]}
        self.history.append(row)
        self.epoch = row["epoch"]
        return improved


# ----------------------------------------------------------------------------- the epoch loop

class TrainingDiverged(UserError):
    """A diverged or collapsed model, or a non-finite loss: one line, exit status 2; its epoch is not committed."""


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler's stop, a preemption): the run stops where it is. ``folder``: its run folder,
    once known."""
    folder: Path | None = None


EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, as a process killed by SIGTERM reports to its shell


def run_training(parser: argparse.ArgumentParser, args: argparse.Namespace, build_datasets: BuildDatasets) -> dict:
    """Train as the flags say, evaluating model and EMA after every epoch; return the best result."""
    check_args(parser, args)
    info = init_distributed("cuda" if args.device.startswith("cuda") or
                            (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        with _sigterm_stops_the_run(), report_user_errors(), contextlib.ExitStack() as held:  # a UserError:
            return _run(args, build_datasets, info, held)  # one line, exit status 2
    except PretrainedUnavailable as e:
        parser.exit(2, f"{e}\n")
    except Terminated as e:
        _end_workers()
        if info.is_main:
            print(_terminated_line(e.folder), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_TERMINATED) from None
    finally:
        cleanup(info)


class _SigtermGate:
    """SIGTERM raises Terminated at once, but inside ``deferred()`` (an epoch's commit) only at its end: torch.save's
    zip writer interrupted mid-file raises its own error instead, and a commit that finishes saves the epoch."""

    def __init__(self):
        self.depth, self.pending = 0, False

    def handler(self, signum, frame) -> None:
        if self.depth:
            self.pending = True
            return
        raise Terminated()

    @contextlib.contextmanager
    def deferred(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending:
            self.pending = False
            raise Terminated()


_SIGTERM = _SigtermGate()


@contextlib.contextmanager
def _sigterm_stops_the_run():
    """SIGTERM raises Terminated in the main thread (Python's default would end the process without a word).
    Stopping at any instant is safe: an epoch is committed by last.ckpt (EPOCH_WRITES), atomic writes remove
    their temporary, and the folder lock goes with the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _SIGTERM.handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _terminated_in(folder: Path):
    """Give a Terminated raised inside the run folder it stopped."""
    try:
        yield
    except Terminated as e:
        e.folder = folder
        raise


def _end_workers() -> None:
    """End the DataLoader workers still alive as the run stops on SIGTERM: they ignore SIGTERM
    (``_worker_ignores_sigterm``), so the DataLoader's own shutdown, which falls back on SIGTERM, cannot end one
    that is blocked, and the interpreter would wait for it at exit."""
    for child in multiprocessing.active_children():
        child.kill()
        child.join()


def _terminated_line(folder: Path | None) -> str:
    if folder is None:
        return "stopped by SIGTERM before the run folder was opened: nothing was written"
    if (folder / "last.ckpt").exists():
        return (f"stopped by SIGTERM: {folder / 'last.ckpt'} (the last committed epoch) is intact; continue the run "
                "with the same command and --resume auto")
    return (f"stopped by SIGTERM before the first epoch of {folder} was committed; start it again with the same "
            "command and --resume auto")


def _run(args, build_datasets: BuildDatasets, info: DistInfo, held: contextlib.ExitStack) -> dict:
    """DeiT's main: build the run, restore it when resuming, then train and evaluate epoch by epoch."""
    compute = resolve_compute(args, info)
    _torchrun_hint(args, compute)
    pipeline = input_pipeline(args, compute.device)
    data = _checked(args, build_datasets(args, pipeline.train_tf, pipeline.val_tf, pipeline.raw))
    held.enter_context(_terminated_in(run_folder(args, data)))
    resume_path = open_run_folder(args, data, info, held)
    run = build_run(args, data, compute, pipeline, resuming=resume_path is not None)
    state = _restore(run, resume_path) if resume_path is not None else RunState()
    if state.epoch >= run.last_epoch:
        log(info, f"already finished at epoch {state.epoch} (best mAP {state.best['map']:.2f} in "
                  f"{run.out_dir / 'best.ckpt'})")
        return dict(state.best)
    _begin(run, state)
    progress = Progress(run.last_epoch, args.print_freq)
    for epoch in range(state.epoch + 1, run.last_epoch + 1):
        start = time.perf_counter()
        row = _train_and_evaluate(run, epoch, progress)
        _stop_if_diverged(run, state, row)
        improved = state.record(row, len(run.train_loader))
        if info.is_main:
            _write_epoch(run, state, row, improved)
            print(_epoch_line(row, state.best, run.last_epoch), flush=True)
        barrier(info)
        progress.overhead_s = time.perf_counter() - start - row["train_seconds"]  # evaluation and writing
    result = dict(state.best)
    if run.held_out and state.best["map"] >= 0:
        result["test"] = _score_best_on_test(run, state.epoch)
    log(info, _closing_line(run, state.best))
    return result


def _train_and_evaluate(run: Run, epoch: int, progress: Progress) -> dict:
    """One epoch's metrics row: train, then score model and EMA on the evaluation set."""
    start = time.perf_counter()
    run.start_epoch(epoch)
    try:
        stats = train_one_epoch(run.learner, run.train_batches(), epoch, progress)
    except NonFiniteLossError as e:
        raise TrainingDiverged(str(e)) from None
    evaluation = run.evaluate(run.scored_models(), f"eval epoch {epoch}/{run.last_epoch}")
    return {"epoch": epoch, **stats, **evaluation.metrics, "eval_skipped_images": evaluation.skipped,
            "score_spread": evaluation.spread["model"], "seconds": time.perf_counter() - start}


# A run has diverged when an epoch's mean loss is this many times its first step's loss or the lowest epoch
# mean so far, or when the trained model gives every evaluated image the same scores (spread at most
# COLLAPSED_SPREAD in probability; an untrained model's spread is orders of magnitude above it).
LOSS_GROWTH_LIMIT = 100.0
COLLAPSED_SPREAD = 1e-6


def divergence(row: dict, history: list[dict]) -> str | None:
    """Why the epoch of ``row`` shows a diverged or collapsed model, or None. Its mAP means nothing then: with
    equal scores for every image the ranking is arbitrary."""
    loss = row["train_loss"]
    references = [row.get("first_step_loss", float("nan"))] + [r["train_loss"] for r in history]
    lowest = min((r for r in references if r == r and r > 0), default=None)
    if lowest is not None and loss > LOSS_GROWTH_LIMIT * lowest:
        return f"the mean loss {loss:.4g} is {loss / lowest:.0f} times the lowest so far ({lowest:.4g})"
    if row.get("score_spread", 1.0) <= COLLAPSED_SPREAD:
        return (f"the model gives every evaluated image the same scores (spread {row['score_spread']:.2g} "
                f"across images)")
    return None


def _stop_if_diverged(run: Run, state: RunState, row: dict) -> None:
    """Flag a diverged epoch in metrics.jsonl and the epoch line, then stop; its checkpoints are not written (last.ckpt
    stays at the epoch before, best.ckpt never takes a diverged model). Every rank takes the same decision."""
    reason = divergence(row, state.history)
    flag = torch.tensor(float(reason is not None), device=run.compute.device)
    all_reduce_max(flag, run.compute.info)  # the loss is per rank: one rank's divergence stops all
    if not flag.item():
        return
    row["diverged"] = reason or "on another process"
    if run.compute.info.is_main:
        append_row(run.out_dir, row)
        print(_epoch_line(row, state.best, run.last_epoch), flush=True)
    kept = f"last.ckpt (epoch {state.epoch}) and best.ckpt are left as they were" if state.epoch >= 0 else \
        "no checkpoint was written"
    raise TrainingDiverged(f"training diverged at epoch {row['epoch']}: {row['diverged']}; lower --lr (now "
                           f"{run.args.lr:g}); {kept}")


def _torchrun_hint(args, compute: Compute) -> None:
    """Several GPUs and no torchrun: say how to use them all."""
    if not compute.info.enabled and args.device in ("auto", "cuda") and compute.device.type == "cuda" \
            and torch.cuda.device_count() > 1:
        log(compute.info, torchrun_hint([Path(sys.argv[0]).name, *sys.argv[1:]], torch.cuda.device_count()))


def _checked(args, data: Datasets) -> Datasets:
    """The datasets, checked against --num-classes and for emptiness (and their files with --check-images)."""
    if args.num_classes is not None and args.num_classes != data.num_classes:
        raise UserError(f"--num-classes {args.num_classes} disagrees with the data, which has {data.num_classes} "
                        "classes")
    if data.class_names is not None and len(data.class_names) != data.num_classes:
        raise ValueError(f"{len(data.class_names)} class names for {data.num_classes} classes")
    if len(data.train) == 0:
        raise UserError(f"the training list {data.train_list} holds no images")
    if len(data.test) == 0:
        raise UserError(f"the test set ({data.test.source or 'test data'}) holds no images")
    if args.check_images:
        data.train.check_images()
        data.test.check_images()
    return data


def _begin(run: Run, state: RunState) -> None:
    """Write metrics.jsonl (the rows so far) and args.json, and say what is being trained where."""
    info, out_dir, args = run.compute.info, run.out_dir, run.args
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_rows(out_dir, state.history)
        atomic_write_text(out_dir / "args.json", json.dumps(vars(args), indent=1, default=str) + "\n")
    if run.weights:
        log(info, run.weights)
    if run.train_loader_drops_one:
        log(info, f"each epoch leaves out its last batch, of 1 image (BatchNorm cannot train on one image): "
                  f"{len(run.sampler)} images in batches of {args.batch_size // info.world_size} per process")
    log(info, f"train {len(run.sampler.indices)} images ({run.data.train_list}), evaluate on {len(run.eval_idx)} "
              f"({'held-out split' if run.held_out else 'test set'}), {run.data.num_classes} classes, "
              f"{args.model_name}, loss {args.loss}, device {run.compute.device}, amp {run.compute.amp_dtype}, "
              f"world size {info.world_size}, epochs {state.epoch + 1}..{run.last_epoch}, output {out_dir}"
              + (", backbone frozen: the classifier trains on features computed once" if run.frozen else ""))


class _Truncated:
    """A DataLoader cut to its first n batches (--max-steps-per-epoch)."""

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


def full_labels(args, train_set: MultiLabelImages) -> torch.Tensor:
    """N x C full labels of the training list's images, from --oracle-list (aligned by file name)."""
    full_entries = {e.name: e.labels for e in read_label_list(args.oracle_list, train_set.num_classes)}
    full = torch.zeros(len(train_set.entries), train_set.num_classes)
    for i, e in enumerate(train_set.entries):
        labels = full_entries.get(e.name)
        if labels is None:
            raise UserError(f"--oracle-list {args.oracle_list} has no line for training image {e.name}")
        if not set(e.labels) <= set(labels):
            raise UserError(f"--oracle-list {args.oracle_list}: {e.name} has labels {sorted(e.labels)} in the "
                             f"training list that the full list lacks ({sorted(labels)})")
        full[i, list(labels)] = 1
    return full


def _oracle(args, full: torch.Tensor, observed: torch.Tensor, device) -> MissingLabelOracle:
    """How well the training passes find the labels missing from the training list (``full`` N x C)."""
    threshold = args.oracle_threshold
    if threshold is None:
        threshold = (args.tau if args.tau is not None else loss_hyperparameters("SPLC")["tau"]) \
            if args.loss == "SPLC" else 0.5
    return MissingLabelOracle(full=full.to(device), observed=observed.clone(), threshold=threshold)


# ----------------------------------------------------------------------------- checkpoints and outputs


def _restore(run: Run, path: Path) -> RunState:
    """Load last.ckpt into the run's objects, and bring the run folder's record (metrics.jsonl, best.ckpt) to it;
    a mismatch is an error, never a silent fresh start."""
    ckpt = load_checkpoint(path, required=LAST_KEYS, kind="last")
    check_same_run(path, ckpt, run.args)
    check_same_data(path, ckpt, run.identity)
    learner = run.learner
    load_weights(run.model, ckpt["model"], str(path))
    run.load_ema(ckpt["ema"], f"{path} (EMA)")
    try:
        learner.optimizer.load_state_dict(ckpt["optimizer"])
        learner.scheduler.load_state_dict(ckpt["scheduler"])
        learner.scaler.load_state_dict(ckpt["scaler"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: optimizer/scheduler state does not match this run: {e}") from e
    if ckpt["label_store"].shape != learner.label_store.shape:
        raise CheckpointError(f"{path}: label store {tuple(ckpt['label_store'].shape)} does not match the "
                              f"training list {tuple(learner.label_store.shape)}")
    learner.label_store.copy_(ckpt["label_store"])
    set_rng_state(ckpt["rng"])
    if run.compute.info.is_main:
        with _SIGTERM.deferred():
            settle_record(path, run.out_dir, ckpt, run.compute.info)
    if ckpt["epoch"] < run.last_epoch:  # a finished run says only that it is finished (in _run)
        log(run.compute.info, f"resumed from {path}: epoch {ckpt['epoch']} done, continuing at epoch "
                              f"{ckpt['epoch'] + 1}")
    return RunState(ckpt["epoch"], ckpt["global_step"], ckpt["history"], ckpt["best"])


# The order in which an epoch is committed. last.ckpt comes first: it holds the epoch's row (its history) and the
# best record, so a kill at any instant leaves either the previous epoch's last.ckpt (the epoch is trained again)
# or this one's, ahead of which nothing else can be; a resume then brings metrics.jsonl and best.ckpt up to it
# (``run_folder.settle_record``). tests/test_faults.py kills a run at each of these writes.
EPOCH_WRITES = ("last.ckpt", "metrics.jsonl", "best.ckpt")


def _write_epoch(run: Run, state: RunState, row: dict, improved: bool) -> None:
    """Commit an epoch in the order of EPOCH_WRITES: last.ckpt, the metrics row, best.ckpt (when the epoch is
    the best so far), each atomically (the row: appended and fsynced); a SIGTERM meanwhile stops the run after
    them. Only tensors and plain values go in, so that both checkpoints load with torch.load(weights_only=True)."""
    last = _last_checkpoint(run, state)
    with _SIGTERM.deferred():
        save_checkpoint(last, run.out_dir / "last.ckpt")
        append_row(run.out_dir, row)
        if improved:
            save_checkpoint(best_checkpoint(last), run.out_dir / "best.ckpt")


def _last_checkpoint(run: Run, state: RunState) -> dict:
    """What last.ckpt holds: everything an exact resume needs, and what best.ckpt takes from it."""
    args, learner, identity = run.args, run.learner, run.identity
    return {"kind": "last", "model_name": args.model_name, "num_classes": identity["num_classes"],
            "image_size": args.image_size, "class_names": identity["class_names"], "args": plain(vars(args)),
            "model": run.model.state_dict(), "ema": run.ema_state_dict(),
            "optimizer": learner.optimizer.state_dict(), "scheduler": learner.scheduler.state_dict(),
            "scaler": learner.scaler.state_dict(), "epoch": state.epoch, "global_step": state.global_step,
            "history": plain(state.history), "best": plain(state.best),
            "label_store": learner.label_store.cpu(), "rng": rng_state(),
            "train_list": identity["train_list"], "train_fingerprint": identity["train_fingerprint"],
            "test_fingerprint": identity["test_fingerprint"]}


def _epoch_line(row: dict, best: dict, last_epoch: int) -> str:
    line = (f"epoch {row['epoch']}/{last_epoch}  loss {row['train_loss']:.2f}  lr {row['lr']:.2e}  "
            f"mAP {row['map']:.2f}  EMA mAP {row['map_ema']:.2f}  "
            + (f"best {best['map']:.2f} ({best['which']}, epoch {best['epoch']})  " if "which" in best else "")
            + f"CF1 {row['cf1']:.2f} OF1 {row['of1']:.2f}")
    if "missing_recall" in row:
        line += (f"  missing labels: precision {row['missing_precision']:.1f}% recall {row['missing_recall']:.1f}%"
                 f" of {row['missing_count']}, AUROC {row['missing_auroc']:.1f}% "
                 f"top-k precision {row['missing_topk_precision']:.1f}%")
    if row.get("skipped_images"):
        line += f"  skipped {row['skipped_images']} bad images"
    if row.get("eval_skipped_images"):
        line += f"  evaluated without {row['eval_skipped_images']} bad images"
    if row.get("diverged"):
        line += f"  DIVERGED: {row['diverged']}"
    return line + f"  {row['seconds']:.1f}s {format_rate(row['images_per_second'])}"


def _closing_line(run: Run, best: dict) -> str:
    return (f"best mAP {best['map']:.2f} ({best['which']}) at epoch {best['epoch']}/{run.last_epoch}: "
            f"{run.out_dir / 'best.ckpt'}; every epoch's metrics: {run.out_dir / 'metrics.jsonl'}")


def _score_best_on_test(run: Run, last_epoch: int) -> dict:
    """Score best.ckpt once on the test set, and the last epoch's model and EMA (still in memory) beside it:
    test_metrics.json holds the best checkpoint's metrics and, under "last_epoch", {"epoch", "map",
    "map_ema"}. Every rank takes part in the passes; rank 0 writes."""
    last = run.evaluate(run.scored_models(), "test, last epoch", run.data.test).metrics
    path = run.out_dir / "best.ckpt"
    best = load_checkpoint(path)
    load_weights(run.model, best["model"], str(path))
    result = run.evaluate({"best": run.learner.plain}, "test", run.data.test).metrics  # frozen: the classifier
    result["last_epoch"] = {"epoch": last_epoch, "map": last["map"], "map_ema": last["map_ema"]}
    if run.compute.info.is_main:
        atomic_write_text(run.out_dir / "test_metrics.json", json.dumps(result, indent=1) + "\n")
        print(f"test set, best checkpoint (epoch {best['epoch']}, {best['which']}): mAP {result['map']:.2f}",
              flush=True)
    return result
