"""One training epoch and one evaluation pass, shared by train.py and train_nus.py (DeiT's engine.py).

Inside the step there are no host syncs: the running loss, the first non-finite step and the
missing-label counts stay on the device and are read every --print-freq steps and at the epoch's end.
Batches come through ``src.data.prefetch.Prefetcher``: batch k+1 is preprocessed (decoded, resized,
augmented, copied) on a thread and a side CUDA stream while batch k trains.
"""
from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from src.data.prefetch import Prefetcher
from src.distributed import DistInfo, all_reduce_max, all_reduce_sum
from src.metrics import missing_label_counts, missing_label_stats_from_counts

Preprocess = Callable[[object], torch.Tensor]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or inf loss."""


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision context: bf16 or fp16 autocast, or nothing when dtype is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile and DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def to_device(device: torch.device) -> Preprocess:
    """Preprocess for CPU-pipeline batches (float tensors already): copy to the device, channels_last on CUDA."""
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def preprocess(images: torch.Tensor) -> torch.Tensor:
        return images.to(device, non_blocking=True, memory_format=fmt)
    return preprocess


@dataclass
class MissingLabelOracle:
    """Full labels of the training images, for measuring how well the model finds the missing ones.

    full, observed: N x C {0,1} tensors on the training device, indexed by dataset index.
    """
    full: torch.Tensor
    observed: torch.Tensor
    threshold: float


def train_one_epoch(model: nn.Module, criterion: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    scheduler, scaler: torch.amp.GradScaler, ema, *, epoch: int, num_epochs: int,
                    device: torch.device, amp_dtype: torch.dtype | None, preprocess: Preprocess,
                    label_store: torch.Tensor, info: DistInfo, loss_scale: float = 1.0,
                    oracle: MissingLabelOracle | None = None, print_freq: int = 64,
                    progress: bool = True, prefetch: int = 1) -> dict:
    """Train for one epoch; return the epoch's statistics.

    Targets come from ``label_store[indices]`` (N x C, on the device), so that a loss that updates labels
    (``criterion.updates_labels``, e.g. LL-Cp) writes its flips back for the rest of training. The model's
    output is cast to float32 before the loss; ``loss_scale`` multiplies a summed loss under DDP so that
    the averaged gradient equals the single-process gradient of the sum over the global batch.
    ``prefetch``: batches preprocessed ahead of the step (``Prefetcher``; 0 = in the loop, no overlap).
    """
    model.train()
    steps = len(loader)
    loss_sum = torch.zeros((), device=device)
    first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
    missing_counts = torch.zeros(3, device=device)
    images_seen, skipped = 0, 0
    updates_labels = getattr(criterion, "updates_labels", False)
    start = time.perf_counter()
    bar = tqdm(Prefetcher(loader, preprocess, device, prefetch), total=steps, desc=f"train {epoch}", leave=False,
               disable=not (progress and info.is_main and sys.stdout.isatty()))
    for step, (images, _targets, indices, num_skipped) in enumerate(bar):  # images: preprocessed, on the device
        skipped += num_skipped
        if len(indices) == 0:  # every image of the batch was bad and skipped
            continue
        indices = indices.to(device, non_blocking=True)
        targets = label_store[indices]
        with autocast(device, amp_dtype):
            logits = model(images)
        logits = logits.float()
        out = criterion(logits, targets, epoch=epoch)
        if updates_labels:
            loss, flips = out
            label_store[indices] = torch.maximum(targets, flips.to(targets.dtype))
        else:
            loss = out
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss * loss_scale).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        ema.update(unwrap(model))

        detached = loss.detach()
        loss_sum += detached
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(detached),
                                     torch.tensor(step, device=device), first_bad_step)
        if oracle is not None:
            missing_counts += missing_label_counts(oracle.full[indices], oracle.observed[indices],
                                                   torch.sigmoid(logits.detach()), oracle.threshold)
        images_seen += images.shape[0]
        if step % print_freq == 0 or step == steps - 1:
            _check_finite(first_bad_step, epoch)  # the one host sync, every print_freq steps
            if info.is_main:
                msg = (f"Epoch [{epoch}/{num_epochs}], Step [{step:03d}/{steps:03d}], "
                       f"LR {scheduler.get_last_lr()[0]:.1e}, Loss: {detached.item():.1f}")
                if bar.disable:
                    print(msg, flush=True)
                else:
                    bar.set_postfix_str(f"loss {detached.item():.1f}")
    seconds = time.perf_counter() - start
    _check_finite(first_bad_step, epoch)
    if updates_labels:
        all_reduce_max(label_store, info)  # each rank flipped labels of its own samples
    stats = {"train_loss": loss_sum.item() / max(steps, 1), "lr": scheduler.get_last_lr()[0],
             "train_seconds": seconds, "images_per_second": images_seen * info.world_size / max(seconds, 1e-9),
             "skipped_images": skipped}
    if oracle is not None:
        stats.update(missing_label_stats_from_counts(all_reduce_sum(missing_counts, info)))
    return stats


def _check_finite(first_bad_step: torch.Tensor, epoch: int) -> None:
    bad = int(first_bad_step.item())
    if bad >= 0:
        raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {bad}; training stopped "
                                 f"(the last checkpoint, from before this epoch, is intact)")


@torch.inference_mode()
def predict(models: dict[str, nn.Module], loader: Iterable, num_samples: int, num_classes: int, *,
            device: torch.device, amp_dtype: torch.dtype | None, preprocess: Preprocess,
            info: DistInfo, progress: bool = True, prefetch: int = 1) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Sigmoid scores of every model for every sample, in one pass over the data.

    Returns ({name: N x C float32 scores on the CPU}, seen: N bool). Each rank fills the rows of its
    own shard (a ShardSampler: no padding, no duplicates) and the rows are summed over ranks.
    ``seen`` marks rows that were evaluated (a bad image skipped with --skip-bad-images is not).
    ``prefetch`` as in ``train_one_epoch``.
    """
    for m in models.values():
        m.eval()
    scores = {name: torch.zeros(num_samples, num_classes, device=device) for name in models}
    seen = torch.zeros(num_samples, device=device)
    bar = tqdm(Prefetcher(loader, preprocess, device, prefetch), desc="eval", leave=False,
               disable=not (progress and info.is_main and sys.stdout.isatty()))
    for images, _targets, indices, _num_skipped in bar:  # images: preprocessed, on the device
        if len(indices) == 0:
            continue
        indices = indices.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            for name, m in models.items():
                scores[name][indices] = torch.sigmoid(m(images).float())
        seen[indices] = 1
    for t in (*scores.values(), seen):
        all_reduce_sum(t, info)
    keep = seen.cpu() > 0
    return {name: s.cpu() for name, s in scores.items()}, keep
