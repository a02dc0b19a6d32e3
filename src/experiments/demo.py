"""`make demo`: the pre-registered study's linear protocol, small and fast, and one end-to-end pass of the scripts.

    python -m src.experiments.demo [--seeds N] [--out-dir runs/demo] [--pics pics] [--data-root data]
    python -m src.experiments.demo --remake-backbone    # pretrain the shipped backbone again (hours on a CPU)

1. the COCO-label toy (4,000 training and 1,000 val images at 64 px; made once, cached under data/);
2. the backbone: the pre-registered study's toy-ImageNet pretraining, draw 0 (``BACKBONE``, shipped with its
   checksum; ``--remake-backbone`` makes it again from scratch);
3. protocol L of the study (docs/results_preregistered.md) on ``--seeds`` seeds: BCE, Focal, ASL, Hill and SPLC
   on full, 0.4left and singlelabel, ``train.py --freeze-backbone`` with the study's recipe (a 200-epoch OneCycle
   stopped at epoch 75, its lr pick, EMA off, 20% of the training list held out), every run trained at once as
   batched linear heads (``src.experiments.linear_heads``); prints, as mean ± std with how many seeds are > 0:
   each loss's mAP, Hill − ASL and SPLC − ASL, the drops from each loss's own full-label mAP, and the premise
   (precision and recall of the unobserved entries scored above SPLC's tau, and the missing-label AUROC);
4. ``train.py`` end to end (Hill on 0.4left, 2 epochs from the same backbone) and ``validate.py`` on its
   best.ckpt: the two mAPs must agree;
5. draws pics/demo_findings.png: one dot per seed.

Every stage prints its wall time. The batched heads' rows go to OUT_DIR/linear_heads.jsonl.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from src.experiments.experiments import RunSpec, pretrain, prepare_toy_coco, train_run
from src.experiments.linear_heads import Head, probe_features, train_heads
from src.experiments.preregistered_plan import PRETRAIN, PROTOCOLS, TOY, VAL_SPLIT
from src.experiments.preregistered_report import (CHANGE_EPOCH, GAP_LOSSES, RunResult, drop_advantage, drops,
                                                  figure_questions, mean_sd, paired, stats)
from src.io_utils import atomic_write_text
from src.loss_functions.losses import loss_hyperparameters
from src.figures import display_name

__all__ = ["BACKBONE", "DEMO_SEEDS", "PIPELINE", "main"]

ROOT = Path(__file__).resolve().parents[2]
# The study's pretraining draw 0 (src.experiments.preregistered_plan.PRETRAIN, 200 images per class, seed 0):
# the backbone (classifier left out) of its best.ckpt, as safetensors. --remake-backbone writes it again.
BACKBONE = ROOT / "results" / "backbone" / "resnet10t-toyimagenet-64px-d0.safetensors"
BACKBONE_SHA256 = ROOT / "results" / "backbone" / "resnet10t-toyimagenet-64px-d0.sha256"
DEMO_SEEDS = 10
PROTOCOL = PROTOCOLS["L"]
SETTINGS = PROTOCOL.settings
TAU = float(loss_hyperparameters("SPLC")["tau"])
PIPELINE = RunSpec("Hill", "0.4left")  # the end-to-end run: OUT_DIR/0.4left-Hill-s0
PIPELINE_EPOCHS = 2


class Stages:
    """Prints each stage's start and wall time."""

    def __init__(self):
        self.start = self.last = time.perf_counter()

    def begin(self, text: str) -> None:
        self.last = time.perf_counter()
        print(f"\n== {text} [{self.last - self.start:.0f} s so far]", flush=True)

    def end(self) -> None:
        print(f"   done in {time.perf_counter() - self.last:.0f} s", flush=True)


# ----------------------------------------------------------------------------- the backbone

def check_backbone() -> Path:
    """The shipped backbone, checked against its sha256; SystemExit naming the file and the remedy."""
    path = BACKBONE
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing: restore it from git, or make it again with "
                         "`python -m src.experiments.demo --remake-backbone` (hours on a CPU)")
    expected = BACKBONE_SHA256.read_text().split()[0]
    if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise SystemExit(f"error: {path} does not match its checksum in {BACKBONE_SHA256}: restore it from git")
    return path


def remake_backbone(data_root: Path) -> Path:
    """Pretrain draw 0 as the study did and write its backbone (no classifier) to BACKBONE, with the checksum."""
    import torch  # here: only this path uses torch itself
    from safetensors.torch import save_file

    from src.checkpoint import load_checkpoint
    from src.experiments.preregistered import PRETRAIN_PER_CLASS
    best = pretrain(data_root, PRETRAIN, PRETRAIN.epochs, per_class=PRETRAIN_PER_CLASS, seed=0)
    state = load_checkpoint(best)["model"]
    backbone = {k: v.contiguous() for k, v in state.items() if not k.startswith("fc.") and torch.is_tensor(v)}
    BACKBONE.parent.mkdir(parents=True, exist_ok=True)
    save_file(backbone, str(BACKBONE), metadata={"source": str(best), "model": PRETRAIN.model_name})
    digest = hashlib.sha256(BACKBONE.read_bytes()).hexdigest()
    atomic_write_text(BACKBONE_SHA256, f"{digest}  {BACKBONE.name}\n")
    print(f"wrote {BACKBONE} (sha256 {digest})")
    return BACKBONE


# ----------------------------------------------------------------------------- the linear protocol

def study_lr() -> float:
    """Protocol L's lr, as the study's rule picked it (results/prereg/L/lr.json)."""
    return float(json.loads((ROOT / "results" / "prereg" / "L" / "lr.json").read_text())["lr"])


def linear_argv(data: Path, backbone: Path, lr: float) -> list[str]:
    """train.py's flags of a protocol-L run (the features are computed on the full list)."""
    return ["--data", str(data), "--dataset", str(data / "coco_train_full.txt"), "--loss", "BCE",
            *PROTOCOL.recipe(lr).flags(), "--val-split", str(VAL_SPLIT), "--pretrained", str(backbone)]


def run_linear(data: Path, backbone: Path, seeds: int, out_dir: Path) -> list[tuple[Head, list[dict]]]:
    probe = probe_features(linear_argv(data, backbone, study_lr()),
                           {s: data / f"coco_train_{s}.txt" for s in SETTINGS})
    heads = [Head(loss, setting, seed) for seed in range(seeds) for setting in SETTINGS for loss in PROTOCOL.losses]
    rows = train_heads(probe, heads, oracle_epochs=(CHANGE_EPOCH, PROTOCOL.stop_epoch), oracle_threshold=TAU,
                       held_out_full=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "linear_heads.jsonl", "".join(
        json.dumps({"loss": h.loss, "setting": h.setting, "seed": h.seed, "rows": r}) + "\n"
        for h, r in zip(heads, rows)))
    return list(zip(heads, rows))


def results_for(runs: Sequence[tuple[Head, list[dict]]], reading: str) -> list[RunResult]:
    """RunResults whose ``best`` is the val mAP under ``reading`` (``RunResult.from_head_rows``)."""
    return [RunResult.from_head_rows(h.loss, h.setting, 0, h.seed, rows, reading) for h, rows in runs]


def findings(runs: Sequence[tuple[Head, list[dict]]]) -> str:
    """The demo's tables: mAP, (a), (b), the drops and the premise."""
    missing = [s for s in SETTINGS if s != "full"]
    readings = {"held-out pick": results_for(runs, "observed"), "last epoch": results_for(runs, "last")}
    n = len({h.seed for h, _ in runs})
    out = [f"Val mAP (%) over {n} seeds, mean ± std: the epoch the held-out split picks / the last epoch "
           f"({PROTOCOL.stop_epoch}).", "", "| loss | " + " | ".join(SETTINGS) + " |",
           "| --- |" + " ---: |" * len(SETTINGS)]
    pick, last = readings["held-out pick"], readings["last epoch"]
    for loss in PROTOCOL.losses:
        cells = [f"{mean_sd([r.best for r in pick if r.loss == loss and r.setting == s])} / "
                 f"{mean_sd([r.best for r in last if r.loss == loss and r.setting == s])}" for s in SETTINGS]
        out.append(f"| {display_name(loss)} | " + " | ".join(cells) + " |")
    out += ["", "Paired by seed: mean ± std (n seeds, how many > 0). (a) the loss's mAP minus ASL's; (b) ASL's "
            "drop from its own full-label mAP minus the loss's drop (> 0: the loss loses less).", "",
            "| question | setting | reading | Hill | SPLC |", "| --- | --- | --- | --- | --- |"]
    for label, fn in (("(a) loss − ASL", paired), ("(b) ASL drop − loss drop", drop_advantage)):
        for s in missing:
            for name, results in readings.items():
                out.append(f"| {label} | {s} | {name} | "
                           + " | ".join(stats(fn(results, x, s)) for x in GAP_LOSSES) + " |")
    out += ["", "Drop from each loss's own full-label mAP (held-out pick / last epoch):", "",
            "| loss | " + " | ".join(missing) + " |", "| --- |" + " ---: |" * len(missing)]
    for loss in PROTOCOL.losses:
        out.append(f"| {display_name(loss)} | " + " | ".join(
            f"{mean_sd(drops(pick, loss, s))} / {mean_sd(drops(last, loss, s))}" for s in missing) + " |")
    out += ["", premise_table(pick)]
    return "\n".join(out)


def premise_table(results: Sequence[RunResult]) -> str:
    """(c) at SPLC's tau for every loss: precision and recall of the unobserved training entries scored above it,
    and the missing-label AUROC, at SPLC's first correcting epoch and at the last."""
    last = PROTOCOL.stop_epoch
    out = [f"The premise: the unobserved entries of the training images scored above tau = {TAU:g} (SPLC's "
           f"threshold; the same cut for every loss), on the training passes of epoch {CHANGE_EPOCH} (SPLC's first "
           f"correcting epoch) / epoch {last}: how many are missing labels (precision), how many of the missing "
           f"labels they are (recall), and the AUROC of missing labels against true negatives (%).", "",
           "| loss | setting | precision | recall | AUROC |", "| --- | --- | ---: | ---: | ---: |"]
    for s in [s for s in SETTINGS if s != "full"]:
        for loss in PROTOCOL.losses:
            rs = [r for r in results if r.loss == loss and r.setting == s]
            cells = [f"{mean_sd([r.at(k, CHANGE_EPOCH) for r in rs], 1)} / {mean_sd([r.at(k, last) for r in rs], 1)}"
                     for k in ("missing_precision", "missing_recall", "missing_auroc")]
            out.append(f"| {display_name(loss)} | {s} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# ----------------------------------------------------------------------------- the end-to-end pass

def run_pipeline(data: Path, backbone: Path, out_dir: Path) -> tuple[float, float]:
    """train.py (Hill on 0.4left, end to end, PIPELINE_EPOCHS epochs of protocol E's recipe) and validate.py on
    its best.ckpt; returns (train.py's best mAP, validate.py's mAP)."""
    e = PROTOCOLS["E"]
    lr = float(json.loads((ROOT / "results" / "prereg" / "E" / "lr.json").read_text())["lr"])
    recipe = e.recipe(lr)
    recipe = type(recipe)(**{**recipe.__dict__, "stop_epoch": PIPELINE_EPOCHS - 1})
    run = train_run(PIPELINE, data, out_dir, recipe, backbone, oracle=False)
    best = out_dir / PIPELINE.name / "best.ckpt"
    report = best.with_name("validate.json")
    report.unlink(missing_ok=True)
    subprocess.run([sys.executable, str(ROOT / "validate.py"), "--model-path", str(best), "--data", str(data),
                    "-j", "2", "--device", "cpu", "--json", str(report)], check=True)
    return max(run.best_map), float(json.loads(report.read_text())["map"])


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m src.experiments.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=DEMO_SEEDS, help=f"seeds of the linear protocol (default: "
                                                                  f"{DEMO_SEEDS})")
    p.add_argument("--out-dir", type=Path, default=Path("runs/demo"), help="outputs (default: runs/demo)")
    p.add_argument("--pics", type=Path, default=Path("pics"), help="figure folder (default: pics)")
    p.add_argument("--data-root", type=Path, default=Path("data"), help="generated data cache (default: data)")
    p.add_argument("--no-pipeline", action="store_true", help="skip the end-to-end train.py + validate.py pass")
    p.add_argument("--remake-backbone", action="store_true", help="pretrain the shipped backbone again and stop")
    a = p.parse_args(argv)
    if a.seeds < 2:
        p.error("--seeds must be at least 2 (the demo reports a spread over seeds)")
    if a.remake_backbone:
        remake_backbone(a.data_root)
        return ""
    stages = Stages()
    stages.begin(f"toy COCO: {TOY['train']} training and {TOY['val']} val images at {TOY['image_size']} px "
                 "(made once, then cached)")
    data = prepare_toy_coco(a.data_root, TOY["train"], TOY["val"], TOY["image_size"])
    stages.end()
    backbone = check_backbone()
    stages.begin(f"protocol L on {a.seeds} seeds: {len(PROTOCOL.losses)} losses x {len(SETTINGS)} settings x "
                 f"{a.seeds} seeds = {len(PROTOCOL.losses) * len(SETTINGS) * a.seeds} frozen-backbone runs "
                 f"({PROTOCOL.stop_epoch + 1} epochs each) as batched linear heads on {backbone.name}")
    runs = run_linear(data, backbone, a.seeds, a.out_dir)
    stages.end()
    table = findings(runs)
    print("\n" + table, flush=True)
    figure = figure_questions("the demo (protocol L)", {"held-out pick": results_for(runs, "observed"),
                                                        "last epoch": results_for(runs, "last")},
                              [s for s in SETTINGS if s != "full"], a.pics / "demo_findings.png")
    print(f"\nfigure: {figure}", flush=True)
    if not a.no_pipeline:
        stages.begin(f"the scripts end to end: train.py, Hill on 0.4left, {PIPELINE_EPOCHS} epochs; validate.py "
                     "on its best.ckpt")
        trained, validated = run_pipeline(data, backbone, a.out_dir)
        agree = abs(trained - validated) < 0.01
        print(f"   train.py best mAP {trained:.2f}, validate.py {validated:.2f}: "
              f"{'they agree' if agree else 'THEY DISAGREE'}", flush=True)
        stages.end()
        if not agree:
            raise SystemExit("error: validate.py does not reproduce train.py's best mAP")
    print(f"\ntotal {time.perf_counter() - stages.start:.0f} s (outputs in {a.out_dir}, data in {a.data_root})",
          flush=True)
    return table


if __name__ == "__main__":
    main()
