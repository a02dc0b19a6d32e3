"""The project's figures: one colour and one display name per loss, training curves of runs (``draw_runs``,
``plot_runs``) and the strength study's gap plot (``plot_strength_gap``).

The commands and studies that draw them: src/tools/plot_metrics.py (curves of RUN_DIRs), src/tools/plot_gradients.py
(colours), src/experiments (demo, strength study, preregistered report). matplotlib is imported only when a figure
is drawn.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Sequence

from src.io_utils import atomic_write
from src.loss_names import LOSS_NAMES, canonical_loss_name  # the names without torch
from src.outputs import png_metadata
from src.run_metrics import RunMetrics

__all__ = ["LOSS_COLORS", "OTHER_COLORS", "DISPLAY_NAMES", "REFERENCE_COLOR", "PNG_SOURCE", "loss_color",
           "display_name", "is_full_label", "run_label", "panel_keys", "draw_runs", "png_bytes", "plot_runs",
           "plot_strength_gap"]


# One colour per loss in every figure, in the registry's order (BCE, Focal, ASL, Hill, SPLC: matplotlib's
# first five; src.tools.plot_gradients uses the same); runs of no known loss take OTHER_COLORS in turn.
LOSS_COLORS = dict(zip(LOSS_NAMES, ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "#393b79")))
OTHER_COLORS = ("#8c6d31", "#843c39", "#7b4173", "#637939", "#5254a3")
# How the README and the paper spell a loss where the registry's name differs.
DISPLAY_NAMES = {"Asl": "ASL"}
# The full-label run is a reference line in this colour, not one more loss.
REFERENCE_COLOR = "black"
# The marker of the PNGs drawn here (src/outputs.py): the command that draws them, so that its --out check knows
# them (the demo's and the strength study's figures too).
PNG_SOURCE = "src.tools.plot_metrics"


def _known_loss(name: str | None) -> str | None:
    try:
        return canonical_loss_name(str(name)) if name else None
    except ValueError:
        return None


def loss_color(loss: str | None, other: int = 0) -> str:
    """The colour of ``loss`` (any spelling the registry accepts); ``OTHER_COLORS[other]`` when unknown."""
    known = _known_loss(loss)
    return LOSS_COLORS[known] if known else OTHER_COLORS[other % len(OTHER_COLORS)]


def display_name(loss: str) -> str:
    """The loss's name as the README writes it ('Asl' -> 'ASL'); an unknown name unchanged."""
    known = _known_loss(loss)
    return DISPLAY_NAMES.get(known, known) if known else loss


def is_full_label(run: RunMetrics) -> bool:
    """Whether the run trained on a full-label list (``*full.txt``: the reference of a missing-label study)."""
    listed = run.args.get("dataset") or run.args.get("train_dataset")
    return bool(listed) and Path(str(listed)).stem.endswith("full")


def run_label(run: RunMetrics, with_list: bool = False) -> str:
    """'loss' from args.json as the README spells it (else the folder name), plus ' (list stem)' when
    ``with_list``."""
    label = display_name(str(run.args["loss"])) if run.args.get("loss") else run.path.name
    if with_list and run.args.get("dataset"):
        label += f" ({Path(str(run.args['dataset'])).stem.removeprefix('coco_train_')})"
    return label


def _labels(runs: Sequence[RunMetrics], labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(f"--labels gives {len(labels)} names for {len(runs)} runs")
        return list(labels)
    lists = {r.args.get("dataset") for r in runs}
    return [run_label(r, with_list=len(lists) > 1) for r in runs]


def plot_runs(runs: Sequence[RunMetrics], out: str | os.PathLike, map_style: str = "max",
              labels: Sequence[str] | None = None, title: str | None = None,
              panels: Sequence[str] = ("map", "missing")) -> Path:
    """Draw the runs' curves (``draw_runs``) into the PNG ``out`` (written atomically); return its path."""
    return _save_png(draw_runs(runs, map_style, labels, title, panels), out)


def _run_colors(runs: Sequence[RunMetrics]) -> list[str]:
    """``loss_color`` of each run's loss; runs of no known loss take the other colours in turn."""
    colors, other = [], 0
    for run in runs:
        if _known_loss(run.args.get("loss")):
            colors.append(loss_color(run.args["loss"]))
        else:
            colors.append(loss_color(None, other))
            other += 1
    return colors


def draw_runs(runs: Sequence[RunMetrics], map_style: str = "max", labels: Sequence[str] | None = None,
              title: str | None = None, panels: Sequence[str] = ("map", "missing")):
    """The matplotlib Figure of the runs' curves, one legend to the right of the panels.

    panels: 'map' (mAP per epoch), 'missing' (missing-label precision and recall, two panels; left out
    when no run logged them). map_style: 'max' = max(model, EMA) per epoch; 'both' = model solid, EMA dashed.
    A full-label run (``is_full_label``) is drawn in the mAP panel as a dashed horizontal line at its best
    mAP, labelled as the full-label reference, not as one more curve. Each loss has its colour (``loss_color``).
    """
    import matplotlib  # lazy: heavy, and only the figures need it

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("no runs to plot")
    if map_style not in ("max", "both"):
        raise ValueError(f"map_style must be 'max' or 'both', got {map_style!r}")
    unknown = set(panels) - {"map", "missing"}
    if unknown or not panels:
        raise ValueError(f"panels must be a non-empty subset of ('map', 'missing'), got {list(panels)}")
    names = _labels(runs, labels)
    axes_wanted = panel_keys(runs, panels)
    fig = Figure(figsize=(max(6.0, 4.6 * len(axes_wanted)), 4.2 if title else 3.8))
    axes = fig.subplots(1, len(axes_wanted), squeeze=False)[0]
    colors = _run_colors(runs)
    titles = {"map": "val mAP (%)", "missing_precision": "missing labels found: precision (%)",
              "missing_recall": "missing labels found: recall (%)",
              "missing_ranking": "missing labels vs true negatives (%)"}
    subtitles = {"missing_ranking": "train images: AUROC solid, top-k precision dashed"}
    for ax, key in zip(axes, axes_wanted):
        for run, name, color in zip(runs, names, colors):
            x = run.epochs
            if key == "missing_ranking":
                if run.has_ranking:
                    ax.plot(x, run.column("missing_auroc"), color=color, marker="o", ms=3, label=f"{name} AUROC")
                    ax.plot(x, run.column("missing_topk_precision"), color=color, ls="--", marker="x", ms=3,
                            label=f"{name} top-k")
            elif key == "map" and is_full_label(run):
                best = max(v for v in run.best_map if not math.isnan(v))
                ax.axhline(best, color=REFERENCE_COLOR, ls="--", lw=1.2,
                           label=f"{name}: full-label reference (best {best:.1f})")
            elif key == "map" and map_style == "max":
                ax.plot(x, run.best_map, color=color, marker="o", ms=3, label=name)
            elif key == "map":
                ax.plot(x, run.column("map"), color=color, marker="o", ms=3, label=f"{name} model")
                ax.plot(x, run.column("map_ema"), color=color, ls="--", marker="x", ms=3, label=f"{name} EMA")
            elif run.has_missing:
                ax.plot(x, run.column(key), color=color, marker="o", ms=3, label=name)
        subtitle = subtitles.get(key, "train images, p > 0.5 (SPLC: p > tau)")
        ax.set_title(titles[key] if key == "map" else f"{titles[key]}\n{subtitle}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    _legend_outside(fig, axes)
    return fig


def _legend_outside(fig, axes) -> None:
    """One legend for all panels (each label once), to the right of them, where it covers no curve."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=8, frameon=False)


def panel_keys(runs: Sequence[RunMetrics], panels: Sequence[str]) -> list[str]:
    """The figure's panels, left to right: 'map'; with 'missing', 'missing_precision' and 'missing_recall' when
    a run logged them, and 'missing_ranking' (AUROC and top-k precision) when a run logged those."""
    keys = ["map"] if "map" in panels else []
    if "missing" in panels and any(r.has_missing for r in runs):
        keys += ["missing_precision", "missing_recall"]
    if "missing" in panels and any(r.has_ranking for r in runs):
        keys.append("missing_ranking")
    if not keys:
        raise ValueError("no run logged missing-label precision/recall (train with --oracle-list)")
    return keys


def png_bytes(fig) -> bytes:
    """``fig`` as PNG bytes, marked with ``PNG_SOURCE``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight",  # keeps a legend outside the axes
                metadata=png_metadata(PNG_SOURCE))
    return buf.getvalue()


def _save_png(fig, out: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG to ``out`` atomically."""
    data = png_bytes(fig)
    return atomic_write(out, lambda f: f.write(data))


def plot_strength_gap(gaps: Sequence[dict], out: str | os.PathLike) -> Path:
    """'Loss - ASL' mAP gap against full-label BCE mAP, one point per strength, one panel per setting.

    ``gaps``: dicts with strength, setting, loss, mean, std (None: no error bar), ref_mean, ref_std, n, as
    src.experiments.strength_study.analyze_study makes them; a gap without a reference mAP is left out.
    """
    import matplotlib  # lazy: heavy, and only the figures need it

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    gaps = [g for g in gaps if g.get("ref_mean") is not None]
    if not gaps:
        raise ValueError("no gap with a full-label reference mAP to plot")
    settings = list(dict.fromkeys(g["setting"] for g in gaps))
    losses = list(dict.fromkeys(g["loss"] for g in gaps))
    fig = Figure(figsize=(max(6.0, 4.8 * len(settings)), 4.6))
    axes = fig.subplots(1, len(settings), squeeze=False, sharey=True)[0]
    for ax, setting in zip(axes, settings):
        for k, loss in enumerate(losses):
            pts = sorted((g for g in gaps if g["setting"] == setting and g["loss"] == loss),
                         key=lambda g: g["ref_mean"])
            if not pts:
                continue
            shift = (k - (len(losses) - 1) / 2) * 0.3  # side by side where the x values coincide
            x = [g["ref_mean"] + shift for g in pts]
            ax.errorbar(x, [g["mean"] for g in pts], yerr=[g["std"] or 0.0 for g in pts],
                        xerr=[g["ref_std"] or 0.0 for g in pts], color=loss_color(loss, k), marker="o", capsize=3,
                        ls="none",  # no line: the strengths are points, not a trend (S2 and S3 share one x)
                        label=f"{display_name(loss)} − ASL")
            for xi, g in zip(x, pts):
                ax.annotate(f"{g['strength']} (n={g['n']})", (xi, g["mean"]), textcoords="offset points",
                            xytext=(5, 5 + 10 * k), fontsize=7, color=loss_color(loss, k))
        ax.axhline(0.0, color="gray", lw=0.8, ls="--")
        ax.set_title(f"trained on {setting}", fontsize=10)
        ax.set_xlabel("full-label BCE val mAP (%): model strength")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mAP gap to ASL (points), paired by seed")
    fig.suptitle("Hill / SPLC − ASL against model strength\n(mean ± std over seeds; x error: std of the "
                 "full-label BCE mAP)", fontsize=10)
    fig.tight_layout()

    return _save_png(fig, out)
