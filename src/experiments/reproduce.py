"""The paper's grid (losses x missing-label settings x seeds) through train.py, with a mean ± std table.

    python -m src.experiments.reproduce --settings full,0.75left,0.4left,singlelabel --losses BCE,Focal,Asl,Hill,SPLC
        --seeds 0,1,2 [--full-losses BCE] [--out-dir runs/grid] [size flags of src.experiments.demo]
    python -m src.experiments.reproduce --data /home/MSCOCO_2014 --lists-dir dataset --pretrained resnet50.pth
        --model-name resnet50 --image-size 448 --epochs 80 ...   # a real COCO 2014 root

Every run goes to OUT_DIR/<setting>-<loss>-s<seed>. A run whose metrics.jsonl already holds every planned
epoch is skipped and an interrupted one resumed, so the command can be re-run until the grid is done.
The setting 'full' is the reference: only --full-losses (default BCE; 'all' = every --losses) run on it.
SPLC on 0.75left uses tau = 0.65, as the official README prescribes; every other hyperparameter is the
loss's default. Writes OUT_DIR/results.md and OUT_DIR/results.csv: the best val mAP (max over epochs of
model and EMA) per loss and setting, mean ± sample std over the seeds (std '-' with one seed), the seed
count, and the mean training time of a run.

Model-strength study (docs/results_strength.md): --strengths S1=48/2000/6,S2=64/4000/8 runs the grid once
per strength (image px / toy COCO train images / epochs [/ timm model]), in the order given, into
OUT_DIR/<strength>, each with its own cached toy ImageNet pretraining. --export DIR copies every finished
run's metrics.jsonl, args.json and command.json (no checkpoints) to DIR/<strength>/<run>; a run found
complete there is not trained again, so a later session resumes from the committed export alone.
--analyze DIR (no training) writes DIR/analysis.md and .csv: per strength and setting each loss's mAP
(mean ± std over seeds), the paired per-seed gaps Hill - ASL and SPLC - ASL, the last-epoch missing-label
precision / recall; and draws PICS/strength_gap.png (the gaps against full-label BCE mAP).
--jobs N trains N runs at once, each in its own process (src/experiments/run_pool.py), then writes the tables.

An official-shaped schedule: --epochs 80 --stop-epoch 30 plans OneCycle over 80 epochs and trains epochs 0..30
(a run is complete with those); --freeze-backbone trains only the classifier (train.py's flag); --ema-decay is
train.py's; --pretrain-seed N pretrains on a toy ImageNet drawn with seed N, by a run seeded N, cached apart from
seed 0's. Each run's args.json records the train.py flags, its --pretrained the pretraining (named by its seed).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from src.io_utils import atomic_write_text
from src.experiments.experiments import (RunSpec, add_size_args, parse_losses, prepare, recipe_from_args, run_is_complete,
                                   train_run)
from src.run_metrics import RunMetrics
from src.experiments.run_pool import PoolRun, order_runs, run_pool
from src.experiments.strength_study import export_run, exported_run, load_study, report_study

__all__ = ["SETTINGS", "Strength", "parse_strengths", "plan_grid", "summarize", "markdown_table", "csv_table",
           "run_grid", "train_in_pool", "main"]

SETTINGS = ("full", "0.75left", "0.4left", "singlelabel")
# Official README: "when SPLC is used on COCO-75% labels left, the threshold is set 0.65".
SETTING_LOSS_FLAGS = {("0.75left", "SPLC"): ("--tau", "0.65")}
# Recipe flags newer than the strength study's first export, with their unset values.
LATER_RECIPE_FLAGS = {"stop_epoch": None, "freeze_backbone": False, "pretrain_seed": 0}


@dataclass(frozen=True)
class Strength:
    """One point of the model-strength axis: the toy COCO's image size and train images, and the epochs."""
    name: str
    image_size: int
    train_images: int
    epochs: int
    model_name: str | None = None  # None: the --model-name flag

    @property
    def text(self) -> str:
        """As --strengths takes it: NAME=PX/IMAGES/EPOCHS[/MODEL]."""
        return f"{self.name}={self.image_size}/{self.train_images}/{self.epochs}" \
            + (f"/{self.model_name}" if self.model_name else "")

    def overrides(self) -> dict:
        out = {"image_size": self.image_size, "train_images": self.train_images, "epochs": self.epochs}
        return out | ({"model_name": self.model_name} if self.model_name else {})


def parse_strengths(text: str) -> list[Strength]:
    """'S1=48/2000/6,S2=64/4000/8/resnet18' -> Strengths (image px / train images / epochs [/ timm model])."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name, _, spec = item.partition("=")
        parts = spec.split("/")
        try:
            if not name or "/" in name or len(parts) not in (3, 4):
                raise ValueError
            size, images, epochs = (int(v) for v in parts[:3])
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: want NAME=PX/IMAGES/EPOCHS[/MODEL]") from None
        if min(size, images, epochs) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: sizes must be positive")
        out.append(Strength(name, size, images, epochs, parts[3] if len(parts) == 4 else None))
    if not out or len({s.name for s in out}) != len(out):
        raise argparse.ArgumentTypeError("want one or more strengths with distinct names")
    return out


def plan_grid(settings: Sequence[str], losses: Sequence[str], seeds: Sequence[int],
              full_losses: Sequence[str]) -> list[RunSpec]:
    """Runs in order: seed-major, so that a cut-short grid has whole seeds of every cell."""
    specs = []
    for seed in seeds:
        for setting in settings:
            for loss in (full_losses if setting == "full" else losses):
                specs.append(RunSpec(loss, setting, seed, SETTING_LOSS_FLAGS.get((setting, loss), ())))
    return specs


def summarize(results: Sequence[tuple[RunSpec, RunMetrics]]) -> list[dict]:
    """One row per (loss, setting) in first-seen order: n, mean, std (None for n = 1), the best mAPs, seconds."""
    cells: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    for spec, run in results:
        seconds = sum(float(r.get("seconds", 0.0)) for r in run.rows)
        cells.setdefault((spec.loss, spec.setting), []).append((spec.seed, max(run.best_map), seconds))
    rows = []
    for (loss, setting), vals in cells.items():
        maps = [v for _, v, _ in vals]
        rows.append({"loss": loss, "setting": setting, "n": len(maps), "mean": statistics.fmean(maps),
                     "std": statistics.stdev(maps) if len(maps) > 1 else None,
                     "seeds": [s for s, _, _ in vals], "maps": maps,
                     "seconds_per_run": statistics.fmean(t for _, _, t in vals)})
    return rows


def markdown_table(rows: Sequence[dict], settings: Sequence[str], losses: Sequence[str],
                   expected_seeds: int) -> str:
    """Losses down, settings across; a cell is 'mean ± std' and '(n/N)' when seeds are missing."""
    by = {(r["loss"], r["setting"]): r for r in rows}
    out = ["| loss | " + " | ".join(settings) + " |", "| --- |" + " ---: |" * len(settings)]
    for loss in losses:
        cells = []
        for s in settings:
            r = by.get((loss, s))
            if r is None:
                cells.append("")
                continue
            cell = f"{r['mean']:.2f}" + (f" ± {r['std']:.2f}" if r["std"] is not None else "")
            if r["n"] < expected_seeds:
                cell += f" ({r['n']}/{expected_seeds} seeds)"
            cells.append(cell)
        if any(cells):
            out.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def csv_table(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["loss", "setting", "n_seeds", "mean_map", "std_map", "seeds", "maps", "seconds_per_run"])
    for r in rows:
        w.writerow([r["loss"], r["setting"], r["n"], f"{r['mean']:.4f}",
                    "" if r["std"] is None else f"{r['std']:.4f}", " ".join(map(str, r["seeds"])),
                    " ".join(f"{m:.4f}" for m in r["maps"]), f"{r['seconds_per_run']:.1f}"])
    return buf.getvalue()


def _csv_list(kind, choices=None):
    def parse(text: str):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        try:
            items = [kind(t) for t in items]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        bad = [t for t in items if choices is not None and t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad[0]!r}; choose from {', '.join(choices)}")
        return items
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m src.experiments.reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", type=_csv_list(str, SETTINGS), default=list(SETTINGS),
                   help="comma-separated subset of " + ",".join(SETTINGS))
    p.add_argument("--losses", type=parse_losses, default=["BCE", "Focal", "Asl", "Hill", "SPLC"])
    p.add_argument("--full-losses", default="BCE",
                   help="losses run on the full list (the reference); 'all' = every --losses (default: BCE)")
    p.add_argument("--seeds", type=_csv_list(int), default=[0, 1, 2])
    p.add_argument("--out-dir", type=Path, default=Path("runs/grid"))
    p.add_argument("--data", type=Path, default=None,
                   help="a real COCO 2014 root instead of the toy COCO (then --lists-dir holds the lists)")
    p.add_argument("--lists-dir", type=Path, default=None,
                   help="folder of coco_train_<setting>.txt (default: the data folder)")
    p.add_argument("--pretrained", type=Path, default=None,
                   help="backbone weights for every run (replaces the toy ImageNet pretraining)")
    p.add_argument("--no-oracle", action="store_true", help="do not log missing-label precision/recall")
    p.add_argument("--strengths", type=parse_strengths, default=None,
                   help="model-strength axis, e.g. S1=48/2000/6,S2=64/4000/8 (image px/train images/epochs"
                        "[/timm model]): the grid once per strength, weakest first, into OUT_DIR/<name>, "
                        "each with its own toy ImageNet pretraining; overrides the size flags")
    p.add_argument("--export", type=Path, default=None,
                   help="copy each finished run's metrics/args to EXPORT/[<strength>/]<run> (no checkpoints); "
                        "a run exported complete is not trained again")
    p.add_argument("--analyze", type=Path, default=None, metavar="EXPORT",
                   help="only analyse the exported strength study in EXPORT (no training): "
                        "EXPORT/analysis.md, .csv and PICS/strength_gap.png")
    p.add_argument("--pics", type=Path, default=Path("pics"), help="figure folder for --analyze (default: pics)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, each in its own process (src/experiments/run_pool.py; default: 1)")
    p.add_argument("--stop-after", type=float, default=None, metavar="S",
                   help="with --jobs: start no run after S seconds; running ones finish")
    p.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)  # a pool child's
    add_size_args(p)
    return p


def run_grid(a: argparse.Namespace, p: argparse.ArgumentParser, out_dir: Path,
             export_dir: Path | None) -> list[tuple[RunSpec, RunMetrics]]:
    """Train (or skip / resume / take from the export) every planned run of one grid; write its tables."""
    full_losses = a.losses if a.full_losses == "all" else parse_losses(a.full_losses)
    recipe = recipe_from_args(a)
    start = time.perf_counter()
    specs = plan_grid(a.settings, a.losses, a.seeds, full_losses)
    exported = {s.name: exported_run(export_dir, s.name, recipe.epochs_run) for s in specs}
    if a.data is not None:
        data, pretrained = a.data, a.pretrained
    elif all(exported.values()):
        data = pretrained = None  # every run is in the export: nothing to train
    else:
        if a.pretrained is not None:
            a.pretrain_epochs = 0
        data, pretrained = prepare(a, recipe)
        pretrained = a.pretrained or pretrained
    lists = a.lists_dir or data
    if data is not None:
        for s in {s.setting for s in specs} | ({"full"} if not a.no_oracle else set()):
            if not (lists / f"coco_train_{s}.txt").is_file():
                p.error(f"--lists-dir {lists}: no coco_train_{s}.txt")
    results = []
    for i, spec in enumerate(specs, 1):
        run_dir = out_dir / spec.name
        if exported[spec.name] is not None:  # complete in the export: taken from there
            print(f"== grid run {i}/{len(specs)}: {spec.name} (exported, skipped)", flush=True)
            results.append((spec, exported[spec.name]))
            continue
        state = "done, skipped" if run_is_complete(run_dir, recipe.epochs_run) else "training"
        print(f"== grid run {i}/{len(specs)}: {spec.name} ({state}) [{time.perf_counter() - start:.0f} s]",
              flush=True)
        results.append((spec, train_run(spec, data, out_dir, recipe, pretrained, oracle=not a.no_oracle,
                                        lists_dir=lists)))
        if export_dir is not None:
            export_run(run_dir, export_dir)
    rows = summarize(results)
    wall = time.perf_counter() - start
    train_seconds = sum(r["seconds_per_run"] * r["n"] for r in rows)
    md = (markdown_table(rows, a.settings, list(dict.fromkeys([*a.losses, *full_losses])), len(a.seeds))
          + f"\nbest val mAP (%), mean ± std over seeds {','.join(map(str, a.seeds))}; {len(specs)} runs, "
            f"{train_seconds / 60:.1f} min of training in all, this invocation {wall / 60:.1f} min wall.\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.md", md)
    atomic_write_text(out_dir / "results.csv", csv_table(rows))
    print("\n" + md + f"\nwrote {out_dir / 'results.md'} and {out_dir / 'results.csv'}", flush=True)
    return results


def _check_strength_export(export_dir: Path, strength: Strength, a: argparse.Namespace) -> None:
    """EXPORT/<strength>/strength.json records the recipe; a different one there is an error, not a mix."""
    recipe = {**vars(strength), **{k: getattr(a, k) for k in ("model_name", "batch_size", "lr", "ema_decay",
                                                                 "val_images", "pretrain_epochs",
                                                                 "pretrain_per_class", "max_steps_per_epoch")}}
    # flags added later count only when set, so that a study exported before them still matches
    recipe |= {k: getattr(a, k) for k, unset in LATER_RECIPE_FLAGS.items() if getattr(a, k, unset) != unset}
    path = export_dir / "strength.json"
    if path.is_file() and json.loads(path.read_text()) != recipe:
        raise SystemExit(f"{path}: strength {strength.name} was exported with another recipe; "
                         f"rename the strength or pass another --export")
    export_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(recipe, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = build_parser()
    a = p.parse_args(argv)
    if a.analyze is not None:
        return _report(a, a.analyze)["cells"]
    if a.jobs < 1:
        p.error(f"--jobs must be >= 1, got {a.jobs}")
    if a.jobs > 1 and not train_in_pool(a, list(sys.argv[1:] if argv is None else argv)):
        return []  # --stop-after left runs unstarted: the command resumes them
    # Serially; after the pool every run is complete, and this only reads them and writes the tables.
    if a.strengths is None:
        return summarize(run_grid(a, p, a.out_dir, a.export))
    rows = []
    for strength in a.strengths:
        sa = argparse.Namespace(**(vars(a) | strength.overrides()))
        export_dir = a.export / strength.name if a.export else None
        if export_dir is not None:
            _check_strength_export(export_dir, strength, sa)
        print(f"==== strength {strength.name}: {strength.image_size} px, {strength.train_images} train images, "
              f"{strength.epochs} epochs, {sa.model_name}", flush=True)
        rows += [r | {"strength": strength.name} for r in summarize(run_grid(sa, p, a.out_dir / strength.name,
                                                                               export_dir))]
    if a.export is not None and not a.no_report:
        _report(a, a.export)
    return rows


def _report(a: argparse.Namespace, export: Path) -> dict:
    """The study's tables and figure from the export (``strength_study.report_study``) for these flags."""
    return report_study(export, a.pics, list(dict.fromkeys([*a.losses, "BCE"])), a.settings, len(a.seeds))


def _without_pool_flags(argv: Sequence[str]) -> list[str]:
    """ARGV less --jobs and --stop-after (with their values), which a pool child must not see."""
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
        elif tok in ("--jobs", "--stop-after"):
            skip = True
        elif not tok.startswith(("--jobs=", "--stop-after=")):
            out.append(tok)
    return out


def _pool_runs(a: argparse.Namespace) -> tuple[list[PoolRun], list[str]]:
    """Every planned run complete neither in the export nor in OUT_DIR, as pool runs; and the strengths' names."""
    full_losses = a.losses if a.full_losses == "all" else parse_losses(a.full_losses)
    specs = plan_grid(a.settings, a.losses, a.seeds, full_losses)

    def pending(export_dir: Path | None, out_dir: Path, name: str, epochs: int) -> bool:
        return exported_run(export_dir, name, epochs) is None and not run_is_complete(out_dir / name, epochs)

    if a.strengths is None:  # one grid: one group, since every run shares the data and the pretraining
        epochs = recipe_from_args(a).epochs_run
        return [PoolRun("grid", None, spec, "grid") for spec in specs
                if pending(a.export, a.out_dir, spec.name, epochs)], ["grid"]
    runs = []
    for strength in a.strengths:
        export_dir = a.export / strength.name if a.export else None
        if export_dir is not None:
            _check_strength_export(export_dir, strength, argparse.Namespace(**(vars(a) | strength.overrides())))
        group = f"{strength.image_size}px"  # the toy data's and the pretraining's cache folders are named by it
        epochs = recipe_from_args(argparse.Namespace(**(vars(a) | strength.overrides()))).epochs_run
        runs += [PoolRun(strength.name, strength.text, spec, group) for spec in specs
                 if pending(export_dir, a.out_dir / strength.name, spec.name, epochs)]
    return runs, [s.name for s in a.strengths]


def train_in_pool(a: argparse.Namespace, argv: Sequence[str]) -> bool:
    """--jobs N: train every run not yet exported, N at a time, each in its own process (src/experiments/run_pool.py).
    True when every run is now complete; False when --stop-after left some unstarted (what is finished of a
    strength study is analysed then). A failed run is an error that names the logs."""
    runs, order = _pool_runs(a)
    print(f"==== {len(runs)} runs to train, {a.jobs} at a time", flush=True)
    result = run_pool(order_runs(runs, order), _without_pool_flags(argv), a.jobs, a.out_dir / "logs",
                      a.stop_after)
    if result["failed"] or result["skipped"]:
        raise SystemExit(f"{len(result['failed'])} runs failed, {len(result['skipped'])} skipped: "
                         f"see {a.out_dir / 'logs'}")
    if not result["not started"]:
        return True
    print(f"{len(result['not started'])} runs not started (--stop-after): run the same command again to train "
          "them", flush=True)
    if a.strengths is not None and a.export is not None and load_study(a.export):
        _report(a, a.export)
    return False


if __name__ == "__main__":
    main()
