"""The pre-registered study: its fixed plan, the lr pick, and the analysis of a hand-written export."""
import json

import pytest

from src.experiments.preregistered import PROTOCOLS, Run, ema_for_horizon, is_exported, pick_lr, plan_lr_pick, plan_runs
from src.experiments.preregistered_report import (RunResult, drop_advantage, drops, load_protocol, lr_pick_line,
                                                  paired, report)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_ema_horizon_matches_the_official_one_in_epochs():
    assert ema_for_horizon(641) == pytest.approx(0.9997, abs=1e-5)  # the official recipe itself
    d = ema_for_horizon(50)
    assert 1 / (1 - d) / 50 == pytest.approx(1 / (1 - 0.9997) / 641, rel=1e-2)  # about 5.2 epochs either way


def test_the_plans_are_the_issue_protocols():
    L, E = PROTOCOLS["L"], PROTOCOLS["E"]
    assert len(plan_runs(L, 1e-3)) == 5 * 3 * 10 and len(plan_runs(E, 1e-3)) == 4 * 2 * 2 * 2
    assert (L.epochs, L.stop_epoch, L.freeze_backbone, L.ema_decay) == (200, 75, True, 0.0)
    assert (E.epochs, E.stop_epoch, E.freeze_backbone, E.draws) == (40, 15, False, (0, 1))
    assert {r.spec.loss for r in plan_lr_pick(L)} == {"BCE"} and {r.spec.setting for r in plan_lr_pick(E)} == {"full"}
    assert all("--val-split" in r.spec.extra for r in plan_runs(E, 1e-3))
    # seed-major: the first runs finished hold every (loss, setting) cell of seed 0, for every draw
    first = plan_runs(E, 1e-3)[:16]
    assert {r.spec.seed for r in first} == {0} and {r.draw for r in first} == {0, 1}


def _write(export, run: Run, best: float, last: float, aurocs=None):
    d = export / run.rel
    d.mkdir(parents=True)
    n = run.protocol.stop_epoch + 1
    rows = [{"epoch": e, "map": best - 1, "map_ema": best - 2} for e in range(n)]
    for e, a in enumerate(aurocs or []):
        rows[e].update(missing_auroc=a, missing_topk_precision=a / 2)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "test_metrics.json").write_text(json.dumps({"map": best, "last_epoch": {"map": last, "map_ema": 0.0}}))


def test_pick_lr_takes_the_best_mean_held_out_map_and_the_smaller_lr_on_ties(tmp_path):
    L = PROTOCOLS["L"]
    held = {1e-4: 50.0, 1e-3: 60.0, 1e-2: 60.0}  # written as best - 1 in every row
    for run in plan_lr_pick(L):
        _write(tmp_path, run, held[run.lr] + 1 + run.spec.seed, 0.0)
        assert is_exported(tmp_path, run)
    choice = pick_lr(L, tmp_path)
    assert choice["lr"] == 1e-3 and choice["held_out_map_by_lr"]["0.001"] == pytest.approx(61.0)


def test_the_analysis_pairs_by_draw_and_seed(tmp_path):
    E = PROTOCOLS["E"]
    (tmp_path / "E").mkdir()
    (tmp_path / "E" / "lr.json").write_text(json.dumps(
        {"lr": 3e-4, "held_out_map_by_lr": {"0.0001": 40.0, "0.0003": 45.5, "0.001": 44.0}, "lr_seeds": [0]}))
    best = {("full", "Asl"): 70, ("full", "Hill"): 66, ("0.4left", "Asl"): 60, ("0.4left", "Hill"): 59}
    for run in plan_runs(E, 3e-4):
        key = (run.spec.setting, run.spec.loss)
        if key in best and not (run.draw == 1 and run.spec.seed == 1):  # one pair left unfinished
            shift = run.draw + 0.5 * run.spec.seed
            _write(tmp_path, run, best[key] + shift, 10.0, aurocs=[50.0, 60.0 + shift] if key[0] != "full" else None)
    lr, results, planned = load_protocol(tmp_path, E)
    assert lr == 3e-4 and planned == 32 and len(results) == 4 * 3
    assert paired(results, "Hill", "0.4left") == pytest.approx([-1.0] * 3)
    assert drops(results, "Hill", "0.4left") == pytest.approx([7.0] * 3)
    assert drop_advantage(results, "Hill", "0.4left") == pytest.approx([3.0] * 3)  # ASL drops 10, Hill 7
    text = report(tmp_path, tmp_path / "pics")
    assert "12 of 32 runs complete" in text and "+3.00 ± 0.00 (n=3, 3 > 0)" in text
    assert "-1.00 ± 0.00 (n=3, 0 > 0)" in text
    # the spread over draws apart: draw 0 has both seeds' pairs, draw 1 only seed 0's
    assert "| (a) loss − ASL | 0.4left | 0 | -1.00 (n=2) | - |" in text
    assert "| (b) ASL drop − loss drop | 0.4left | 1 | +3.00 (n=1) | - |" in text
    assert "Runs whose held-out pick is their last epoch (15): 0 of 12." in text  # every row scores the same
    assert "by lr (seeds [0], draw 0): 0.0001 40.00, 0.0003 45.50, 0.001 44.00; picked 0.0003." in text
    for name in ("prereg_E.png", "prereg_E_auroc.png"):
        assert (tmp_path / "pics" / name).read_bytes()[:8] == PNG_MAGIC
    assert "Protocol L: its lr is not picked yet" in text and (tmp_path / "analysis.md").read_text() == text


def test_the_lr_pick_line_says_when_the_pick_is_the_top_of_the_grid(tmp_path):
    E = PROTOCOLS["E"]
    (tmp_path / "E").mkdir()
    (tmp_path / "E" / "lr.json").write_text(json.dumps(
        {"lr": 1e-3, "held_out_map_by_lr": {"0.0001": 27.8, "0.0003": 39.3, "0.001": 47.4}, "lr_seeds": [0]}))
    assert lr_pick_line(tmp_path, E).endswith("picked 0.001 (the top of the grid).\n")


def test_the_best_epoch_is_the_first_highest_selected_map_as_train_py_keeps_it():
    rows = [{"epoch": 0, "map": 10.0, "map_ema": 30.0, "selected": "ema"},
            {"epoch": 1, "map": 20.0, "map_ema": 5.0, "selected": "model"},
            {"epoch": 2, "map": 30.0, "map_ema": 1.0, "selected": "model"}]
    assert RunResult("Asl", "full", 0, 0, 30.0, 30.0, rows).best_epoch == 0  # a tie keeps the earlier epoch
    rows[2]["map"] = 31.0
    assert RunResult("Asl", "full", 0, 0, 31.0, 31.0, rows).best_epoch == 2


def test_a_torn_or_foreign_lr_json_is_one_error_line_naming_it(tmp_path, capsys):
    from src.experiments.preregistered import _read_lr

    E, path = PROTOCOLS["E"], tmp_path / "lr.json"
    path.write_text(json.dumps({"lr": 3e-4, "held_out_map_by_lr": {}}))
    assert _read_lr(path, E) == 3e-4
    for text, message in (('{"lr": 3e-4, "held_out', f"{path}:1: not valid JSON"),
                          (json.dumps({"lr": 5e-4}), f"{path}: lr 0.0005 is not in protocol E's grid (0.0001, 0.0003, "
                                                     "0.001)"),
                          (json.dumps({"rule": "x"}), f"{path}: lr None is not in protocol E's grid")):
        path.write_text(text)
        with pytest.raises(SystemExit) as e:
            _read_lr(path, E)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1


def test_a_torn_exported_metrics_file_is_one_error_line_naming_it(tmp_path, capsys):
    L = PROTOCOLS["L"]
    for run in plan_lr_pick(L):
        _write(tmp_path, run, 50.0, 0.0)
    torn = tmp_path / plan_lr_pick(L)[3].rel / "metrics.jsonl"
    torn.write_text(torn.read_text()[:-9])
    with pytest.raises(SystemExit) as e:
        pick_lr(L, tmp_path)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"error: {torn}:") and "not a JSON row" in err


def test_a_tie_of_model_and_ema_goes_to_the_ema_in_every_reader(tmp_path):
    """engine.evaluate gives a model/EMA tie to the EMA; the report's readers (an export's last epoch, the batched
    heads' picks under every reading) and the trainer's best tracking follow the same rule."""
    from src.engine import select_model
    from src.experiments.preregistered_report import pick_epoch
    from src.trainer import RunState

    assert select_model({"model": 30.0, "ema": 30.0}) == "ema"
    tie = {"epoch": 0, "map": 30.0, "map_ema": 30.0, "map_full": 40.0, "map_ema_full": 40.0,
           "test_map": 1.0, "test_map_ema": 2.0, "selected": "ema"}
    for reading in ("observed", "full", "last"):
        assert RunResult.from_head_rows("Asl", "full", 0, 0, [tie], reading).best == 2.0  # the EMA's test mAP
        assert pick_epoch([tie], reading) == 0
    state = RunState()
    assert state.record(dict(tie), steps=1) and state.best["which"] == "ema"
    run = tmp_path / "E" / "lr0.001" / "d0" / "0.4left-Asl-s0"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "map": 30.0, "map_ema": 30.0}) + "\n")
    (run / "test_metrics.json").write_text(json.dumps({"map": 5.0, "last_epoch": {"map": 1.0, "map_ema": 2.0}}))
    from src.experiments.preregistered_report import read_result
    from src.experiments.preregistered_plan import _spec
    got = read_result(tmp_path, Run(PROTOCOLS["E"], 1e-3, 0, _spec("Asl", "0.4left", 0)))
    assert got.last == 2.0
