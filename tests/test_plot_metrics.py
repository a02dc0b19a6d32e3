"""plot_metrics: curves of hand-written run folders into one PNG; bad input is a clear error."""
import json
import math

import pytest

from src.loss_functions.losses import LOSS_NAMES
from src.tools.plot_metrics import (
    REFERENCE_COLOR,
    MetricsError,
    display_name,
    draw_runs,
    is_full_label,
    loss_color,
    main,
    panel_keys,
    plot_runs,
    plot_strength_gap,
    read_run,
    run_label,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(path, loss, maps, missing=True, args=True, dataset="d/coco_train_0.4left.txt", ranking=False):
    path.mkdir(parents=True)
    rows = []
    for e, m in enumerate(maps):
        row = {"epoch": e, "train_loss": 1.0, "map": m, "map_ema": m - 1.0, "cf1": 50.0, "of1": 55.0}
        if missing:
            row.update(missing_precision=float("nan") if e == 0 else 60.0 + e, missing_recall=10.0 * e,
                       missing_count=100)
        if ranking:
            row.update(missing_auroc=70.0 + e, missing_topk_precision=float("nan") if e == 0 else 30.0 + e)
        rows.append(json.dumps(row))  # NaN is written as NaN, as train.py does
    (path / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    if args:
        (path / "args.json").write_text(json.dumps({"loss": loss, "dataset": dataset}))
    return path


def test_two_runs_make_one_png(tmp_path):
    a = write_run(tmp_path / "a", "BCE", [10.0, 20.0, 30.0])
    b = write_run(tmp_path / "b", "Hill", [12.0, 25.0, 33.0])
    out = main([str(a), str(b), "--out", str(tmp_path / "fig" / "curves.png"), "--map-style", "both"])
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000


def test_reads_rows_nan_and_labels(tmp_path):
    run = read_run(write_run(tmp_path / "hill_dir", "Hill", [10.0, 20.0]))
    assert run.best_map == [10.0, 20.0]  # max(model, EMA)
    assert math.isnan(run.column("missing_precision")[0]) and run.column("missing_recall") == [0.0, 10.0]
    assert run_label(run) == "Hill" and run_label(run, with_list=True) == "Hill (0.4left)"
    bare = read_run(write_run(tmp_path / "no_args", "x", [1.0], missing=False, args=False))
    assert run_label(bare) == "no_args" and not bare.has_missing


def test_map_only_runs_plot_map_panel(tmp_path):
    a = write_run(tmp_path / "a", "BCE", [10.0, 20.0], missing=False)
    out = plot_runs([read_run(a)], tmp_path / "m.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="--oracle-list"):
        plot_runs([read_run(a)], tmp_path / "x.png", panels=("missing",))


def test_missing_metrics_file_names_the_folder(tmp_path, capsys):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(MetricsError, match="not_a_run: no metrics.jsonl"):
        read_run(empty)
    with pytest.raises(SystemExit) as e:
        main([str(empty), "--out", str(tmp_path / "x.png")])
    assert e.value.code == 2 and "not_a_run" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_bad_row_names_file_and_line(tmp_path):
    run = write_run(tmp_path / "r", "BCE", [1.0])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 1}\n')
    with pytest.raises(MetricsError, match=r"metrics.jsonl:2: a row needs"):
        read_run(run)


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


def test_a_loss_keeps_its_colour_whatever_the_other_runs(tmp_path):
    hill = read_run(write_run(tmp_path / "h", "Hill", [10.0, 20.0]))
    asl = read_run(write_run(tmp_path / "a", "Asl", [11.0, 21.0]))
    alone = draw_runs([hill], panels=("map",)).axes[0]
    together = draw_runs([asl, hill], panels=("map",)).axes[0]
    assert _lines(alone)["Hill"].get_color() == _lines(together)["Hill"].get_color() == loss_color("Hill")
    assert "ASL" in _lines(together), "ASL is spelt as the README does"


def test_the_full_label_run_is_a_dashed_reference_line(tmp_path):
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


def test_the_legend_stands_beside_the_panels(tmp_path):
    runs = [read_run(write_run(tmp_path / n, n, [10.0, 20.0, 30.0])) for n in ("BCE", "Asl", "Hill", "SPLC")]
    fig = draw_runs(runs, panels=("missing",), title="t")
    fig.canvas.draw()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    assert all(box.x0 >= ax.get_window_extent().x1 for ax in fig.axes), "the legend covers a panel"
    assert [t.get_text() for t in legend.get_texts()] == ["BCE", "ASL", "Hill", "SPLC"]


def test_ranking_panel_only_for_runs_that_logged_it(tmp_path):
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


@pytest.mark.parametrize("victim", ["metrics.jsonl", "args.json", "other png"])
def test_out_never_replaces_an_input_or_a_file_the_tool_did_not_draw(tmp_path, capsys, victim):
    from PIL import Image

    a = write_run(tmp_path / "a", "BCE", [10.0, 20.0])
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.png")
    path = tmp_path / "photo.png" if victim == "other png" else a / victim
    before = path.read_bytes()
    with pytest.raises(SystemExit) as e:
        main([str(a), "--out", str(path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and f"--out {path} exists and is not a PNG drawn by" in err
    if victim != "other png":  # an input, even with --overwrite
        with pytest.raises(SystemExit):
            main([str(a), "--out", str(path), "--overwrite"])
        assert f"--out {path} is one of the inputs of this command" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_out_replaces_its_own_png_and_others_with_overwrite(tmp_path):
    from PIL import Image

    a = write_run(tmp_path / "a", "BCE", [10.0, 20.0])
    out = tmp_path / "curves.png"
    for _ in range(2):  # the second run replaces the first one's figure
        main([str(a), "--out", str(out)])
    with Image.open(out) as im:
        assert im.info["Source"] == "src.tools.plot_metrics"
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.png")
    main([str(a), "--out", str(tmp_path / "photo.png"), "--overwrite"])
    with Image.open(tmp_path / "photo.png") as im:
        assert im.size != (4, 4)


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
