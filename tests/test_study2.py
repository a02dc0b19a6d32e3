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
    text = study2.analyze(tmp_path)
    assert "| (a) loss − ASL | 0.4left | registered (held-out, observed labels) | +2.00 ± 0.00 (n=2, 2 > 0) |" in text
    assert "| (a) loss − ASL | 0.4left | held-out, full labels | +4.00 ± 0.00 (n=2, 2 > 0) |" in text
    assert "| (a) loss − ASL | 0.4left | last epoch | +4.00 ± 0.00 (n=2, 2 > 0) |" in text


def test_a_torn_export_names_the_file(tmp_path):
    torn = tmp_path / "x.jsonl"
    torn.write_text('{"loss": "BCE", "rows": [\n')
    with pytest.raises(SystemExit, match="x.jsonl"):
        study2.read_runs(torn)
