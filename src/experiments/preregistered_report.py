"""The tables and figures of the pre-registered study, from its export alone (``preregistered --analyze``).

For each protocol with an lr.json under EXPORT/<P>/, every complete exported run at that lr is read:
EXPORT/<P>/lr<lr>/d<draw>/<setting>-<loss>-s<seed>/{metrics.jsonl, test_metrics.json}. Per run:

- ``best``: the val-set mAP of the epoch picked on the held-out split (test_metrics.json "map");
- ``last``: the val-set mAP of the last epoch's weights, model or EMA as the held-out split preferred them then;
- ``auroc`` / ``topk`` at SPLC's first correcting epoch (``change_epoch``: its training-pass scores are the
  ones SPLC thresholds) and at the last epoch (missing-label settings only).

Pairs are (draw, seed): (a) loss − ASL on a missing-label setting; (b) the drop full − setting of a loss, and
ASL's drop minus the loss's (> 0: the loss loses less). Each is reported as mean ± sample std with n, and the
number of positive pairs, and per pretraining draw where a protocol has several; each protocol also says how
many runs the held-out split picked at their last epoch. Writes EXPORT/analysis.md and PICS/prereg_<P>.png,
PICS/prereg_<P>_auroc.png.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from src.engine import select_model, selected_map
from src.experiments.preregistered_plan import PROTOCOLS, Protocol, Run, is_exported, plan_runs
from src.io_utils import atomic_write_text, read_json
from src.run_metrics import read_run
from src.loss_functions.losses import loss_hyperparameters
from src.figures import display_name, loss_color

__all__ = ["RunResult", "read_result", "val_map_table", "READINGS", "pick_epoch", "load_protocol", "stats", "mean_sd", "paired", "drops",
           "drop_advantage", "figure_questions", "report"]

GAP_LOSSES = ("Hill", "SPLC")
CHANGE_EPOCH = int(loss_hyperparameters("SPLC")["change_epoch"])


@dataclass
class RunResult:
    loss: str
    setting: str
    draw: int
    seed: int
    best: float
    last: float
    rows: list[dict]

    @property
    def best_epoch(self) -> int:
        """The epoch the held-out split picked: the first with the highest selected mAP, as train.py keeps it."""
        scores = [selected_map(r) for r in self.rows]
        return int(self.rows[scores.index(max(scores))]["epoch"])

    @classmethod
    def from_head_rows(cls, loss: str, setting: str, draw: int, seed: int, rows: list[dict],
                       reading: str) -> "RunResult":
        """A run of batched linear heads (rows with the test set's mAP at every epoch, ``test_map`` and
        ``test_map_ema``) under one reading: ``best`` is the val mAP of the epoch and model that ``reading`` picks
        (``pick_epoch``), ``last`` the last epoch's (the model the held-out split preferred then)."""
        return cls(loss, setting, draw, seed, _test_map(rows[pick_epoch(rows, reading)], reading),
                   _test_map(rows[-1], "observed"), rows)

    def at(self, key: str, epoch: int | None) -> float:
        """``key`` of epoch ``epoch`` (None: the last); NaN where absent."""
        row = self.rows[-1] if epoch is None else next((r for r in self.rows if r["epoch"] == epoch), {})
        v = row.get(key)
        return float(v) if isinstance(v, (int, float)) else float("nan")


# How a run's val mAP is read: the epoch (and model or EMA) picked on the held-out split scored with the training
# list's labels ("observed", the registered reading) or with the full labels ("full"), or the last epoch ("last").
READINGS = {"observed": ("map", "map_ema"), "full": ("map_full", "map_ema_full"), "last": None}


def _selected(row: dict, reading: str) -> str:
    """The model (model or ema) the held-out split prefers in ``row`` under ``reading``."""
    model, ema = READINGS[reading] or READINGS["observed"]
    return select_model({"model": row[model], "ema": row[ema]})


def pick_epoch(rows: Sequence[dict], reading: str) -> int:
    """The index of the epoch ``reading`` picks: the first with the highest held-out mAP of the preferred model
    (as train.py keeps best.ckpt), or the last one."""
    if READINGS[reading] is None:
        return len(rows) - 1
    model, ema = READINGS[reading]
    scores = [selected_map({"map": r[model], "map_ema": r[ema], "selected": _selected(r, reading)}) for r in rows]
    return scores.index(max(scores))


def _test_map(row: dict, reading: str) -> float:
    return float(row["test_map_ema"] if _selected(row, reading) == "ema" else row["test_map"])


def read_result(export: Path, run: Run) -> RunResult:
    """An exported train.py run: ``best`` from test_metrics.json (the held-out pick), ``last`` its last epoch."""
    d = export / run.rel
    rows = read_run(d).rows
    test = read_json(d / "test_metrics.json")
    which = "map_ema" if _selected(rows[-1], "observed") == "ema" else "map"
    s = run.spec
    return RunResult(s.loss, s.setting, run.draw, s.seed, float(test["map"]), float(test["last_epoch"][which]), rows)


def load_protocol(export: Path, p: Protocol) -> tuple[float, list[RunResult], int] | None:
    """(lr, the complete runs, the planned run count) of protocol ``p``, or None before its lr is picked."""
    lr_file = export / p.name / "lr.json"
    if not lr_file.is_file():
        return None
    lr = float(read_json(lr_file)["lr"])
    planned = plan_runs(p, lr)
    return lr, [read_result(export, r) for r in planned if is_exported(export, r)], len(planned)


def stats(values: Sequence[float]) -> str:
    vals = [v for v in values if v == v]
    if not vals:
        return "-"
    sd = f" ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else ""
    return f"{statistics.fmean(vals):+.2f}{sd} (n={len(vals)}, {sum(v > 0 for v in vals)} > 0)"


def mean_sd(values: Sequence[float], digits: int = 2) -> str:
    vals = [v for v in values if v == v]
    if not vals:
        return "-"
    sd = f" ± {statistics.stdev(vals):.{digits}f}" if len(vals) > 1 else ""
    return f"{statistics.fmean(vals):.{digits}f}{sd}"


def _by(results: Sequence[RunResult]) -> dict[tuple, RunResult]:
    return {(r.loss, r.setting, r.draw, r.seed): r for r in results}


def paired(results: Sequence[RunResult], loss: str, setting: str) -> list[float]:
    """(a): loss − ASL best mAP, per (draw, seed) where both ran."""
    by = _by(results)
    return [r.best - by[("Asl", setting, r.draw, r.seed)].best for r in results
            if r.loss == loss and r.setting == setting and ("Asl", setting, r.draw, r.seed) in by]


def drops(results: Sequence[RunResult], loss: str, setting: str) -> list[float]:
    """The drop full − setting of ``loss``'s best mAP, per (draw, seed)."""
    by = _by(results)
    return [by[(loss, "full", r.draw, r.seed)].best - r.best for r in results
            if r.loss == loss and r.setting == setting and (loss, "full", r.draw, r.seed) in by]


def drop_advantage(results: Sequence[RunResult], loss: str, setting: str) -> list[float]:
    """(b): ASL's drop minus ``loss``'s, per (draw, seed) where all four runs exist (> 0: ``loss`` loses less)."""
    by = _by(results)
    out = []
    for r in results:
        if r.loss != loss or r.setting != setting:
            continue
        keys = [(x, s, r.draw, r.seed) for x in ("Asl", loss) for s in ("full", setting)]
        if all(k in by for k in keys):
            asl = by[keys[0]].best - by[keys[1]].best
            own = by[keys[2]].best - by[keys[3]].best
            out.append(asl - own)
    return out


def by_draw_lines(p: Protocol, results: Sequence[RunResult]) -> list[str]:
    """(a) and (b) per pretraining draw (mean over that draw's seeds): the spread over draws, seen apart from
    the spread over seeds. Empty for a protocol with one draw."""
    if len(p.draws) < 2:
        return []
    missing = [s for s in p.settings if s != "full"]
    lines = ["", "(a) and (b) by pretraining draw: mean over that draw's seeds (n pairs).", "",
             "| question | setting | draw | Hill | SPLC |", "| --- | --- | ---: | --- | --- |"]
    for label, fn in (("(a) loss − ASL", paired), ("(b) ASL drop − loss drop", drop_advantage)):
        for s in missing:
            for d in p.draws:
                own = [r for r in results if r.draw == d]
                cells = [fn(own, x, s) for x in GAP_LOSSES]
                lines.append(f"| {label} | {s} | {d} | "
                             + " | ".join(f"{statistics.fmean(c):+.2f} (n={len(c)})" if c else "-" for c in cells)
                             + " |")
    return lines


def val_map_table(results: Sequence[RunResult], losses: Sequence[str], settings: Sequence[str]) -> list[str]:
    """Val mAP per loss (a row each) and setting: the held-out pick / the last epoch, mean ± std (n runs)."""
    lines = ["| loss | " + " | ".join(settings) + " |", "| --- |" + " ---: |" * len(settings)]
    for loss in losses:
        cells = [[r for r in results if r.loss == loss and r.setting == s] for s in settings]
        lines.append(f"| {display_name(loss)} | " + " | ".join(
            f"{mean_sd([r.best for r in c])} / {mean_sd([r.last for r in c])} (n={len(c)})" if c else ""
            for c in cells) + " |")
    return lines


def protocol_markdown(p: Protocol, lr: float, results: Sequence[RunResult], planned: int) -> str:
    losses = [x for x in p.losses if any(r.loss == x for r in results)]
    missing = [s for s in p.settings if s != "full"]
    lines = [f"### Protocol {p.name}: {len(results)} of {planned} runs complete (lr {lr:g})", "",
             "Val-set mAP (%), mean ± std over (draw, seed): the epoch picked on the held-out split / the last epoch.",
             ""] + val_map_table(results, losses, p.settings)
    lines += ["", "(a) Paired loss − ASL, best-epoch val mAP; (b) ASL's drop from its own full-label mAP minus the "
              "loss's drop (> 0: the loss loses less). Mean ± std (n pairs, how many > 0).", "",
              "| question | setting | Hill | SPLC |", "| --- | --- | --- | --- |"]
    for s in missing:
        lines.append(f"| (a) loss − ASL | {s} | " + " | ".join(stats(paired(results, x, s)) for x in GAP_LOSSES) + " |")
    for s in missing:
        lines.append(f"| (b) ASL drop − loss drop | {s} | "
                     + " | ".join(stats(drop_advantage(results, x, s)) for x in GAP_LOSSES) + " |")
    lines += by_draw_lines(p, results)
    lines += ["", "Drop from each loss's own full-label mAP (mean ± std over pairs):", "",
              "| loss | " + " | ".join(missing) + " |", "| --- |" + " ---: |" * len(missing)]
    for loss in losses:
        lines.append(f"| {display_name(loss)} | " + " | ".join(mean_sd(drops(results, loss, s)) for s in missing) + " |")
    lines += ["", f"(c) Missing labels against true negatives on the training images (%), at epoch {CHANGE_EPOCH} "
              "(SPLC's first correcting epoch) / the last epoch: AUROC, and precision among the top-k scored "
              "unobserved entries (k = the number of missing positives).", "",
              "| loss | setting | AUROC | top-k precision |", "| --- | --- | ---: | ---: |"]
    for s in missing:
        for loss in losses:
            rs = [r for r in results if r.loss == loss and r.setting == s]
            if rs:
                au = f"{mean_sd([r.at('missing_auroc', CHANGE_EPOCH) for r in rs], 1)} / " \
                     f"{mean_sd([r.at('missing_auroc', None) for r in rs], 1)}"
                tk = f"{mean_sd([r.at('missing_topk_precision', CHANGE_EPOCH) for r in rs], 1)} / " \
                     f"{mean_sd([r.at('missing_topk_precision', None) for r in rs], 1)}"
                lines.append(f"| {display_name(loss)} | {s} | {au} | {tk} |")
    at_last = sum(r.best_epoch == p.stop_epoch for r in results)
    lines += ["", f"Runs whose held-out pick is their last epoch ({p.stop_epoch}): {at_last} of {len(results)}."]
    return "\n".join(lines) + "\n"


def figure_questions(title: str, readings: dict[str, Sequence[RunResult]], settings: Sequence[str],
                     out: Path) -> Path:
    """(a) and (b) for Hill and SPLC on each missing-label setting, one row of panels per reading: one dot per
    (draw, seed) pair, a bar for mean ± std."""
    import matplotlib  # lazy: heavy, and only the figures need it

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6 * len(readings) + 0.6))
    axes = fig.subplots(len(readings), 2, squeeze=False)
    for row, (reading, results) in zip(axes, readings.items()):
        for ax, (question, fn) in zip(row, (("(a) loss − ASL", paired), ("(b) ASL's drop − the loss's drop",
                                                                          drop_advantage))):
            _dots(ax, results, fn, settings)
            ax.set_title(f"{question}, val mAP ({reading})", fontsize=10)
    fig.suptitle(f"{title}: one dot per (draw, seed) pair, bars: mean ± std", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def _dots(ax, results: Sequence[RunResult], fn, settings: Sequence[str]) -> None:
    for k, loss in enumerate(GAP_LOSSES):
        for j, s in enumerate(settings):
            vals = fn(results, loss, s)
            if not vals:
                continue
            x = j + (k - 0.5) * 0.3
            ax.scatter([x] * len(vals), vals, color=loss_color(loss), alpha=0.35, s=14)
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            ax.errorbar([x], [statistics.fmean(vals)], yerr=[sd], color=loss_color(loss), marker="o", capsize=4,
                        label=display_name(loss) if j == 0 else None)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(range(len(settings)), settings)
    ax.set_ylabel("mAP points (> 0: the paper's claim)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _figure_auroc(p: Protocol, results: Sequence[RunResult], out: Path) -> Path:
    import matplotlib  # lazy: heavy, and only the figures need it

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    missing = [s for s in p.settings if s != "full"]
    fig = Figure(figsize=(5.2 * len(missing), 4.0))
    axes = fig.subplots(1, len(missing), squeeze=False, sharey=True)[0]
    for ax, s in zip(axes, missing):
        for loss in p.losses:
            curves = [[r.at("missing_auroc", e) for e in range(p.stop_epoch + 1)]
                      for r in results if r.loss == loss and r.setting == s]
            if not curves:
                continue
            a = np.array(curves, dtype=float)
            mean, sd = np.nanmean(a, 0), np.nanstd(a, 0)
            x = np.arange(a.shape[1])
            ax.plot(x, mean, color=loss_color(loss), label=f"{display_name(loss)} (n={len(curves)})")
            ax.fill_between(x, mean - sd, mean + sd, color=loss_color(loss), alpha=0.15)
        ax.axvline(CHANGE_EPOCH, color="grey", ls=":", lw=1)
        ax.set_title(f"{s}: missing labels vs true negatives", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("missing_auroc (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Protocol {p.name}: AUROC on the training images, mean ± std over runs", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def lr_pick_line(export: Path, p: Protocol) -> str:
    """How the lr was picked: the mean best held-out mAP of full-label BCE at each lr of the grid."""
    choice = read_json(export / p.name / "lr.json")
    by_lr = ", ".join(f"{lr} {v:.2f}" for lr, v in choice["held_out_map_by_lr"].items())
    edge = " (the top of the grid)" if float(choice["lr"]) == max(p.lrs) else ""
    return (f"The lr pick, full-label BCE, mean best held-out mAP by lr (seeds {choice['lr_seeds']}, draw 0): "
            f"{by_lr}; picked {float(choice['lr']):g}{edge}.\n")


def report(export: Path, pics: Path) -> str:
    """Write EXPORT/analysis.md and the figures of every protocol with an lr.json; return the markdown."""
    parts = []
    for p in PROTOCOLS.values():
        loaded = load_protocol(export, p)
        if loaded is None:
            parts.append(f"### Protocol {p.name}: its lr is not picked yet\n")
            continue
        lr, results, planned = loaded
        parts.append(protocol_markdown(p, lr, results, planned))
        parts.append(lr_pick_line(export, p))
        if results:
            figs = [figure_questions(f"Protocol {p.name}", {"held-out pick": results},
                                     [x for x in p.settings if x != "full"], pics / f"prereg_{p.name}.png")]
            if any(r.setting != "full" for r in results):
                figs.append(_figure_auroc(p, results, pics / f"prereg_{p.name}_auroc.png"))
            parts.append("Figures: " + ", ".join(str(f) for f in figs) + "\n")
    text = "\n".join(parts)
    atomic_write_text(export / "analysis.md", text)
    return text
