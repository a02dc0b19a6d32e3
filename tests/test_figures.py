"""src/figures.py: one colour and one display name per loss, the curves of runs and the strength-gap plot."""
import math

import pytest

from src.figures import (
    REFERENCE_COLOR,
    display_name,
    draw_runs,
    is_full_label,
    loss_color,
    panel_keys,
    plot_runs,
    plot_strength_gap,
    run_label,
)
from src.loss_functions.losses import LOSS_NAMES
from src.run_metrics import read_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_run_label_is_the_loss_as_the_readme_spells_it(write_run, tmp_path):
    run = read_run(write_run(tmp_path / "hill_dir", "Hill", [10.0, 20.0]))
    assert run_label(run) == "Hill" and run_label(run, with_list=True) == "Hill (0.4left)"
    assert run_label(read_run(write_run(tmp_path / "asl_dir", "asl", [1.0]))) == "ASL"
    bare = read_run(write_run(tmp_path / "no_args", "x", [1.0], missing=False, args=False))
    assert run_label(bare) == "no_args"


def test_map_only_runs_plot_map_panel(write_run, tmp_path):
    a = write_run(tmp_path / "a", "BCE", [10.0, 20.0], missing=False)
    out = plot_runs([read_run(a)], tmp_path / "m.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="--oracle-list"):
        plot_runs([read_run(a)], tmp_path / "x.png", panels=("missing",))


def test_strength_gap_figure(tmp_path):
    gaps = [{"strength": s, "setting": setting, "loss": loss, "n": 3, "mean": m, "std": sd, "ref_mean": ref,
             "ref_std": 0.5}
            for s, ref in (("S1", 50.0), ("S2", 70.0))
            for setting in ("0.4left", "singlelabel")
            for loss, m, sd in (("Hill", -1.0, 0.4), ("SPLC", 0.5, None))]
    out = plot_strength_gap(gaps, tmp_path / "gap.png")
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 5000
    with pytest.raises(ValueError, match="reference"):
        plot_strength_gap([dict(gaps[0], ref_mean=None)], tmp_path / "none.png")


def test_each_loss_has_one_colour_in_every_spelling():
    colors = [loss_color(name) for name in LOSS_NAMES]
    assert len(set(colors)) == len(LOSS_NAMES), "two losses share a colour"
    assert loss_color("asl") == loss_color("Asl") == loss_color("ASL") and loss_color("hill") == loss_color("Hill")
    assert REFERENCE_COLOR not in colors and loss_color("no-such-loss") not in colors
    assert (display_name("Asl"), display_name("asl"), display_name("Hill"), display_name("x")) == ("ASL", "ASL",
                                                                                                  "Hill", "x")


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_a_loss_keeps_its_colour_whatever_the_other_runs(write_run, tmp_path):
    hill = read_run(write_run(tmp_path / "h", "Hill", [10.0, 20.0]))
    asl = read_run(write_run(tmp_path / "a", "Asl", [11.0, 21.0]))
    alone = draw_runs([hill], panels=("map",)).axes[0]
    together = draw_runs([asl, hill], panels=("map",)).axes[0]
    assert _lines(alone)["Hill"].get_color() == _lines(together)["Hill"].get_color() == loss_color("Hill")
    assert "ASL" in _lines(together), "ASL is spelt as the README does"


def test_the_full_label_run_is_a_dashed_reference_line(write_run, tmp_path):
    bce40 = read_run(write_run(tmp_path / "b40", "BCE", [10.0, 30.0]))
    full = read_run(write_run(tmp_path / "full", "BCE", [20.0, 45.0, 40.0], missing=False,
                              dataset="d/coco_train_full.txt"))
    assert is_full_label(full) and not is_full_label(bce40)
    fig = draw_runs([bce40, full], panels=("map", "missing"))
    lines = _lines(fig.axes[0])
    assert set(lines) == {"BCE (0.4left)", "BCE (full): full-label reference (best 45.0)"}
    ref = lines["BCE (full): full-label reference (best 45.0)"]
    assert ref.get_linestyle() == "--" and ref.get_color() == REFERENCE_COLOR
    assert set(ref.get_ydata()) == {45.0}  # max(model, EMA) per epoch (EMA = model - 1 here), best epoch
    assert all("full" not in label for ax in fig.axes[1:] for label in _lines(ax)), "no missing labels to find"


def test_the_legend_stands_beside_the_panels(write_run, tmp_path):
    runs = [read_run(write_run(tmp_path / n, n, [10.0, 20.0, 30.0])) for n in ("BCE", "Asl", "Hill", "SPLC")]
    fig = draw_runs(runs, panels=("missing",), title="t")
    fig.canvas.draw()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    assert all(box.x0 >= ax.get_window_extent().x1 for ax in fig.axes), "the legend covers a panel"
    assert [t.get_text() for t in legend.get_texts()] == ["BCE", "ASL", "Hill", "SPLC"]


def test_ranking_panel_only_for_runs_that_logged_it(write_run, tmp_path):
    old = read_run(write_run(tmp_path / "old", "BCE", [10.0, 20.0]))
    new = read_run(write_run(tmp_path / "new", "SPLC", [12.0, 22.0], ranking=True))
    assert new.has_ranking and not old.has_ranking
    assert new.column("missing_auroc") == [70.0, 71.0] and math.isnan(new.column("missing_topk_precision")[0])
    assert panel_keys([old], ("map", "missing")) == ["map", "missing_precision", "missing_recall"]
    assert panel_keys([old, new], ("map", "missing")) == ["map", "missing_precision", "missing_recall",
                                                          "missing_ranking"]
    assert panel_keys([new], ("map",)) == ["map"]
    out = plot_runs([old, new], tmp_path / "r.png")
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 5000


def test_strength_gap_points_are_not_joined_into_a_trend(tmp_path, monkeypatch):
    """Two strengths at about the same full-label mAP (the study's S2 and S3) drew a line between them, a trend
    that is not there: each strength is a point with its error bars, never joined."""
    from matplotlib.axes import Axes
    calls = []
    original = Axes.errorbar

    def recording(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", recording)
    gaps = [{"strength": s, "setting": "0.4left", "loss": "Hill", "n": 3, "mean": m, "std": 0.3, "ref_mean": ref,
             "ref_std": 0.5} for s, ref, m in (("S2", 72.4, 1.0), ("S3", 72.7, -1.0))]
    plot_strength_gap(gaps, tmp_path / "gap.png")
    assert calls and all(c.get("ls") == "none" for c in calls)
