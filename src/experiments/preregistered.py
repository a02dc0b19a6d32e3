"""The pre-registered study of the paper's two claims on the COCO-label toy (docs/results_preregistered.md).

    python -m src.experiments.preregistered --protocol L [--out-dir runs/prereg] [--export results/prereg]
    python -m src.experiments.preregistered --protocol E [--stop-after SECONDS]
    python -m src.experiments.preregistered --analyze results/prereg

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
EXPORT, where a later session finds it done. The plan itself is ``src.experiments.preregistered_plan``;
``--analyze`` reads the export alone (``src.experiments.preregistered_report``).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Sequence

from src.errors import UserError, report_user_errors
from src.engine import selected_map
from src.io_utils import atomic_write_text, read_json
from src.run_metrics import read_run
from src.experiments.experiments import pretrain, prepare_toy_coco, run_is_complete, train_run
from src.experiments.preregistered_plan import (PRETRAIN, PROTOCOLS, TOY, Protocol, Run, ema_for_horizon,
                                                is_exported, plan_lr_pick, plan_runs)
from src.experiments.preregistered_report import report

__all__ = ["Protocol", "PROTOCOLS", "PRETRAIN", "ema_for_horizon", "Run", "plan_lr_pick", "plan_runs", "is_exported",
           "pick_lr", "main"]

PRETRAIN_PER_CLASS = 200
EXPORTED = ("metrics.jsonl", "args.json", "command.json", "test_metrics.json")


def _export(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in EXPORTED:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)


def _held_out_best(export: Path, run: Run) -> float:
    """The run's best held-out mAP: the maximum over epochs of model and EMA (what train.py selects). A missing or
    torn metrics.jsonl ends in one error line naming it."""
    with report_user_errors():
        rows = read_run(export / run.rel).rows
    return max(selected_map(r) for r in rows)


def _read_lr(path: Path, p: Protocol) -> float:
    """The lr of EXPORT/<P>/lr.json; a torn file, or an lr not in the protocol's grid, ends in one error line
    naming the file."""
    with report_user_errors():
        choice = read_json(path)
        lr = choice.get("lr") if isinstance(choice, dict) else None
        if not isinstance(lr, (int, float)) or not any(math.isclose(lr, g, rel_tol=1e-9) for g in p.lrs):
            grid = ", ".join(f"{g:g}" for g in p.lrs)
            raise UserError(f"{path}: lr {lr!r} is not in protocol {p.name}'s grid ({grid}): the file is damaged "
                            "or from another plan; restore it, or remove it to pick the lr again")
    return float(lr)


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
        return _read_lr(path, self.p)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.experiments.preregistered", description=__doc__.split("\n\n")[0])
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
        print(report(a.analyze, a.pics))
        return 0
    study = Study(a, PROTOCOLS[a.protocol])
    lr = study.lr()
    if lr is not None and study.train(plan_runs(study.p, lr)):
        print(f"== protocol {a.protocol} complete ({time.perf_counter() - study.start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
