"""Many ``train.py --freeze-backbone`` runs at once: linear heads trained side by side on one backbone's features.

A frozen-backbone run trains only the classifier, ``logits = f(x) W^T + b``, on features ``f(x)`` computed once
(``src.frozen``). Runs that share the backbone, the data and the recipe differ only in their loss, their training
list (the setting) and their seed, which sets the classifier's initialisation and the data order. This module
trains a grid of them, seeds x (loss, setting) pairs, as one computation:

- the features are computed once, by ``train.py``'s own code (``src.trainer.build_run`` with --freeze-backbone),
  for the training list and the test set;
- every head starts from the classifier ``train.py`` would initialise for its seed, and steps through the rows
  of the training features in the order of ``train.py``'s sampler for that seed and epoch;
- each step computes every head's logits in one batched matmul, each head's loss with its own criterion
  (``reduction='none'``, summed per head as ``reduction='sum'`` does), and one backward pass. The heads share no
  parameter, so the gradient of the summed loss is each head's own gradient; Adam (weight decay on the weights
  only; torch's fused implementation, the same update up to float rounding), OneCycle and the EMA act element
  by element, so one optimizer over the stacked heads steps each head as its own optimizer would.

Only losses that act element by element are batched (``BATCHED_LOSSES``). After every epoch each head is scored
on the held-out split (``--val-split``) with its training list's labels (what ``train.py`` selects on) and with
the full labels; on the test set at every epoch a held-out reading may pick, and at the last. The missing-label
statistics (``src.engine.MissingLabelOracle``: scores of the training passes, at the threshold
``oracle_threshold``) are computed at the epochs asked for.
``tests/test_linear_heads.py`` checks that a head follows ``train.py --freeze-backbone`` with the same seed.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from timm.utils import random_seed

from src.data.builders import coco_datasets
from src.data.datasets import label_list_dataset
from src.distributed import DistInfo, EpochShuffleSampler
from src.engine import select_model
from src.experiments.experiments import coco_parser
from src.loss_functions.losses import build_loss, canonical_loss_name
from src.metrics import average_precision, missing_label_ranking, missing_label_stats
from src.models import classifier_prefix, create_model_with_weights
from src.trainer import build_run, input_pipeline, resolve_compute

__all__ = ["BATCHED_LOSSES", "Head", "Probe", "probe_features", "train_heads"]

# Losses whose value is a sum of per-entry terms: a head's loss does not depend on the other rows of its batch.
BATCHED_LOSSES = ("BCE", "Focal", "Asl", "Hill", "SPLC", "WAN", "BCE-LS")


@dataclass(frozen=True)
class Head:
    """One frozen-backbone run of the grid: a loss on a training list (setting), with a seed."""
    loss: str
    setting: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.setting}-{self.loss}-s{self.seed}"


@dataclass
class Probe:
    """What every head of a grid shares: the features, the labels of each setting, the split and the recipe.

    ``train``: N x D features of the training list's images (list order), ``test``: M x D of the test set;
    ``labels``: setting -> N x C observed labels; ``full``: N x C full labels; ``test_targets``: M x C;
    ``train_idx`` / ``held_idx``: the rows that train and the held-out rows (sorted); ``steps``: the optimizer
    steps of an epoch (train.py's training loader: --max-steps-per-epoch and a dropped one-image last batch
    counted); ``args``: train.py's flags of the grid (recipe, weight decay, ...); ``init``: seed -> (W, b), the
    classifier train.py starts from."""
    train: torch.Tensor
    test: torch.Tensor
    labels: dict[str, torch.Tensor]
    full: torch.Tensor
    test_targets: torch.Tensor
    train_idx: list[int]
    held_idx: list[int]
    steps: int
    args: argparse.Namespace

    def init(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier ``train.py --seed SEED`` initialises (``build_run``: the model made after
        ``random_seed(seed)``)."""
        random_seed(seed % 2**32)
        args = self.args
        model, _ = create_model_with_weights(args.model_name, self.full.shape[1], args.pretrained, args.image_size)
        head = model.get_submodule(classifier_prefix(model))
        return head.weight.detach().clone(), head.bias.detach().clone()


def probe_features(argv: Sequence[str], lists: dict[str, Path]) -> Probe:
    """The features and labels of a grid. ``argv``: train.py's flags of its recipe (with --freeze-backbone and
    --val-split; the --dataset given is the one the features are computed on); ``lists``: setting -> training
    list ("full" among them), each holding the same images in the same order."""
    args = coco_parser().parse_args(list(argv))
    if str(args.pretrained).lower() == "none":
        raise ValueError("--pretrained none: every seed would draw its own backbone; the batched heads share one")
    compute = resolve_compute(args, DistInfo())
    pipeline = input_pipeline(args, compute.device)
    data = coco_datasets(args, pipeline.train_tf, pipeline.val_tf, pipeline.raw)
    run = build_run(args, data, compute, pipeline)
    train, train_seen = run.features(data.train)
    test, test_seen = run.features(data.test)
    if not (bool(train_seen.all()) and bool(test_seen.all())):
        raise ValueError("some images could not be read: the batched heads need every feature")
    names = [e.name for e in data.train.entries]
    labels = {s: _labels(args, data, path, names) for s, path in lists.items()}
    held = sorted(run.eval_idx) if run.held_out else []
    return Probe(train=train.cpu(), test=test.cpu(), labels=labels, full=labels["full"],
                 test_targets=data.test.targets_matrix(), train_idx=list(run.sampler.indices), held_idx=held,
                 steps=len(run.train_loader), args=args)


def _labels(args, data, path: Path, names: list[str]) -> torch.Tensor:
    ds = label_list_dataset(Path(args.data) / "train2014", str(path), data.num_classes)
    if [e.name for e in ds.entries] != names:
        raise ValueError(f"{path}: its images differ from those of {args.dataset} (or their order does)")
    return ds.targets_matrix()


# ----------------------------------------------------------------------------- training

@dataclass
class _Grid:
    """The heads as tensors: seeds S x pairs P of (loss, setting); head (s, p) is row s * P + p."""
    seeds: list[int]
    pairs: list[tuple[str, str]]

    @property
    def heads(self) -> list[Head]:
        return [Head(loss, setting, seed) for seed in self.seeds for loss, setting in self.pairs]


def _grid(heads: Sequence[Head]) -> _Grid:
    seeds = list(dict.fromkeys(h.seed for h in heads))
    pairs = list(dict.fromkeys((canonical_loss_name(h.loss), h.setting) for h in heads))
    grid = _Grid(seeds, pairs)
    if [(h.seed, canonical_loss_name(h.loss), h.setting) for h in heads] != \
            [(h.seed, h.loss, h.setting) for h in grid.heads]:
        raise ValueError("heads must be a full grid, seed-major: every (loss, setting) pair for every seed")
    for loss, _ in pairs:
        if loss not in BATCHED_LOSSES:
            raise ValueError(f"loss {loss} is not element-wise; batched heads take {', '.join(BATCHED_LOSSES)}")
    return grid


def train_heads(probe: Probe, heads: Sequence[Head], oracle_epochs: Sequence[int] | None = None,
                oracle_threshold: float = 0.6, held_out_full: bool = True, log=print) -> list[list[dict]]:
    """Train ``heads`` (a seed-major grid) as ``train.py --freeze-backbone`` would, each alone; return every
    head's metrics rows, one per epoch: ``map`` / ``map_ema`` / ``selected`` on the held-out split with the
    head's own labels, ``map_full`` / ``map_ema_full`` with the full labels (``held_out_full``), ``train_loss``,
    ``first_step_loss``, ``lr``; ``test_map`` / ``test_map_ema`` (the val set's) at every epoch a held-out
    reading may pick (a new best on either held-out mAP) and at the last; and, at ``oracle_epochs`` (None:
    every epoch), the missing-label statistics of settings with missing labels."""
    grid = _grid(heads)
    args = probe.args
    state = _State.start(probe, grid)
    scorer = _Scorer(probe, grid, held_out_full)
    epochs = min(args.stop_epoch, args.epochs - 1) + 1
    rows: list[list[dict]] = [[] for _ in grid.heads]
    start = time.perf_counter()
    for epoch in range(epochs):
        want_oracle = oracle_epochs is None or epoch in oracle_epochs
        stats = state.train_epoch(probe, grid, epoch, want_oracle)
        metrics = scorer.score(state, last=epoch == epochs - 1)
        for h, head in enumerate(grid.heads):
            row = {"epoch": epoch, **{k: float(v[h]) for k, v in metrics.items() if v[h] == v[h]},
                   "train_loss": float(stats["train_loss"][h]),
                   "first_step_loss": float(stats["first_step_loss"][h]), "lr": stats["lr"]}
            row["selected"] = select_model({"model": row["map"], "ema": row["map_ema"]})
            if want_oracle and head.setting != "full":
                row.update(_missing(probe, head, stats["scores"][h], oracle_threshold))
            rows[h].append(row)
        if epoch % 10 == 0 or epoch == epochs - 1:
            log(f"  linear heads: epoch {epoch}/{epochs - 1} done, {len(grid.heads)} heads "
                f"[{time.perf_counter() - start:.0f} s]")
    return rows


@dataclass
class _State:
    """Every head's parameters (W: H x C x D, b: H x C), their EMA, the optimizer and the schedule."""
    w: torch.Tensor
    b: torch.Tensor
    w_ema: torch.Tensor
    b_ema: torch.Tensor
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.OneCycleLR
    criteria: dict[str, torch.nn.Module]
    labels: torch.Tensor  # P x N x C: each pair's training labels
    steps: int  # per epoch
    by_loss: dict[str, list[int]]  # loss -> the pairs that train with it

    @classmethod
    def start(cls, probe: Probe, grid: _Grid) -> "_State":
        args = probe.args
        inits = {seed: probe.init(seed) for seed in grid.seeds}
        w = torch.stack([inits[h.seed][0] for h in grid.heads]).requires_grad_(True)
        b = torch.stack([inits[h.seed][1] for h in grid.heads]).requires_grad_(True)
        optimizer = torch.optim.Adam([{"params": [b], "weight_decay": 0.0},
                                      {"params": [w], "weight_decay": args.weight_decay}], lr=args.lr, fused=True)
        steps = probe.steps
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                        steps_per_epoch=steps, pct_start=0.2)
        criteria = {loss: build_loss(loss, reduction="none") for loss, _ in grid.pairs}
        labels = torch.stack([probe.labels[setting] for _, setting in grid.pairs])
        by_loss: dict[str, list[int]] = {}
        for p, (loss, _) in enumerate(grid.pairs):
            by_loss.setdefault(loss, []).append(p)
        return cls(w, b, w.detach().clone(), b.detach().clone(), optimizer, scheduler, criteria, labels, steps,
                   by_loss)

    def train_epoch(self, probe: Probe, grid: _Grid, epoch: int, want_oracle: bool) -> dict:
        """One epoch of every head: per head the mean loss, the first step's loss and (``want_oracle``) the
        training-pass scores of every training row (H x N x C)."""
        args, pairs = probe.args, len(grid.pairs)
        orders = torch.tensor([_order(probe, seed, epoch) for seed in grid.seeds])  # S x N_train
        steps, batch = self.steps, args.batch_size
        loss_sum = torch.zeros(len(grid.heads))
        first = None
        scores = torch.zeros(len(grid.heads), *probe.full.shape) if want_oracle else None
        for step in range(steps):
            rows = orders[:, step * batch:(step + 1) * batch]  # S x B
            x = probe.train[rows]  # S x B x D
            y = self.labels[:, rows].transpose(0, 1)  # S x P x B x C
            w = self.w.view(len(grid.seeds), pairs, *self.w.shape[1:])
            logits = torch.einsum("sbd,spcd->spbc", x, w) + self.b.view(len(grid.seeds), pairs, 1, -1)
            per_head = self._losses(grid, logits, y, epoch).reshape(-1)
            self.optimizer.zero_grad(set_to_none=True)
            per_head.sum().backward()
            self.optimizer.step()
            self.scheduler.step()
            self._update_ema(args.ema_decay)
            loss_sum += per_head.detach()
            first = per_head.detach().clone() if first is None else first
            if scores is not None:  # the training pass's scores, by row, as the oracle keeps them
                by_seed = scores.view(len(grid.seeds), pairs, *scores.shape[1:])
                for s, seed_rows in enumerate(rows):
                    by_seed[s][:, seed_rows] = torch.sigmoid(logits[s].detach())
        return {"train_loss": loss_sum / steps, "first_step_loss": first, "scores": scores,
                "lr": self.scheduler.get_last_lr()[0]}

    def _losses(self, grid: _Grid, logits: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """S x P: each head's summed loss, the pairs of one loss through its criterion at once."""
        s, c = logits.shape[0], logits.shape[-1]
        parts, order = [], []
        for loss, pairs in self.by_loss.items():
            value = self.criteria[loss](logits[:, pairs].reshape(-1, c), y[:, pairs].reshape(-1, c), epoch=epoch)
            parts.append(value.reshape(s, len(pairs), -1).sum(2))
            order += pairs
        return torch.cat(parts, 1)[:, torch.tensor(order).argsort()]

    @torch.no_grad()
    def _update_ema(self, decay: float) -> None:
        """timm's ModelEmaV3.update: ema <- lerp(ema, model, 1 - decay). With decay 0 that is the model itself
        (torch.lerp with weight 1 returns its end exactly), so the EMA then stays the model's tensors."""
        if decay == 0.0:
            self.w_ema, self.b_ema = self.w.detach(), self.b.detach()
            return
        self.w_ema.lerp_(self.w.detach(), 1.0 - decay)
        self.b_ema.lerp_(self.b.detach(), 1.0 - decay)

    def models(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The model's and the EMA's weights (the EMA left out while it is the model itself: decay 0)."""
        out = {"model": (self.w.detach(), self.b.detach())}
        if self.w_ema.data_ptr() != self.w.data_ptr():
            out["ema"] = (self.w_ema, self.b_ema)
        return out


def _scores(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sigmoid scores (H x N x C) of N feature rows under every head."""
    return torch.sigmoid(torch.einsum("nd,hcd->hnc", x, w) + b[:, None])


class _Scorer:
    """Every epoch's held-out mAPs of every head, and the val set's where a reading may pick the epoch."""

    def __init__(self, probe: Probe, grid: _Grid, held_out_full: bool):
        self.probe, self.held_out_full = probe, held_out_full
        held = probe.held_idx
        self.held = probe.train[held]
        self.targets = {"": torch.stack([probe.labels[h.setting][held] for h in grid.heads])}
        if held_out_full:
            self.targets["_full"] = probe.full[held]
        self.best = {key: np.full(len(grid.heads), -np.inf) for key in self.targets}

    @torch.no_grad()
    def score(self, state: _State, last: bool) -> dict[str, np.ndarray]:
        """{metric: H values} (NaN where not computed): map, map_ema (and the _full ones), test_map,
        test_map_ema."""
        models = state.models()
        out = {}
        for name, (w, b) in models.items():
            scores = _scores(self.held, w, b)
            for key, targets in self.targets.items():
                out[f"{'map' if name == 'model' else 'map_ema'}{key}"] = head_maps(targets, scores)
        for key in self.targets:  # the EMA of decay 0 is the model
            out.setdefault(f"map_ema{key}", out[f"map{key}"])
        picked = np.zeros(len(out["map"]), dtype=bool)
        for key, best in self.best.items():
            selected = np.maximum(out[f"map{key}"], out[f"map_ema{key}"])
            picked |= selected > best
            np.maximum(best, selected, out=best)
        heads = np.arange(len(picked)) if last else np.flatnonzero(picked)
        for name, (w, b) in models.items():
            test = np.full(len(picked), np.nan)
            if heads.size:
                test[heads] = head_maps(self.probe.test_targets, _scores(self.probe.test, w[heads], b[heads]))
            out["test_map" if name == "model" else "test_map_ema"] = test
        out.setdefault("test_map_ema", out["test_map"])
        return out


def _order(probe: Probe, seed: int, epoch: int) -> list[int]:
    """The training rows in the order train.py's sampler gives them for ``seed`` and ``epoch``."""
    sampler = EpochShuffleSampler(probe.train_idx, DistInfo(), seed)
    sampler.set_epoch(epoch)
    return list(sampler)


# ----------------------------------------------------------------------------- metrics rows

def head_maps(targets: torch.Tensor, scores: torch.Tensor) -> np.ndarray:
    """mAP (percent) of each head: ``targets`` N x C (shared) or H x N x C, ``scores`` H x N x C. One
    ``average_precision`` call over the heads' classes side by side, then each head's mean over its classes
    with a positive (as ``src.metrics.mAP``)."""
    h, n, c = scores.shape
    t = targets.expand(h, n, c) if targets.dim() == 2 else targets
    ap = average_precision(t.permute(1, 0, 2).reshape(n, h * c), scores.permute(1, 0, 2).reshape(n, h * c))
    ap = ap.reshape(h, c)
    if np.isnan(ap).all(axis=1).any():
        raise ValueError("mAP: a head's targets have no positive in any class")
    return 100.0 * np.nanmean(ap, axis=1)


def _missing(probe: Probe, head: Head, scores: torch.Tensor, threshold: float) -> dict:
    """The oracle's statistics of one head's training-pass scores (``src.engine._epoch_stats``)."""
    rows = torch.tensor(sorted(probe.train_idx))
    full, observed, s = probe.full[rows], probe.labels[head.setting][rows], scores[rows]
    return {**missing_label_stats(full, observed, s, threshold), **missing_label_ranking(full, observed, s)}
