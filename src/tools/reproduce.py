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

Model-strength study (docs/results_strength.md): --strengths S1=48/2000/6,S2=64/4000/8 runs the grid once
per strength (image px / toy COCO train images / epochs [/ timm model]), in the order given, into
OUT_DIR/<strength>, each with its own cached toy ImageNet pretraining. --export DIR copies every finished
run's metrics.jsonl, args.json and command.json (no checkpoints) to DIR/<strength>/<run>; a run found
complete there is not trained again, so a later session resumes from the committed export alone.
--analyze DIR (no training) writes DIR/analysis.md and .csv: per strength and setting each loss's mAP
(mean ± std over seeds), the paired per-seed gaps Hill - ASL and SPLC - ASL, the last-epoch missing-label
precision / recall; and draws PICS/strength_gap.png (the gaps against full-label BCE mAP).
--jobs N trains N runs at once, each in its own process (src/tools/run_pool.py), then writes the tables.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from src.io_utils import atomic_write_text
from src.tools.experiments import (RunSpec, add_size_args, parse_losses, prepare, recipe_from_args, run_is_complete,
                                   train_run)
from src.tools.plot_metrics import MetricsError, RunMetrics, read_run
from src.tools.run_pool import PoolRun, order_runs, run_pool

__all__ = ["SETTINGS", "Strength", "parse_strengths", "plan_grid", "summarize", "markdown_table", "csv_table",
           "export_run", "exported_run", "load_study", "analyze_study", "study_markdown", "main"]

SETTINGS = ("full", "0.75left", "0.4left", "singlelabel")
# Official README: "when SPLC is used on COCO-75% labels left, the threshold is set 0.65".
SETTING_LOSS_FLAGS = {("0.75left", "SPLC"): ("--tau", "0.65")}


EXPORTED_FILES = ("metrics.jsonl", "args.json", "command.json")


@dataclass(frozen=True)
class Strength:
    """One point of the model-strength axis: the toy COCO's image size and train images, and the epochs."""
    name: str
    image_size: int
    train_images: int
    epochs: int
    model_name: str | None = None  # None: the --model-name flag

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


def export_run(run_dir: Path, export_dir: Path) -> Path:
    """Copy a finished run's small files (metrics, args, command; no checkpoints) to EXPORT_DIR/<run>."""
    dest = export_dir / run_dir.name
    dest.mkdir(parents=True, exist_ok=True)
    for name in EXPORTED_FILES:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, dest / name)
    return dest


def exported_run(export_dir: Path | None, name: str, epochs: int) -> RunMetrics | None:
    """The exported run EXPORT_DIR/NAME when it holds rows for epochs 0..epochs-1, else None."""
    if export_dir is None:
        return None
    try:
        run = read_run(export_dir / name)
    except MetricsError:
        return None
    return run if run.epochs == list(range(epochs)) else None


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


# ----------------------------------------------------------------------------- the strength study

GAP_LOSSES = ("Hill", "SPLC")  # each compared with ASL, seed by seed
REFERENCE = ("full", "BCE")  # the x axis of the strength study: full-label BCE mAP


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v == v]  # NaN (undefined precision) left out
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def load_study(export_root: Path) -> list[tuple[str, RunSpec, RunMetrics]]:
    """Every complete exported run under EXPORT_ROOT/<strength>/<setting>-<loss>-s<seed> as (strength, spec, run).

    A strength folder needs the strength.json the study writes (its 'epochs' says when a run is complete);
    an unfinished run is left out. Strengths come in the order of their folder names.
    """
    out = []
    for sdir in sorted(d for d in export_root.iterdir() if d.is_dir()) if export_root.is_dir() else []:
        meta = sdir / "strength.json"
        if not meta.is_file():
            raise SystemExit(f"{sdir}: no strength.json (is {export_root} a --export folder of --strengths?)")
        epochs = int(json.loads(meta.read_text())["epochs"])
        for rdir in sorted(d for d in sdir.iterdir() if d.is_dir()):
            parts = rdir.name.split("-")
            if len(parts) != 3 or not parts[2].startswith("s") or not parts[2][1:].isdigit():
                raise SystemExit(f"{rdir}: not a <setting>-<loss>-s<seed> run folder")
            run = exported_run(sdir, rdir.name, epochs)
            if run is not None:
                out.append((sdir.name, RunSpec(parts[1], parts[0], int(parts[2][1:])), run))
    return out


def _last(run: RunMetrics, key: str) -> float:
    v = run.rows[-1].get(key)
    return float(v) if isinstance(v, (int, float)) else float("nan")


def analyze_study(runs: Sequence[tuple[str, RunSpec, RunMetrics]]) -> dict:
    """Per strength: the cells (loss x setting: mAP mean ± std, last-epoch missing-label precision/recall),
    the paired per-seed gaps Hill - ASL and SPLC - ASL per setting, and the full-label BCE reference."""
    best: dict[tuple[str, str, str], dict[int, RunMetrics]] = {}
    for strength, spec, run in runs:
        best.setdefault((strength, spec.setting, spec.loss), {})[spec.seed] = run
    cells = []
    for (strength, setting, loss), by_seed in best.items():
        seeds = sorted(by_seed)
        maps = [max(by_seed[s].best_map) for s in seeds]
        m, sd = _mean_std(maps)
        cells.append({"strength": strength, "setting": setting, "loss": loss, "seeds": seeds, "maps": maps,
                      "n": len(maps), "mean": m, "std": sd,
                      "missing_precision": _mean_std([_last(by_seed[s], "missing_precision") for s in seeds])[0],
                      "missing_recall": _mean_std([_last(by_seed[s], "missing_recall") for s in seeds])[0],
                      "seconds_per_run": statistics.fmean(sum(float(r.get("seconds", 0.0)) for r in by_seed[s].rows)
                                                          for s in seeds)})
    by = {(c["strength"], c["setting"], c["loss"]): c for c in cells}
    strengths = list(dict.fromkeys(c["strength"] for c in cells))
    gaps = []
    for strength in strengths:
        ref = by.get((strength, *REFERENCE))
        for setting in dict.fromkeys(c["setting"] for c in cells if c["strength"] == strength):
            asl = by.get((strength, setting, "Asl"))
            for loss in GAP_LOSSES:
                other = by.get((strength, setting, loss))
                if asl is None or other is None or setting == "full":
                    continue
                a_map = dict(zip(asl["seeds"], asl["maps"]))
                diffs = [m - a_map[s] for s, m in zip(other["seeds"], other["maps"]) if s in a_map]
                if not diffs:
                    continue
                m, sd = _mean_std(diffs)
                gaps.append({"strength": strength, "setting": setting, "loss": loss, "n": len(diffs),
                             "diffs": diffs, "mean": m, "std": sd,
                             "ref_mean": ref["mean"] if ref else None, "ref_std": ref["std"] if ref else None,
                             "ref_n": ref["n"] if ref else 0})
    return {"strengths": strengths, "cells": cells, "gaps": gaps}


def _pm(mean: float | None, std: float | None, n: int, of: int, sign: bool = False) -> str:
    """'mean ± std', with '(n/of)' when seeds are missing; '-' for no value."""
    if mean is None:
        return "-"
    text = f"{mean:+.2f}" if sign else f"{mean:.2f}"
    text += f" ± {std:.2f}" if std is not None else ""
    return text + (f" ({n}/{of})" if n < of else "")


def study_markdown(study: dict, losses: Sequence[str], settings: Sequence[str], expected_seeds: int) -> str:
    """The gap table (one row per strength) and, per strength, mAP and missing-label precision/recall."""
    by = {(c["strength"], c["setting"], c["loss"]): c for c in study["cells"]}
    gaps = {(g["strength"], g["setting"], g["loss"]): g for g in study["gaps"]}
    settings = [s for s in settings if any(c["setting"] == s for c in study["cells"])]
    miss = [s for s in settings if s != "full"]
    head = ["strength", "full-label BCE mAP"] + [f"{s} {loss} − ASL" for s in miss for loss in GAP_LOSSES]
    out = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for st in study["strengths"]:
        ref = by.get((st, *REFERENCE))
        row = [st, _pm(ref["mean"], ref["std"], ref["n"], expected_seeds) if ref else "-"]
        for s in miss:
            for loss in GAP_LOSSES:
                g = gaps.get((st, s, loss))
                row.append("-" if g is None else _pm(g["mean"], g["std"], g["n"], expected_seeds, sign=True))
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    for st in study["strengths"]:
        mine = [c for c in study["cells"] if c["strength"] == st]
        runs = sum(c["n"] for c in mine)
        minutes = sum(c["seconds_per_run"] * c["n"] for c in mine) / runs / 60
        out += [f"**{st}** ({runs} run{'s' if runs != 1 else ''}, {minutes:.1f} min per run): best val mAP (%), "
                f"mean ± std over seeds; last-epoch missing-label precision / recall (%, mean over seeds)", ""]
        cols = [s for s in settings if any((st, s, loss) in by for loss in losses)]
        hdr = ["loss"] + [f"{s} mAP" for s in cols] + [f"{s} P / R" for s in cols if s != "full"]
        out += ["| " + " | ".join(hdr) + " |", "| --- |" + " ---: |" * (len(hdr) - 1)]
        for loss in losses:
            cells = [by.get((st, s, loss)) for s in cols]
            if not any(cells):
                continue
            row = [loss] + [_pm(c["mean"], c["std"], c["n"], expected_seeds) if c else "" for c in cells]
            row += ["" if c is None or c["missing_precision"] is None and c["missing_recall"] is None else
                    f"{_fmt0(c['missing_precision'])} / {_fmt0(c['missing_recall'])}"
                    for s, c in zip(cols, cells) if s != "full"]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def _fmt0(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def study_csv(study: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "strength", "setting", "loss", "n", "mean", "std", "values", "missing_precision",
                "missing_recall", "ref_mean", "ref_std"])
    f = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    for c in study["cells"]:
        w.writerow(["map", c["strength"], c["setting"], c["loss"], c["n"], f(c["mean"]), f(c["std"]),
                    " ".join(f"{m:.4f}" for m in c["maps"]), f(c["missing_precision"]), f(c["missing_recall"]),
                    "", ""])
    for g in study["gaps"]:
        w.writerow(["gap_vs_asl", g["strength"], g["setting"], g["loss"], g["n"], f(g["mean"]), f(g["std"]),
                    " ".join(f"{d:.4f}" for d in g["diffs"]), "", "", f(g["ref_mean"]), f(g["ref_std"])])
    return buf.getvalue()


def report_study(export_root: Path, pics: Path, losses: Sequence[str], settings: Sequence[str],
                 expected_seeds: int) -> dict:
    """Analyse the exported study: EXPORT_ROOT/analysis.{md,csv} and PICS/strength_gap.png."""
    from src.tools.plot_metrics import plot_strength_gap

    study = analyze_study(load_study(export_root))
    if not study["cells"]:
        raise SystemExit(f"{export_root}: no finished runs to analyse")
    md = study_markdown(study, losses, settings, expected_seeds)
    atomic_write_text(export_root / "analysis.md", md)
    atomic_write_text(export_root / "analysis.csv", study_csv(study))
    figure = None
    if any(g["ref_mean"] is not None for g in study["gaps"]):
        figure = plot_strength_gap(study["gaps"], pics / "strength_gap.png")
    print(md + f"\nwrote {export_root / 'analysis.md'}, {export_root / 'analysis.csv'}"
          + (f", {figure}" if figure else ""), flush=True)
    return study


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
                   help="runs at once, each in its own process (src/tools/run_pool.py; default: 1)")
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
    exported = {s.name: exported_run(export_dir, s.name, recipe.epochs) for s in specs}
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
        state = "done, skipped" if run_is_complete(run_dir, recipe.epochs) else "training"
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
        return report_study(a.analyze, a.pics, list(dict.fromkeys([*a.losses, "BCE"])), a.settings,
                            len(a.seeds))["cells"]
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
        report_study(a.export, a.pics, list(dict.fromkeys([*a.losses, "BCE"])), a.settings, len(a.seeds))
    return rows


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


def _strength_text(strength: Strength) -> str:
    """The --strengths item of ``strength``: NAME=PX/IMAGES/EPOCHS[/MODEL]."""
    return f"{strength.name}={strength.image_size}/{strength.train_images}/{strength.epochs}" \
        + (f"/{strength.model_name}" if strength.model_name else "")


def _pool_runs(a: argparse.Namespace) -> tuple[list[PoolRun], list[str]]:
    """Every planned run not yet complete in the export, as pool runs; and the strengths' names, in order."""
    full_losses = a.losses if a.full_losses == "all" else parse_losses(a.full_losses)
    specs = plan_grid(a.settings, a.losses, a.seeds, full_losses)
    if a.strengths is None:  # one grid: one group, since every run shares the data and the pretraining
        return [PoolRun("grid", None, spec, "grid") for spec in specs
                if exported_run(a.export, spec.name, a.epochs) is None], ["grid"]
    runs = []
    for strength in a.strengths:
        export_dir = a.export / strength.name if a.export else None
        if export_dir is not None:
            _check_strength_export(export_dir, strength, argparse.Namespace(**(vars(a) | strength.overrides())))
        group = f"{strength.image_size}px"  # the toy data's and the pretraining's cache folders are named by it
        runs += [PoolRun(strength.name, _strength_text(strength), spec, group) for spec in specs
                 if exported_run(export_dir, spec.name, strength.epochs) is None]
    return runs, [s.name for s in a.strengths]


def train_in_pool(a: argparse.Namespace, argv: Sequence[str]) -> bool:
    """--jobs N: train every run not yet exported, N at a time, each in its own process (src/tools/run_pool.py).
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
        report_study(a.export, a.pics, list(dict.fromkeys([*a.losses, "BCE"])), a.settings, len(a.seeds))
    return False


if __name__ == "__main__":
    main()
