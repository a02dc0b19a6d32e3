"""The exported runs of a model-strength study (``reproduce --strengths ... --export DIR``) and their analysis.

An export holds, per strength, DIR/<strength>/strength.json (the recipe) and, per finished run,
DIR/<strength>/<setting>-<loss>-s<seed>/ with metrics.jsonl, args.json and command.json: no checkpoints, so it
can be committed. ``report_study`` reads it back and writes DIR/analysis.md and .csv: per strength and setting
each loss's mAP (mean ± std over seeds), the paired per-seed gaps Hill - ASL and SPLC - ASL, the last-epoch
missing-label precision and recall; and it draws PICS/strength_gap.png. docs/results_strength.md is the study.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from pathlib import Path
from typing import Sequence

from src.io_utils import atomic_write_text
from src.experiments.experiments import RunSpec
from src.run_metrics import MetricsError, RunMetrics, read_run
from src.figures import plot_strength_gap

__all__ = ["EXPORTED_FILES", "export_run", "exported_run", "load_study", "analyze_study", "study_markdown",
           "study_csv", "report_study"]


EXPORTED_FILES = ("metrics.jsonl", "args.json", "command.json")


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
