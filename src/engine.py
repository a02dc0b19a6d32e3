"""One training epoch and one evaluation pass, shared by train.py and train_nus.py (DeiT's engine.py).

Inside the step there are no host syncs: the running loss, the first non-finite step and the
missing-label counts stay on the device and are read only when a progress line is printed and at the
epoch's end. Batches arrive model-ready: the caller wraps its loader in ``src.data.prefetch.Prefetcher``
(batch k+1 is decoded, resized, augmented and copied on a thread and a side CUDA stream while batch k
trains).
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from timm.utils import unwrap_model as unwrap
from torch import nn
from tqdm import tqdm

from src.distributed import DistInfo, all_reduce_max, all_reduce_sum
from src.errors import UserError
from src.metrics import (mAP, missing_label_counts, missing_label_ranking, missing_label_stats_from_counts,
                         threshold_metrics)

__all__ = ["Preprocess", "NonFiniteLossError", "Compute", "resolve_device", "resolve_amp", "MissingLabelOracle", "Learner", "Progress",
           "Evaluation", "score_spread", "select_model", "selected_map", "autocast", "unwrap", "to_device", "train_one_epoch", "predict",
           "evaluate"]

Preprocess = Callable[[object], torch.Tensor]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or inf loss."""


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision context: bf16 or fp16 autocast, or nothing when dtype is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(device: torch.device) -> Preprocess:
    """Preprocess for CPU-pipeline batches (float tensors already): copy to the device, channels_last on CUDA."""
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def preprocess(images: torch.Tensor) -> torch.Tensor:
        return images.to(device, non_blocking=True, memory_format=fmt)
    return preprocess


@dataclass
class Compute:
    """Where a run computes: the device, the autocast dtype (None = full precision), the torchrun processes."""
    device: torch.device
    amp_dtype: torch.dtype | None = None
    info: DistInfo = field(default_factory=DistInfo)

    def autocast(self):
        return autocast(self.device, self.amp_dtype)


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """--device to a torch.device: 'auto' is CUDA when present; under torchrun, CUDA is this process's local GPU.
    UserError when CUDA is asked for and missing."""
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


@dataclass
class MissingLabelOracle:
    """Full labels of the training images, for measuring how well the model finds the missing ones.

    full, observed: N x C {0,1} tensors on the training device, indexed by dataset index. Every figure is
    measured on the training-mode forward passes of the epoch (the scores the loss, e.g. SPLC's correction,
    sees: augmented images, BatchNorm in training mode, the weights before each step's update):

    - missing_precision / missing_recall: at p > threshold, counted batch by batch;
    - missing_auroc / missing_topk_precision (``src.metrics.missing_label_ranking``): threshold-free, over the
      N x C sigmoid scores collected by sample index during the epoch. Images the epoch did not visit
      (--max-steps-per-epoch, the held-out part of --val-split, bad images skipped) are left out. Under torchrun
      the ranks' scores are combined by an element-wise max: each image is visited by one rank, except the few
      that the sampler repeats to even out the ranks, which keep the larger of their two scores.
    """
    full: torch.Tensor
    observed: torch.Tensor
    threshold: float


@dataclass
class Learner:
    """What a training step uses and updates besides the batch (``src.trainer.build_run`` makes one).

    ``model`` is what the step calls: the model, or its DistributedDataParallel / torch.compile wrapper
    (``plain`` sees through them). Targets come from ``label_store[indices]`` (N x C, on the device), so that
    a loss that updates labels (``criterion.updates_labels``, e.g. LL-Cp) writes its flips back for the rest of
    training. ``loss_scale`` multiplies a summed loss under DDP so that the averaged gradient equals the
    single-process gradient of the sum over the global batch.
    """
    model: nn.Module
    criterion: Callable
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    ema: object  # .update(model) and .module (timm's ModelEmaV3)
    label_store: torch.Tensor
    compute: Compute
    loss_scale: float = 1.0
    oracle: MissingLabelOracle | None = None

    @property
    def plain(self) -> nn.Module:
        """The model inside the torch.compile and DistributedDataParallel wrappers."""
        return unwrap(self.model)


def _format_seconds(seconds: float) -> str:
    seconds = max(int(seconds + 0.5), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_rate(images_per_second: float) -> str:
    """'412 img/s', '3.5 img/s', '0.42 img/s': two significant figures below 10 (a slow CPU never reads 0)."""
    r = images_per_second
    return f"{r:.0f} img/s" if r >= 10 else f"{r:.1f} img/s" if r >= 1 else f"{r:.2g} img/s"


def format_duration(seconds: float) -> str:
    """A rough duration for estimates: '40 minutes', '3.5 hours', '2.1 days', '6.3 weeks'."""
    for unit, size in (("weeks", 7 * 86400), ("days", 86400), ("hours", 3600)):
        if seconds >= 1.5 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{max(seconds / 60, 1):.0f} minutes"


def usable_terminal(stream=None) -> bool:
    """Whether ``stream`` (stdout) is a terminal with room for a bar: a zero-size one (some containers and CI
    pseudo-terminals) shows no tqdm bar at all, so it gets the plain lines instead."""
    stream = sys.stdout if stream is None else stream
    if not stream.isatty():
        return False
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError):
        return False


# A CPU run whose whole schedule is estimated above this gets one warning line with the estimate (the paper's
# recipe takes weeks on a CPU); estimated after the first CPU_ESTIMATE_STEPS steps, or the first step taking
# longer than CPU_ESTIMATE_AFTER_S.
CPU_WARN_RUN_S = 2 * 3600
CPU_ESTIMATE_STEPS = 3
CPU_ESTIMATE_AFTER_S = 20.0


def cpu_estimate_line(per_step_s: float, steps: int, epochs: int) -> str | None:
    """The CPU warning: the epoch and run times at ``per_step_s`` seconds a step (``steps`` a step per epoch,
    ``epochs`` epochs), or None when the run is estimated under CPU_WARN_RUN_S."""
    epoch_s = per_step_s * steps
    if epoch_s * epochs < CPU_WARN_RUN_S:
        return None
    return (f"warning: this runs on the CPU: about {format_duration(epoch_s)} an epoch ({steps} steps at "
            f"{per_step_s:.1f} s), {format_duration(epoch_s * epochs)} for the {epochs} epochs. Use a GPU, or a "
            f"quick try: --pretrained none --model-name resnet10t --image-size 64 -b 32 --epochs 3 (docs/data.md)")


@dataclass
class Progress:
    """How ``train_one_epoch`` reports, on the main process only.

    On a terminal: a tqdm bar labelled ``train epoch e/last`` with the loss, read every ``print_freq`` steps and
    at least every ``bar_interval_s`` seconds. Otherwise a line every ``print_freq`` steps and at least every
    ``interval_s`` seconds, with images/s and the time left in the
    epoch and in the run (``last_epoch`` epochs; ``overhead_s`` per epoch outside training, i.e. evaluation
    and checkpoints, as last measured by the caller). Epochs and steps are 0-based indices shown with the last
    index, as metrics.jsonl and --stop-epoch count them. Each line reads the loss: one host sync.
    """
    last_epoch: int
    print_freq: int = 64
    interval_s: float = 30.0
    bar_interval_s: float = 1.0
    overhead_s: float = 0.0
    terminal: bool | None = None  # None: stdout is a usable terminal (``usable_terminal``)
    cpu_estimated: bool = False  # the CPU warning has been considered (once per run)

    def on_terminal(self) -> bool:
        return usable_terminal() if self.terminal is None else self.terminal

    def estimate_on_cpu(self, meter: "_EpochMeter", step: int) -> None:
        """Once per run, after the first steps of an epoch on the CPU: print ``cpu_estimate_line`` if any."""
        elapsed = time.perf_counter() - meter.start
        if self.cpu_estimated or (step + 1 < min(CPU_ESTIMATE_STEPS, meter.steps) and elapsed < CPU_ESTIMATE_AFTER_S):
            return
        self.cpu_estimated = True
        epochs_left = self.last_epoch - meter.epoch + 1
        line = cpu_estimate_line(elapsed / (step + 1), meter.steps, epochs_left)
        if line:
            print(line, file=sys.stderr, flush=True)

    def due(self, step: int, meter: "_EpochMeter") -> bool:
        interval = self.bar_interval_s if self.on_terminal() else self.interval_s
        return (step % self.print_freq == 0 or step == meter.steps - 1
                or time.perf_counter() - meter.last_line >= interval)

    def report(self, bar, meter: "_EpochMeter", step: int, loss: float, lr: float) -> None:
        """A step line off a terminal, the bar's postfix on one (the bar shows rate and time left itself)."""
        if bar.disable:
            print(self.step_line(meter, step, loss, lr), flush=True)
        else:
            bar.set_postfix_str(f"loss {loss:.1f}")

    def step_line(self, meter: "_EpochMeter", step: int, loss: float, lr: float) -> str:
        elapsed = time.perf_counter() - meter.start
        per_step, epoch, steps = elapsed / (step + 1), meter.epoch, meter.steps
        epoch_left = per_step * (steps - step - 1)
        run_left = epoch_left + self.overhead_s + (self.last_epoch - epoch) * (per_step * steps + self.overhead_s)
        return (f"train epoch {epoch}/{self.last_epoch}  step {step}/{steps - 1}  loss {loss:.1f}  lr {lr:.1e}  "
                f"{format_rate(meter.images * meter.world_size / max(elapsed, 1e-9))}  "
                f"ETA epoch {_format_seconds(epoch_left)}, run {_format_seconds(run_left)}")


class _EpochMeter:
    """The epoch's running figures; the tensors stay on the device until read."""

    def __init__(self, epoch: int, steps: int, device: torch.device, world_size: int):
        self.epoch, self.steps = epoch, steps
        self.loss_sum = torch.zeros((), device=device)
        self.first_loss: torch.Tensor | None = None  # the epoch's first step's loss: a reference for divergence
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.missing_counts = torch.zeros(3, device=device)
        self.scores: torch.Tensor | None = None  # N x C sigmoid scores by sample index (with an oracle)
        self.visited: torch.Tensor | None = None  # N: 1 where the epoch scored the sample
        self.images, self.skipped, self.world_size = 0, 0, world_size
        self.start = self.last_line = time.perf_counter()

    def add(self, step: int, loss: torch.Tensor, images: int) -> None:
        if self.first_loss is None:
            self.first_loss = loss.clone()
        self.loss_sum += loss
        self.first_bad_step = torch.where((self.first_bad_step < 0) & ~torch.isfinite(loss),
                                          torch.tensor(step, device=loss.device), self.first_bad_step)
        self.images += images

    def check_finite(self) -> None:
        bad = int(self.first_bad_step.item())
        if bad >= 0:
            raise NonFiniteLossError(f"non-finite loss at epoch {self.epoch}, step {bad}; training stopped "
                                     f"(the last checkpoint, from before this epoch, is intact)")


def _train_step(learner: Learner, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> tuple:
    """One optimisation step; returns (loss, logits), both detached, on the device."""
    targets = learner.label_store[indices]
    with learner.compute.autocast():
        logits = learner.model(images)
    logits = logits.float()
    out = learner.criterion(logits, targets, epoch=epoch)
    if getattr(learner.criterion, "updates_labels", False):
        loss, flips = out
        learner.label_store[indices] = torch.maximum(targets, flips.to(targets.dtype))
    else:
        loss = out
    learner.optimizer.zero_grad(set_to_none=True)
    learner.scaler.scale(loss * learner.loss_scale).backward()
    learner.scaler.step(learner.optimizer)
    learner.scaler.update()
    learner.scheduler.step()
    learner.ema.update(learner.plain)
    return loss.detach(), logits.detach()


def train_one_epoch(learner: Learner, batches: Iterable, epoch: int, progress: Progress | None = None) -> dict:
    """Train for one epoch over ``batches`` ((images on the device, targets, indices, num_skipped), e.g. from a
    ``Prefetcher``); return the epoch's statistics. ``progress`` None: silent, the loss checked at the end."""
    compute = learner.compute
    learner.model.train()
    steps = len(batches)  # type: ignore[arg-type]
    meter = _EpochMeter(epoch, steps, compute.device, compute.info.world_size)
    show = progress is not None and compute.info.is_main
    bar = tqdm(batches, total=steps, leave=False, desc=f"train epoch {epoch}/{progress.last_epoch}" if show else "",
               disable=not (show and progress.on_terminal()))
    for step, (images, _targets, indices, num_skipped) in enumerate(bar):
        meter.skipped += num_skipped
        if len(indices) == 0:  # every image of the batch was bad and skipped
            continue
        indices = indices.to(compute.device, non_blocking=True)
        lr = learner.scheduler.get_last_lr()[0]  # the step's own lr: the scheduler steps inside _train_step
        loss, logits = _train_step(learner, images, indices, epoch)
        meter.add(step, loss, images.shape[0])
        if show and compute.device.type == "cpu":
            progress.estimate_on_cpu(meter, step)
        if learner.oracle is not None:
            _observe_missing(meter, learner.oracle, indices, torch.sigmoid(logits))
        if progress is not None and progress.due(step, meter):
            meter.check_finite()  # the host sync, only where a line is due
            if show:
                progress.report(bar, meter, step, loss.item(), lr)
            meter.last_line = time.perf_counter()
    seconds = time.perf_counter() - meter.start
    meter.check_finite()
    return _epoch_stats(learner, meter, seconds)


def _observe_missing(meter: _EpochMeter, oracle: MissingLabelOracle, indices: torch.Tensor,
                     probs: torch.Tensor) -> None:
    """Count the batch's thresholded missing-label hits and keep its scores by sample index (no host sync)."""
    meter.missing_counts += missing_label_counts(oracle.full[indices], oracle.observed[indices], probs,
                                                 oracle.threshold)
    if meter.scores is None:
        meter.scores = torch.zeros(oracle.full.shape, device=probs.device)
        meter.visited = torch.zeros(oracle.full.shape[0], device=probs.device)
    meter.scores[indices] = probs
    meter.visited[indices] = 1.0


def _missing_ranking(oracle: MissingLabelOracle, meter: _EpochMeter, info: DistInfo) -> dict:
    """missing_auroc and missing_topk_precision over the samples the epoch visited (on any rank)."""
    if meter.scores is None:  # no step this epoch on this rank
        meter.scores = torch.zeros(oracle.full.shape, device=oracle.full.device)
        meter.visited = torch.zeros(oracle.full.shape[0], device=oracle.full.device)
    all_reduce_max(meter.scores, info)
    all_reduce_max(meter.visited, info)
    seen = meter.visited > 0
    return missing_label_ranking(oracle.full[seen], oracle.observed[seen], meter.scores[seen])


def _epoch_stats(learner: Learner, meter: _EpochMeter, seconds: float) -> dict:
    info = learner.compute.info
    if getattr(learner.criterion, "updates_labels", False):
        all_reduce_max(learner.label_store, info)  # each rank flipped labels of its own samples
    stats = {"train_loss": meter.loss_sum.item() / max(meter.steps, 1), "lr": learner.scheduler.get_last_lr()[0],
             "train_seconds": seconds, "images_per_second": meter.images * info.world_size / max(seconds, 1e-9),
             "skipped_images": meter.skipped,
             "first_step_loss": meter.first_loss.item() if meter.first_loss is not None else float("nan")}
    if learner.oracle is not None:
        stats.update(missing_label_stats_from_counts(all_reduce_sum(meter.missing_counts, info)))
        stats.update(_missing_ranking(learner.oracle, meter, info))
    return stats


@torch.inference_mode()
def predict(models: dict[str, nn.Module], batches: Iterable, shape: tuple[int, int], compute: Compute,
            desc: str | None = "eval", interval_s: float = 30.0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Sigmoid scores of every model for every sample, in one pass over ``batches`` (as in ``train_one_epoch``).

    ``shape``: (samples N, classes C). Returns ({name: N x C float32 scores on the CPU}, seen: N bool). Each rank
    fills the rows of its own shard (a ShardSampler: no padding, no duplicates) and the rows are summed over
    ranks. ``seen`` marks rows that were evaluated (a bad image skipped with --skip-bad-images is not).
    ``desc``: the tqdm label on a terminal (None: no bar, no lines); off a terminal, a line ``desc  batch k/last
    n img/s`` at least every ``interval_s`` seconds (``_EvalLines``).
    """
    for m in models.values():
        m.eval()
    scores = {name: torch.zeros(*shape, device=compute.device) for name in models}
    seen = torch.zeros(shape[0], device=compute.device)
    bar = tqdm(batches, desc=desc, leave=False,
               disable=desc is None or not (compute.info.is_main and usable_terminal()))
    lines = _EvalLines(desc if compute.info.is_main and bar.disable else None, _length(batches), interval_s)
    for k, (images, _targets, indices, _num_skipped) in enumerate(bar):  # images: preprocessed, on the device
        lines.after(k, len(indices))
        if len(indices) == 0:
            continue
        indices = indices.to(compute.device, non_blocking=True)
        with compute.autocast():
            for name, m in models.items():
                scores[name][indices] = torch.sigmoid(m(images).float())
        seen[indices] = 1
    for t in (*scores.values(), seen):
        all_reduce_sum(t, compute.info)
    keep = seen.cpu() > 0
    return {name: s.cpu() for name, s in scores.items()}, keep


def _length(batches) -> int | None:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:  # a generator underneath
        return None


class _EvalLines:
    """Evaluation's progress off a terminal: a line at least every ``interval_s`` seconds (``desc`` None: none)."""

    def __init__(self, desc: str | None, batches: int | None, interval_s: float):
        self.desc, self.batches, self.interval_s = desc, batches, interval_s
        self.start = self.last = time.perf_counter()
        self.images = 0

    def after(self, k: int, images: int) -> None:
        """Batch ``k`` (0-based) of ``images`` images has been taken from the loader."""
        self.images += images
        now = time.perf_counter()
        if self.desc is None or now - self.last < self.interval_s:
            return
        self.last = now
        rate = self.images / max(now - self.start, 1e-9)
        of = f"/{self.batches - 1}" if self.batches else ""
        print(f"{self.desc}  batch {k}{of}  {format_rate(rate)}", flush=True)


@dataclass
class Evaluation:
    """``metrics``: "map" of the first model, "map_<name>" of every other one, "selected" (with several models:
    the one of highest mAP, a tie going to the later one) and CP, CR, CF1, OP, OR, OF1 of the selected model at
    the threshold. ``scores`` / ``targets``: the selected model's scores and the targets of the evaluated rows,
    ``seen`` (N bool) marking those rows; ``skipped``: rows not evaluated (bad images left out with
    --skip-bad-images); ``spread``: per model, ``score_spread`` of its scores (0: every image scored alike)."""
    metrics: dict
    scores: torch.Tensor
    targets: torch.Tensor
    seen: torch.Tensor
    skipped: int = 0
    spread: dict = field(default_factory=dict)


def score_spread(scores: torch.Tensor) -> float:
    """max over classes of (max - min over images) of N x C scores: 0 when every image gets the same scores
    (a collapsed or diverged model), whose ranking carries no information."""
    if scores.shape[0] == 0:
        return 0.0
    return float((scores.amax(dim=0) - scores.amin(dim=0)).max())


def select_model(maps: dict[str, float]) -> str:
    """The model of highest mAP among ``maps`` (name -> mAP, in the order scored); a tie goes to the later one
    (so with the model and its EMA equal, the EMA)."""
    names = list(maps)
    return max(reversed(names), key=maps.__getitem__)  # max keeps the first: the later model wins a tie


def selected_map(row: dict) -> float:
    """The mAP of the model an ``evaluate`` row selected ("map" is the first model's, "map_<name>" the others')."""
    which = row.get("selected", "model")
    return float(row["map"] if which == "model" else row[f"map_{which}"])


def _maps(names: Sequence[str], targets: torch.Tensor, scores: dict, seen: torch.Tensor,
          suffix: str = "") -> dict[str, float]:
    """{"map<suffix>": first model's mAP, "map_<name><suffix>": the others'} on the ``seen`` rows."""
    maps = {name: map_said_once(targets[seen], scores[name][seen]) for name in names}
    return {f"map{suffix}": maps[names[0]], **{f"map_{n}{suffix}": maps[n] for n in names[1:]}}


_SAID: set[str] = set()  # warnings of map_said_once already printed in this process


def map_said_once(targets: torch.Tensor, scores: torch.Tensor) -> float:
    """``mAP``, its warning (classes with no positive target) printed as one line on stderr the first time
    only. Python's own once-per-place rule does not hold here: every ``warnings.catch_warnings`` (each image
    decode enters one) resets it, so a small validation set repeated the warning, with its source line, at
    every evaluation."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = mAP(targets, scores)
    for w in caught:
        text = str(w.message)
        if text not in _SAID:
            _SAID.add(text)
            print(f"warning: {text}", file=sys.stderr, flush=True)
    return value


def evaluate(models: dict[str, nn.Module], batches: Iterable, targets: torch.Tensor, compute: Compute,
             threshold: float = 0.5, desc: str | None = "eval", rows: Sequence[int] | None = None,
             also: dict[str, torch.Tensor] | None = None) -> Evaluation:
    """Score ``models`` on ``batches`` (``targets``: N x C of the whole set) and compute the metrics. ``rows``:
    the rows the batches should cover (default: all); those not scored (bad images) are counted as skipped.
    ``also``: other targets of the same rows ({label: N x C}), each giving "map_<label>" and
    "map_<name>_<label>" beside the metrics of ``targets``."""
    scores, seen = predict(models, batches, tuple(targets.shape), compute, desc)
    wanted = seen if rows is None else seen[torch.as_tensor(list(rows), dtype=torch.long)]
    names = list(models)
    metrics: dict = _maps(names, targets, scores, seen)
    for label, other in (also or {}).items():
        metrics.update(_maps(names, other, scores, seen, f"_{label}"))
    maps = {name: metrics["map" if name == names[0] else f"map_{name}"] for name in names}
    selected = select_model(maps)
    targets = targets[seen]
    if len(names) > 1:
        metrics["selected"] = selected
    metrics.update(threshold_metrics(targets, scores[selected][seen], threshold))
    return Evaluation(metrics, scores[selected][seen], targets, seen, skipped=int((~wanted).sum()),
                      spread={name: score_spread(s[seen]) for name, s in scores.items()})
