"""The pre-registered study of the paper's two claims on the COCO-label toy (docs/results_preregistered.md).

    python -m src.tools.preregistered --protocol L [--out-dir runs/prereg] [--export results/prereg]
    python -m src.tools.preregistered --protocol E [--stop-after SECONDS]
    python -m src.tools.preregistered --analyze results/prereg

Both protocols are fixed here, as issue 21 wrote them, before any run:

- **L (linear):** ``--freeze-backbone`` on the toy-ImageNet-pretrained resnet10t; BCE, Focal, ASL, Hill and
  SPLC on full, 0.4left and singlelabel; 10 seeds; a 200-epoch OneCycle stopped at epoch 75 (the official
  80/30 shape); EMA off (decay 0: the EMA is the model).
- **E (end to end):** ASL, Hill, SPLC and BCE on full and 0.4left; 2 toy-ImageNet pretraining draws x 2 seeds;
  a 40-epoch OneCycle stopped at epoch 15; EMA decay with the official horizon in epochs (``ema_for_horizon``).

Both use the 4,000/1,000-image toy COCO at 64 px and hold out 20% of the training list (``--val-split 0.2``) to
pick the best epoch; the val set is scored once with the best checkpoint and once with the last epoch's
weights (train.py's test_metrics.json). The learning rate comes from a grid, picked once per protocol with
full-label BCE by its mean best held-out mAP over LR_SEEDS (draw 0), and written to EXPORT/<P>/lr.json; once
that file exists it is never recomputed. Every run goes to OUT_DIR/<P>/lr<lr>/d<draw>/<setting>-<loss>-s<seed>
and, when complete, is exported (metrics, args, command, test metrics; no checkpoints) to the same path under
EXPORT, where a later session finds it done. ``--analyze`` reads the export alone (``src.tools.preregistered_report``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from src.io_utils import atomic_write_text
from src.tools.experiments import Recipe, RunSpec, pretrain, prepare_toy_coco, run_is_complete, train_run

__all__ = ["Protocol", "PROTOCOLS", "PRETRAIN", "ema_for_horizon", "Run", "plan_runs", "run_dir", "is_exported",
           "pick_lr", "main"]

TOY = {"train": 4000, "val": 1000, "image_size": 64}
VAL_SPLIT = 0.2
BATCH = 64
# The toy-ImageNet pretraining every protocol starts from (the demo's recipe, unchanged since the strength study).
PRETRAIN = Recipe(model_name="resnet10t", image_size=64, batch_size=BATCH, epochs=4, lr=1e-3, ema_decay=0.99)
PRETRAIN_PER_CLASS = 200
EXPORTED = ("metrics.jsonl", "args.json", "command.json", "test_metrics.json")


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
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return False
    return [r.get("epoch") for r in rows] == list(range(epochs))


def _export(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in EXPORTED:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)


def _held_out_best(export: Path, run: Run) -> float:
    """The run's best held-out mAP: the maximum over epochs of model and EMA (what train.py selects)."""
    rows = [json.loads(line) for line in (export / run.rel / "metrics.jsonl").read_text().splitlines() if line]
    return max(max(r["map"], r.get("map_ema", r["map"])) for r in rows)


def pick_lr(p: Protocol, export: Path) -> dict:
    """The lr of the grid with the highest mean best held-out mAP of full-label BCE (ties: the smaller lr)."""
    table = {}
    for lr in p.lrs:
        runs = [r for r in plan_lr_pick(p) if r.lr == lr]
        values = [_held_out_best(export, r) for r in runs]
        table[f"{lr:g}"] = sum(values) / len(values)
    best = max(p.lrs, key=lambda lr: (table[f"{lr:g}"], -lr))
    return {"lr": best, "held_out_map_by_lr": table, "lr_seeds": list(p.lr_seeds),
            "rule": "full-label BCE, mean over lr_seeds of the best held-out mAP; ties: the smaller lr"}


class Study:
    """Trains the protocol's runs in order, each once, exporting each as it completes."""

    def __init__(self, a: argparse.Namespace, p: Protocol):
        self.a, self.p = a, p
        self.start = time.perf_counter()
        self.data = prepare_toy_coco(a.data_root, TOY["train"], TOY["val"], TOY["image_size"])
        self.pretrained: dict[int, Path] = {}

    def weights(self, draw: int) -> Path:
        if draw not in self.pretrained:
            print(f"== pretraining draw {draw} (toy ImageNet, {PRETRAIN.epochs} epochs; cached)", flush=True)
            self.pretrained[draw] = pretrain(self.a.data_root, PRETRAIN, PRETRAIN.epochs,
                                             per_class=PRETRAIN_PER_CLASS, seed=draw)
        return self.pretrained[draw]

    def out_of_time(self) -> bool:
        return self.a.stop_after is not None and time.perf_counter() - self.start >= self.a.stop_after

    def train(self, runs: Sequence[Run]) -> bool:
        """Train what is not exported yet; False when --stop-after ended it early."""
        todo = [r for r in runs if not is_exported(self.a.export, r)]
        for i, run in enumerate(todo, 1):
            if self.out_of_time():
                print(f"== --stop-after: {len(todo) - i + 1} runs left", flush=True)
                return False
            print(f"== {run.rel} ({i}/{len(todo)} to train) [{time.perf_counter() - self.start:.0f} s]", flush=True)
            recipe = self.p.recipe(run.lr)
            train_run(run.spec, self.data, self.a.out_dir / run.rel.parent, recipe, self.weights(run.draw))
            done = self.a.out_dir / run.rel
            if not (run_is_complete(done, recipe.epochs_run) and (done / "test_metrics.json").is_file()):
                raise SystemExit(f"{done}: the run ended without every epoch and its test metrics")
            _export(done, self.a.export / run.rel)
        return True

    def lr(self) -> float | None:
        """The protocol's lr: from EXPORT/<P>/lr.json, else picked now (None when --stop-after cut it short)."""
        path = self.a.export / self.p.name / "lr.json"
        if not path.is_file():
            if not self.train(plan_lr_pick(self.p)):
                return None
            choice = pick_lr(self.p, self.a.export)
            atomic_write_text(path, json.dumps(choice, indent=1) + "\n")
            print(f"== lr picked for protocol {self.p.name}: {choice}", flush=True)
        return float(json.loads(path.read_text())["lr"])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.tools.preregistered", description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), help="train (or resume) this protocol's runs")
    ap.add_argument("--analyze", type=Path, metavar="EXPORT", help="write the tables and figures from an export")
    ap.add_argument("--out-dir", type=Path, default=Path("runs/prereg"), help="run folders (default: runs/prereg)")
    ap.add_argument("--export", type=Path, default=Path("results/prereg"),
                    help="where finished runs are exported (default: results/prereg)")
    ap.add_argument("--data-root", type=Path, default=Path("data"), help="generated data cache (default: data)")
    ap.add_argument("--pics", type=Path, default=Path("pics"), help="figure folder (default: pics)")
    ap.add_argument("--stop-after", type=float, default=None, metavar="SECONDS", help="start no run after this")
    a = ap.parse_args(argv)
    if (a.protocol is None) == (a.analyze is None):
        ap.error("give one of --protocol and --analyze")
    if a.analyze is not None:
        from src.tools.preregistered_report import report  # matplotlib: only for the analysis
        print(report(a.analyze, a.pics))
        return 0
    study = Study(a, PROTOCOLS[a.protocol])
    lr = study.lr()
    if lr is not None and study.train(plan_runs(study.p, lr)):
        print(f"== protocol {a.protocol} complete ({time.perf_counter() - study.start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
