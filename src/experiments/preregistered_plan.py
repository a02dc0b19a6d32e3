"""The pre-registered study's plan, fixed before any run: the two protocols, their runs and where each lives.

Shared by the driver (``src.experiments.preregistered``) and the analysis (``src.experiments.preregistered_report``),
which reads an export without training anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src.experiments.experiments import Recipe, RunSpec
from src.run_metrics import MetricsError, read_run

TOY = {"train": 4000, "val": 1000, "image_size": 64}
VAL_SPLIT = 0.2
BATCH = 64
# The toy-ImageNet pretraining every protocol starts from (the demo's recipe, unchanged since the strength study).
PRETRAIN = Recipe(model_name="resnet10t", image_size=64, batch_size=BATCH, epochs=4, lr=1e-3, ema_decay=0.99)


def ema_for_horizon(steps_per_epoch: int, official_decay: float = 0.9997, official_steps: int = 641) -> float:
    """EMA decay whose horizon 1 / (1 - decay), in epochs, equals the official one (0.9997 at 641 steps per
    epoch: 82,081 images / batch 128, about 5.2 epochs)."""
    horizon_epochs = 1.0 / (1.0 - official_decay) / official_steps
    return round(1.0 - 1.0 / (horizon_epochs * steps_per_epoch), 5)


TRAIN_STEPS = -(-round(TOY["train"] * (1 - VAL_SPLIT)) // BATCH)  # 3,200 training images: 50 steps per epoch


@dataclass(frozen=True)
class Protocol:
    name: str
    losses: tuple[str, ...]
    settings: tuple[str, ...]
    seeds: tuple[int, ...]
    draws: tuple[int, ...]  # toy-ImageNet pretraining draws (--pretrain-seed)
    epochs: int  # the planned OneCycle schedule
    stop_epoch: int  # the last epoch trained
    lrs: tuple[float, ...]  # the grid the learning rate is picked from
    lr_seeds: tuple[int, ...]  # seeds of the full-label BCE runs that pick it (draw 0)
    ema_decay: float
    freeze_backbone: bool
    workers: int = 2

    def recipe(self, lr: float) -> Recipe:
        return Recipe(model_name=PRETRAIN.model_name, image_size=TOY["image_size"], batch_size=BATCH,
                      epochs=self.epochs, lr=lr, ema_decay=self.ema_decay, workers=self.workers, device="cpu",
                      stop_epoch=self.stop_epoch, freeze_backbone=self.freeze_backbone)


PROTOCOLS = {
    "L": Protocol("L", losses=("BCE", "Focal", "Asl", "Hill", "SPLC"), settings=("full", "0.4left", "singlelabel"),
                  seeds=tuple(range(10)), draws=(0,), epochs=200, stop_epoch=75, lrs=(1e-4, 1e-3, 1e-2),
                  lr_seeds=(0, 1, 2), ema_decay=0.0, freeze_backbone=True, workers=0),
    "E": Protocol("E", losses=("Asl", "Hill", "SPLC", "BCE"), settings=("full", "0.4left"), seeds=(0, 1),
                  draws=(0, 1), epochs=40, stop_epoch=15, lrs=(1e-4, 3e-4, 1e-3), lr_seeds=(0,),
                  ema_decay=ema_for_horizon(TRAIN_STEPS), freeze_backbone=False),
}


@dataclass(frozen=True)
class Run:
    """One run of a protocol: a RunSpec at a learning rate, from a pretraining draw."""
    protocol: Protocol
    lr: float
    draw: int
    spec: RunSpec

    @property
    def rel(self) -> Path:
        """Its folder under OUT_DIR and under EXPORT."""
        return Path(self.protocol.name) / f"lr{self.lr:g}" / f"d{self.draw}" / self.spec.name


def _spec(loss: str, setting: str, seed: int) -> RunSpec:
    return RunSpec(loss, setting, seed, extra=("--val-split", str(VAL_SPLIT)))


def plan_lr_pick(p: Protocol) -> list[Run]:
    """Full-label BCE at every lr of the grid, for the LR_SEEDS, from draw 0."""
    return [Run(p, lr, 0, _spec("BCE", "full", seed)) for lr in p.lrs for seed in p.lr_seeds]


def plan_runs(p: Protocol, lr: float) -> list[Run]:
    """Every run of the protocol at ``lr``, seed-major (seed, then draw), so partial results stay paired."""
    return [Run(p, lr, draw, _spec(loss, setting, seed)) for seed in p.seeds for draw in p.draws
            for setting in p.settings for loss in p.losses]


def is_exported(export: Path, run: Run) -> bool:
    """The export holds the run's every epoch and its test metrics."""
    d = export / run.rel
    return (d / "test_metrics.json").is_file() and run_is_complete_rows(d, run.protocol.stop_epoch + 1)


def run_is_complete_rows(d: Path, epochs: int) -> bool:
    try:
        rows = read_run(d).rows
    except MetricsError:
        return False
    return [r.get("epoch") for r in rows] == list(range(epochs))
