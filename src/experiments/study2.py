"""Study 2 of the pre-registered study (issue 34; the protocol is on docs/results_preregistered.md): its linear
parts, trained as batched linear heads.

    python -m src.experiments.study2 --lr-pick        # S2.2 for L: full-label BCE at 1e-2, 3e-2, 1e-1
    python -m src.experiments.study2 --draw D         # S2.1 (and S2.4): protocol L's grid on pretraining draw D
    python -m src.experiments.study2 --analyze        # the tables of S2.1 from the export

Exports go to EXPORT/L/: lr.json (the pick, with the held-out mAP of every lr), lr<lr>-d<D>.jsonl (one line
per run: loss, setting, seed, draw, lr and every epoch's row, the missing-label statistics at tau = 0.6 of
every epoch included) and the command of each in commands.txt. A file already exported is not trained again.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

from src.engine import selected_map
from src.experiments.experiments import pretrain, prepare_toy_coco
from src.experiments.linear_heads import Head, probe_features, train_heads
from src.experiments.preregistered_plan import PRETRAIN, PROTOCOLS, TOY, VAL_SPLIT
from src.experiments.preregistered_report import (GAP_LOSSES, RunResult, drop_advantage, mean_sd, paired, stats)
from src.io_utils import atomic_write_text, read_json

__all__ = ["LR_GRID", "SEEDS", "DRAWS", "TAU", "main"]

PROTOCOL = PROTOCOLS["L"]
LR_GRID = (1e-2, 3e-2, 1e-1)
LR_SEEDS = (0, 1, 2)
SEEDS = tuple(range(5))
DRAWS = (0, 1, 2)
TAU = 0.6
READING_NAMES = {"registered (held-out, observed labels)": "observed", "held-out, full labels": "full",
            "last epoch": "last"}


def backbone(data_root: Path, draw: int) -> Path:
    """The study's pretraining of ``draw`` (cached under data/pretrain; the shipped file for draw 0)."""
    from src.experiments.demo import BACKBONE, check_backbone
    if draw == 0 and BACKBONE.is_file():
        return check_backbone()
    from src.experiments.preregistered import PRETRAIN_PER_CLASS
    return pretrain(data_root, PRETRAIN, PRETRAIN.epochs, per_class=PRETRAIN_PER_CLASS, seed=draw)


def grid(data: Path, weights: Path, lr: float, heads: list[Head], out: Path, draw: int) -> list[dict]:
    """Train ``heads`` at ``lr`` on ``weights``' features; write OUT (one line per run) and return the lines."""
    settings = sorted({h.setting for h in heads} | {"full"})
    argv = ["--data", str(data), "--dataset", str(data / "coco_train_full.txt"), "--loss", "BCE",
            *PROTOCOL.recipe(lr).flags(), "--val-split", str(VAL_SPLIT), "--pretrained", str(weights)]
    probe = probe_features(argv, {s: data / f"coco_train_{s}.txt" for s in settings})
    rows = train_heads(probe, heads, oracle_threshold=TAU)
    lines = [{"loss": h.loss, "setting": h.setting, "seed": h.seed, "draw": draw, "lr": lr, "rows": r}
             for h, r in zip(heads, rows)]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(json.dumps(line) + "\n" for line in lines))
    with open(out.parent / "commands.txt", "a") as f:
        f.write(f"{out.name}: python -m src.experiments.study2 {' '.join(sys.argv[1:])}\n")
    return lines


def read_runs(path: Path) -> list[dict]:
    """The lines of an exported grid; a torn file is an error naming it."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {path}: not a readable export ({e})") from None


def lr_pick(a: argparse.Namespace, data: Path) -> float:
    """S2.2 for L: the lr of LR_GRID with the highest mean best held-out mAP of full-label BCE (ties: smaller)."""
    path = a.export / "L" / "lr.json"
    if path.is_file():
        return float(read_json(path)["lr"])
    weights, by_lr = backbone(a.data_root, 0), {}
    for lr in LR_GRID:
        out = a.export / "L" / f"lr-pick-lr{lr:g}.jsonl"
        lines = read_runs(out) if out.is_file() else grid(data, weights, lr, [Head("BCE", "full", s) for s in LR_SEEDS],
                                                          out, 0)
        by_lr[f"{lr:g}"] = statistics.fmean(max(selected_map(r) for r in x["rows"]) for x in lines)
    best = max(LR_GRID, key=lambda lr: (by_lr[f"{lr:g}"], -lr))
    atomic_write_text(path, json.dumps({"lr": best, "held_out_map_by_lr": by_lr, "lr_seeds": list(LR_SEEDS),
                                        "rule": "full-label BCE, draw 0, mean over lr_seeds of the best held-out "
                                                "mAP; ties: the smaller lr"}, indent=1) + "\n")
    print(f"== lr picked: {best:g} ({by_lr})", flush=True)
    return best


def run_draw(a: argparse.Namespace, data: Path, draw: int) -> Path:
    lr = lr_pick(a, data)
    out = a.export / "L" / f"lr{lr:g}-d{draw}.jsonl"
    if out.is_file():
        print(f"== {out} is exported already", flush=True)
        return out
    heads = [Head(loss, s, seed) for seed in SEEDS for s in PROTOCOL.settings for loss in PROTOCOL.losses]
    start = time.perf_counter()
    grid(data, backbone(a.data_root, draw), lr, heads, out, draw)
    print(f"== draw {draw}: {len(heads)} runs exported to {out} ({time.perf_counter() - start:.0f} s)", flush=True)
    return out


def results(lines: Sequence[dict], reading: str) -> list[RunResult]:
    return [RunResult.from_head_rows(x["loss"], x["setting"], x["draw"], x["seed"], x["rows"], reading)
            for x in lines]


def analyze(export: Path) -> str:
    """(a) and (b) of S2.1 under each reading, over every exported draw (mean ± std over (draw, seed) pairs),
    then by draw (each draw's mean over its seeds) where there are several."""
    lr = float(read_json(export / "L" / "lr.json")["lr"])
    lines = [x for f in sorted((export / "L").glob(f"lr{lr:g}-d*.jsonl")) for x in read_runs(f)]
    draws = sorted({x["draw"] for x in lines})
    by_reading = {name: results(lines, reading) for name, reading in READING_NAMES.items()}
    missing = [s for s in PROTOCOL.settings if s != "full"]
    questions = (("(a) loss − ASL", paired), ("(b) ASL drop − loss drop", drop_advantage))
    out = [f"### S2.1: protocol L at lr {lr:g}, draws {draws} ({len(lines)} runs)", "",
           "| question | setting | reading | Hill | SPLC |", "| --- | --- | --- | --- | --- |"]
    for label, fn in questions:
        for s in missing:
            for name, rs in by_reading.items():
                out.append(f"| {label} | {s} | {name} | " + " | ".join(stats(fn(rs, x, s)) for x in GAP_LOSSES) + " |")
    if len(draws) > 1:
        out += ["", "By pretraining draw (mean ± std over that draw's seeds):", "",
                "| question | setting | reading | draw | Hill | SPLC |", "| --- | --- | --- | ---: | --- | --- |"]
        for label, fn in questions:
            for s in missing:
                for name, rs in by_reading.items():
                    for d in draws:
                        own = [r for r in rs if r.draw == d]
                        out.append(f"| {label} | {s} | {name} | {d} | "
                                   + " | ".join(mean_sd(fn(own, x, s)) for x in GAP_LOSSES) + " |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.experiments.study2", description=__doc__.split("\n\n")[0])
    ap.add_argument("--lr-pick", action="store_true", help="S2.2 for protocol L")
    ap.add_argument("--draw", type=int, choices=DRAWS, help="S2.1: train protocol L's grid on this draw")
    ap.add_argument("--analyze", action="store_true", help="print S2.1's tables from the export")
    ap.add_argument("--export", type=Path, default=Path("results/prereg2"), help="default: results/prereg2")
    ap.add_argument("--data-root", type=Path, default=Path("data"), help="generated data cache (default: data)")
    a = ap.parse_args(argv)
    if a.analyze:
        print(analyze(a.export))
        return 0
    data = prepare_toy_coco(a.data_root, TOY["train"], TOY["val"], TOY["image_size"])
    if a.lr_pick:
        lr_pick(a, data)
    if a.draw is not None:
        run_draw(a, data, a.draw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
