"""The paper's grid (losses x missing-label settings x seeds) through train.py, with a mean ± std table.

    python -m src.tools.reproduce --settings full,0.75left,0.4left,singlelabel --losses BCE,Focal,Asl,Hill,SPLC
        --seeds 0,1,2 [--full-losses BCE] [--out-dir runs/grid] [size flags of src.tools.demo]
    python -m src.tools.reproduce --data /home/MSCOCO_2014 --lists-dir dataset --pretrained resnet50.pth
        --model-name resnet50 --image-size 448 --epochs 80 ...   # a real COCO 2014 root

Every run goes to OUT_DIR/<setting>-<loss>-s<seed>. A run whose metrics.jsonl already holds every planned
epoch is skipped and an interrupted one resumed, so the command can be re-run until the grid is done.
The setting 'full' is the upper bound: only --full-losses (default BCE; 'all' = every --losses) run on it.
SPLC on 0.75left uses tau = 0.65, as the official README prescribes; every other hyperparameter is the
loss's default. Writes OUT_DIR/results.md and OUT_DIR/results.csv: the best val mAP (max over epochs of
model and EMA) per loss and setting, mean ± sample std over the seeds (std '-' with one seed), the seed
count, and the mean training time of a run.
"""
from __future__ import annotations

import argparse
import csv
import io
import statistics
import time
from pathlib import Path
from typing import Sequence

from src.io_utils import atomic_write_text
from src.tools.demo import RunSpec, add_size_args, parse_losses, prepare, recipe_from_args, run_is_complete, train_run
from src.tools.plot_metrics import RunMetrics

__all__ = ["SETTINGS", "plan_grid", "summarize", "markdown_table", "csv_table", "main"]

SETTINGS = ("full", "0.75left", "0.4left", "singlelabel")
# Official README: "when SPLC is used on COCO-75% labels left, the threshold is set 0.65".
SETTING_LOSS_FLAGS = {("0.75left", "SPLC"): ("--tau", "0.65")}


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


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m src.tools.reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", type=_csv_list(str, SETTINGS), default=list(SETTINGS),
                   help="comma-separated subset of " + ",".join(SETTINGS))
    p.add_argument("--losses", type=parse_losses, default=["BCE", "Focal", "Asl", "Hill", "SPLC"])
    p.add_argument("--full-losses", default="BCE",
                   help="losses run on the full list (the upper bound); 'all' = every --losses (default: BCE)")
    p.add_argument("--seeds", type=_csv_list(int), default=[0, 1, 2])
    p.add_argument("--out-dir", type=Path, default=Path("runs/grid"))
    p.add_argument("--data", type=Path, default=None,
                   help="a real COCO 2014 root instead of the toy COCO (then --lists-dir holds the lists)")
    p.add_argument("--lists-dir", type=Path, default=None,
                   help="folder of coco_train_<setting>.txt (default: the data folder)")
    p.add_argument("--pretrained", type=Path, default=None,
                   help="backbone weights for every run (replaces the toy ImageNet pretraining)")
    p.add_argument("--no-oracle", action="store_true", help="do not log missing-label precision/recall")
    add_size_args(p)
    a = p.parse_args(argv)
    full_losses = a.losses if a.full_losses == "all" else parse_losses(a.full_losses)
    recipe = recipe_from_args(a)
    start = time.perf_counter()
    if a.data is not None:
        data, pretrained = a.data, a.pretrained
    else:
        if a.pretrained is not None:
            a.pretrain_epochs = 0
        data, pretrained = prepare(a, recipe)
        pretrained = a.pretrained or pretrained
    lists = a.lists_dir or data
    specs = plan_grid(a.settings, a.losses, a.seeds, full_losses)
    for s in {s.setting for s in specs} | ({"full"} if not a.no_oracle else set()):
        if not (lists / f"coco_train_{s}.txt").is_file():
            p.error(f"--lists-dir {lists}: no coco_train_{s}.txt")
    results = []
    for i, spec in enumerate(specs, 1):
        run_dir = a.out_dir / spec.name
        state = "done, skipped" if run_is_complete(run_dir, recipe.epochs) else "training"
        print(f"== grid run {i}/{len(specs)}: {spec.name} ({state}) [{time.perf_counter() - start:.0f} s]",
              flush=True)
        results.append((spec, train_run(spec, data, a.out_dir, recipe, pretrained, oracle=not a.no_oracle,
                                        lists_dir=lists)))
    rows = summarize(results)
    wall = time.perf_counter() - start
    train_seconds = sum(r["seconds_per_run"] * r["n"] for r in rows)
    md = (markdown_table(rows, a.settings, list(dict.fromkeys([*a.losses, *full_losses])), len(a.seeds))
          + f"\nbest val mAP (%), mean ± std over seeds {','.join(map(str, a.seeds))}; {len(specs)} runs, "
            f"{train_seconds / 60:.1f} min of training in all, this invocation {wall / 60:.1f} min wall.\n")
    atomic_write_text(a.out_dir / "results.md", md)
    atomic_write_text(a.out_dir / "results.csv", csv_table(rows))
    print("\n" + md + f"\nwrote {a.out_dir / 'results.md'} and {a.out_dir / 'results.csv'}", flush=True)
    return rows


if __name__ == "__main__":
    main()
