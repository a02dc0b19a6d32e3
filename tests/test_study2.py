"""Study 2's linear part (src/experiments/study2.py): the lr rule and the readings, on a hand-written export."""
import argparse
import json

import pytest

from src.experiments import study2


def _line(loss, setting, draw, seed, held, test, last_test, held_full=None):
    """A run of 3 epochs whose held-out mAP peaks at epoch 1 (observed) and at epoch 2 (full labels)."""
    full = held_full if held_full is not None else held
    rows = [{"epoch": 0, "map": held - 5, "map_ema": held - 5, "map_full": full - 5, "map_ema_full": full - 5,
             "test_map": 1.0, "test_map_ema": 1.0},
            {"epoch": 1, "map": held, "map_ema": held, "map_full": full - 1, "map_ema_full": full - 1,
             "test_map": test, "test_map_ema": test},
            {"epoch": 2, "map": held - 1, "map_ema": held - 1, "map_full": full, "map_ema_full": full,
             "test_map": last_test, "test_map_ema": last_test}]
    return {"loss": loss, "setting": setting, "seed": seed, "draw": draw, "lr": 0.01, "rows": rows}


def test_the_lr_pick_takes_the_best_mean_held_out_map_and_the_smaller_lr_on_a_tie(tmp_path):
    (tmp_path / "L").mkdir()
    for lr, held in ((1e-2, 40.0), (3e-2, 41.0), (1e-1, 41.0)):
        lines = [_line("BCE", "full", 0, s, held, 0.0, 0.0) for s in study2.LR_SEEDS]
        (tmp_path / "L" / f"lr-pick-lr{lr:g}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    a = argparse.Namespace(export=tmp_path, data_root=tmp_path / "data")
    assert study2.lr_pick(a, tmp_path) == pytest.approx(3e-2)
    choice = json.loads((tmp_path / "L" / "lr.json").read_text())
    assert choice["held_out_map_by_lr"] == {"0.01": 40.0, "0.03": 41.0, "0.1": 41.0}


def test_each_reading_takes_its_own_epoch(tmp_path):
    """Hill beats ASL by 2 at the observed pick (epoch 1), by 4 at the last epoch (read on full labels too)."""
    (tmp_path / "L").mkdir()
    (tmp_path / "L" / "lr.json").write_text(json.dumps({"lr": 0.01}))
    lines = []
    for seed in (0, 1):
        for setting in study2.PROTOCOL.settings:
            for loss in study2.PROTOCOL.losses:
                gain = 1.0 if loss == "Hill" and setting == "0.4left" else 0.0
                lines.append(_line(loss, setting, 0, seed, 50.0, 30.0 + 2 * gain, 30.0 + 4 * gain))
    (tmp_path / "L" / "lr0.01-d0.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    text = study2.analyze(tmp_path, tmp_path / "pics")
    assert (tmp_path / "pics" / "study2_L.png").stat().st_size > 0
    assert "| (a) loss − ASL | 0.4left | registered (held-out, observed labels) | +2.00 ± 0.00 (n=2, 2 > 0) |" in text
    assert "| (a) loss − ASL | 0.4left | held-out, full labels | +4.00 ± 0.00 (n=2, 2 > 0) |" in text
    assert "| (a) loss − ASL | 0.4left | last epoch | +4.00 ± 0.00 (n=2, 2 > 0) |" in text


def test_a_torn_export_names_the_file(tmp_path):
    torn = tmp_path / "x.jsonl"
    torn.write_text('{"loss": "BCE", "rows": [\n')
    with pytest.raises(SystemExit, match="x.jsonl"):
        study2.read_runs(torn)


def test_the_stronger_toy_is_the_first_size_to_reach_the_target_else_the_last_tried():
    low, high = study2.S25_TARGET - 1, study2.S25_TARGET + 1
    first, last = study2.S25_SIZES[0], study2.S25_SIZES[-1]
    assert study2.size_taken({first: high}) == first
    assert study2.size_taken({first: low}) is None  # a larger size is still to try
    assert study2.size_taken({first: low, last: high}) == last
    assert study2.size_taken({first: low, last: low}) == last  # short of the target: the last tried


def test_e_runs_are_every_loss_on_every_setting_to_the_schedules_end_with_the_premise_cut():
    runs = study2.e_plan(1e-3)
    pairs = [(r.spec.setting, r.spec.loss) for r in runs if r.draw == 0 and r.spec.seed == 0]
    assert sorted(pairs) == sorted((s, x) for s in study2.E_RUNS.settings for x in study2.E_RUNS.losses)
    assert len(runs) == 24 and {r.draw for r in runs[:12]} == {0, 1} and {r.spec.seed for r in runs[:12]} == {0}
    assert [r.draw for r in runs[:12]] == [0] * 6 + [1] * 6  # seed 0 (the protocol) first, draw by draw
    assert {r.spec.seed for r in runs[12:]} == {1}  # then seed 1, "if time allows"
    flags = study2.E_RUNS.recipe(1e-3).flags()
    assert flags[flags.index("--epochs") + 1] == "40" and flags[flags.index("--stop-epoch") + 1] == "39"
    extra = runs[0].spec.extra
    assert extra[extra.index("--oracle-threshold") + 1] == str(study2.TAU)
    assert all(r.rel.parts[:2] == ("E", "lr0.001") for r in runs)


def _e_run(export, run, held_best, test_best, test_last, epochs=40):
    """An exported E run whose held-out mAP peaks at epoch 5 (val mAP test_best there), test_last at the end."""
    d = export / run.rel
    d.mkdir(parents=True)
    rows = [{"epoch": e, "map": held_best - abs(e - 5), "map_ema": 0.0, "missing_precision": 80.0,
             "missing_recall": 10.0, "missing_auroc": 75.0, "missing_topk_precision": 30.0} for e in range(epochs)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "test_metrics.json").write_text(json.dumps({"map": test_best,
                                                     "last_epoch": {"map": test_last, "map_ema": 0.0}}))


def test_e_is_read_at_the_held_out_pick_and_at_the_last_epoch(tmp_path):
    (tmp_path / "E").mkdir()
    (tmp_path / "E" / "lr.json").write_text(json.dumps({"lr": 1e-3, "held_out_map_by_lr": {"0.001": 47.0}}))
    for run in study2.e_plan(1e-3)[:4]:  # draw 0: ASL and Hill on 0.4left, then on full
        hill_gain = 1.0 if run.spec.loss == "Hill" and run.spec.setting == "0.4left" else 0.0
        _e_run(tmp_path, run, 50.0, 40.0 + hill_gain, 45.0 + 3 * hill_gain)
    _e_run(tmp_path, study2.e_plan(1e-3)[12], 50.0, 40.0, 45.0)  # seed 1's ASL on 0.4left: no Hill to pair with
    text = "\n".join(study2.analyze_e(tmp_path))
    assert "5 of 24 runs" in text
    assert "(n = runs per row: 1 to 2 (draw, seed) pairs)" in text  # ASL's rows hold 2 runs, Hill's 1
    assert "| (a) loss − ASL | 0.4left | held-out pick (observed labels) | +1.00 (n=1, 1 > 0) | - |" in text
    assert "| (a) loss − ASL | 0.4left | last epoch | +3.00 (n=1, 1 > 0) | - |" in text
    assert "| (b) ASL drop − loss drop | 0.4left | last epoch | +3.00 (n=1, 1 > 0) | - |" in text
    assert "0.4left-Hill-d0-s0: 5" in text
    assert "| Hill | 0.4left | 39 | 80.0 | 10.0 | 75.0 | 30.0 |" in text
