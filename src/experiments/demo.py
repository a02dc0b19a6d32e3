"""`make demo`: the paper's comparison on the toy COCO, end to end with train.py's trainer, in minutes on a CPU.

    python -m src.experiments.demo [--losses BCE,Focal,Asl,Hill,SPLC] [--epochs N] [--train-images N]
        [--image-size N] [--max-steps-per-epoch N] [--out-dir runs/demo] [--pretrain-epochs N]

1. makes the toy COCO under data/ (once; cached by its manifest);
2. pretrains the backbone on the single-object toy ImageNet (once; cached under data/pretrain/), as the
   paper starts from ImageNet weights: a model that already knows the objects is what lets Hill and
   SPLC tell a missing label from a true negative early on;
3. fine-tunes as train.py does on the 40%-left list, once per loss, plus BCE on the full list as a reference,
   with one recipe for all, logging with --oracle-list how well each finds the missing labels;
4. prints a table (best mAP; final-epoch CF1, OF1, missing-label AUROC, top-k precision, precision and recall) and draws
   pics/demo_map.png and pics/demo_missing_labels.png.

A run whose folder already holds all its epochs is not trained again; an interrupted one is resumed.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Sequence

from src.experiments.experiments import RunSpec, add_size_args, parse_losses, prepare, recipe_from_args, train_run
from src.run_metrics import RunMetrics
from src.figures import display_name, plot_runs

__all__ = ["DEFAULT_LOSSES", "results_table", "main"]

DEFAULT_LOSSES = ("BCE", "Focal", "Asl", "Hill", "SPLC")
DEMO_PRETRAIN_PER_CLASS = 60
SETTING_TITLES = {"0.75left": "75% of the labels left", "0.4left": "40% of the labels left",
                  "singlelabel": "a single label left per image"}


# ----------------------------------------------------------------------------- report

def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def results_table(runs: Sequence[tuple[RunSpec, RunMetrics]]) -> str:
    """Markdown table: best mAP (model or EMA, any epoch) and the final epoch's mAP, CF1, OF1 and how well the
    model separates the missing labels from the true negatives (percent): AUROC and top-k precision
    (threshold-free), then precision / recall at p > 0.5 (SPLC: p > tau)."""
    head = ("| loss | labels | best mAP | final mAP | CF1 | OF1 | missing-label AUROC | top-k precision | "
            "precision / recall at 0.5 |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    lines = []
    for spec, run in runs:
        last = run.rows[-1]
        pr = "-" if _fmt(last.get("missing_precision")) == "-" and _fmt(last.get("missing_recall")) == "-" else \
            f"{_fmt(last.get('missing_precision'))} / {_fmt(last.get('missing_recall'))}"
        lines.append(f"| {display_name(spec.loss)} | {spec.setting} | {max(run.best_map):.2f} | "
                     f"{run.best_map[-1]:.2f} | {_fmt(last.get('cf1'))} | {_fmt(last.get('of1'))} | "
                     f"{_fmt(last.get('missing_auroc'))} | {_fmt(last.get('missing_topk_precision'))} | {pr} |")
    return head + "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m src.experiments.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--losses", type=parse_losses, default=list(DEFAULT_LOSSES),
                   help=f"losses on the 40%%-left list (default: {','.join(DEFAULT_LOSSES)})")
    p.add_argument("--setting", default="0.4left", choices=["0.75left", "0.4left", "singlelabel"],
                   help="missing-label list the losses train on (default: 0.4left)")
    p.add_argument("--no-upper-bound", action="store_true", help="skip BCE on the full list")
    p.add_argument("--out-dir", type=Path, default=Path("runs/demo"), help="run folders (default: runs/demo)")
    p.add_argument("--pics", type=Path, default=Path("pics"), help="figure folder (default: pics)")
    add_size_args(p)
    # 80 classes x 60 images: the toy ImageNet stays at the 4,800 images it had with 24 classes, so that the
    # demo keeps within 10 minutes on 2 cores; the pre-registered study pretrains on 200 per class.
    p.set_defaults(pretrain_per_class=DEMO_PRETRAIN_PER_CLASS)
    a = p.parse_args(argv)
    start = time.perf_counter()
    recipe = recipe_from_args(a)
    data, pretrained = prepare(a, recipe)
    specs = [RunSpec(loss, a.setting) for loss in a.losses]
    if not a.no_upper_bound:
        specs.append(RunSpec("BCE", "full"))
    done = []
    for i, spec in enumerate(specs, 1):
        print(f"== run {i}/{len(specs)}: {spec.loss} on coco_train_{spec.setting}.txt "
              f"({'pretrained' if pretrained else 'from scratch'}, {recipe.epochs} epochs) "
              f"[{time.perf_counter() - start:.0f} s so far]", flush=True)
        done.append((spec, train_run(spec, data, a.out_dir, recipe, pretrained)))
    table = results_table(done)
    runs = [r for _, r in done]
    labels = [f"{display_name(s.loss)} ({s.setting})" for s, _ in done]
    map_png = plot_runs(runs, a.pics / "demo_map.png", labels=labels, panels=("map",),
                        title=f"toy COCO, {SETTING_TITLES[a.setting]}\n(dashed: BCE on the full list, for reference)")
    missing = [(r, n) for (s, r), n in zip(done, labels) if r.has_missing]
    figures = [map_png]
    if missing:
        figures.append(plot_runs([r for r, _ in missing], a.pics / "demo_missing_labels.png",
                                 labels=[n for _, n in missing], panels=("missing",),
                                 title="how well each loss's model finds the labels missing from its list"))
    print(f"\n{table}\nfigures: {', '.join(map(str, figures))}\n"
          f"total {time.perf_counter() - start:.0f} s (runs in {a.out_dir}, data in {a.data_root})", flush=True)
    return table


if __name__ == "__main__":
    main()
