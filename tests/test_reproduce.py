"""reproduce: a tiny grid through train.py, resumable, with mean ± std tables."""
import argparse
import csv
import json

import pytest

from src.experiments import reproduce
from src.experiments.experiments import RunSpec
from src.run_metrics import RunMetrics


def tiny_grid(tmp_path, *extra):
    return ["--settings", "0.4left", "--losses", "BCE,Hill", "--seeds", "0,1", "--epochs", "1",
            "--train-images", "32", "--val-images", "16", "--image-size", "32", "--max-steps-per-epoch", "1",
            "-b", "8", "-j", "0", "--pretrain-epochs", "0", "--model-name", "resnet10t", "--device", "cpu",
            "--data-root", str(tmp_path / "data"), "--out-dir", str(tmp_path / "grid"), *extra]


def test_tiny_grid_writes_tables_and_resumes(tmp_path, capsys):
    rows = reproduce.main(tiny_grid(tmp_path))
    assert [(r["loss"], r["setting"], r["n"]) for r in rows] == [("BCE", "0.4left", 2), ("Hill", "0.4left", 2)]
    md = (tmp_path / "grid" / "results.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0] == "| loss | 0.4left |" and len(table) == 4  # header, rule, BCE, Hill
    assert "±" in table[2] and "±" in table[3]
    with open(tmp_path / "grid" / "results.csv") as f:
        records = list(csv.DictReader(f))
    assert [r["loss"] for r in records] == ["BCE", "Hill"] and all(r["n_seeds"] == "2" for r in records)
    assert all(0 <= float(r["mean_map"]) <= 100 and r["std_map"] != "" for r in records)
    assert sorted(p.name for p in (tmp_path / "grid").iterdir() if p.is_dir()) == [
        "0.4left-BCE-s0", "0.4left-BCE-s1", "0.4left-Hill-s0", "0.4left-Hill-s1"]
    capsys.readouterr()

    # Re-running skips every finished run; adding the 'full' reference trains only BCE on it.
    reproduce.main(tiny_grid(tmp_path, "--settings", "full,0.4left", "--seeds", "0"))
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 2 and "full-BCE-s0 (training)" in out and "full-Hill" not in out
    md = (tmp_path / "grid" / "results.md").read_text()
    assert "| loss | full | 0.4left |" in md and "| Hill |  |" in md


def test_summary_of_one_seed_has_no_std():
    run = RunMetrics(path=None, rows=[{"epoch": 0, "map": 40.0, "map_ema": 42.0, "seconds": 3.0}])
    rows = reproduce.summarize([(RunSpec("Hill", "0.4left", 0), run)])
    assert rows[0]["n"] == 1 and rows[0]["std"] is None and rows[0]["mean"] == 42.0
    md = reproduce.markdown_table(rows, ["0.4left"], ["Hill"], expected_seeds=3)
    assert "| Hill | 42.00 (1/3 seeds) |" in md
    assert reproduce.csv_table(rows).splitlines()[1].split(",")[4] == ""


def test_plan_follows_the_official_tau_rule_and_full_losses():
    specs = reproduce.plan_grid(["full", "0.75left", "0.4left"], ["BCE", "SPLC"], [0], full_losses=["BCE"])
    assert [s.name for s in specs] == ["full-BCE-s0", "0.75left-BCE-s0", "0.75left-SPLC-s0", "0.4left-BCE-s0",
                                       "0.4left-SPLC-s0"]
    assert specs[2].extra == ("--tau", "0.65") and specs[4].extra == ()


def test_unknown_setting_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main(tiny_grid(tmp_path, "--settings", "0.5left"))
    assert e.value.code == 2 and "0.5left" in capsys.readouterr().err


def test_parse_strengths_and_bad_specs(capsys):
    s = reproduce.parse_strengths("S1=48/2000/6, S2=64/4000/8/resnet18")
    assert s == [reproduce.Strength("S1", 48, 2000, 6), reproduce.Strength("S2", 64, 4000, 8, "resnet18")]
    assert s[1].overrides() == {"image_size": 64, "train_images": 4000, "epochs": 8, "model_name": "resnet18"}
    for bad in ("S1=48/2000", "S1=48/x/6", "=48/2000/6", "S1=0/2000/6", "S1=48/2000/6,S1=64/4000/8"):
        with pytest.raises(SystemExit) as e:
            reproduce.main(["--strengths", bad])
        assert e.value.code == 2 and "--strengths" in capsys.readouterr().err


def test_exported_runs_are_not_trained_again(tmp_path, capsys, synthetic_study):
    """A study whose every run is in the export trains nothing (no data, no pretraining) and re-analyses."""
    export = synthetic_study(tmp_path / "export", epochs=2)
    for s in ("S1", "S2"):
        (export / s / "strength.json").unlink()  # the study writes its own recipe record
    argv = ["--strengths", "S1=32/40/2,S2=32/50/2", "--settings", "full,0.4left", "--losses", "BCE,Asl,Hill,SPLC",
            "--data-root", str(tmp_path / "data"), "--out-dir", str(tmp_path / "runs"), "--export", str(export),
            "--pics", str(tmp_path / "pics")]
    rows = reproduce.main(argv)
    out = capsys.readouterr().out
    assert out.count("(exported, skipped)") == 2 * 3 * 5 and "(training)" not in out
    assert not (tmp_path / "data").exists() and (tmp_path / "pics" / "strength_gap.png").is_file()
    assert {(r["strength"], r["loss"], r["setting"], r["n"]) for r in rows} >= {("S2", "Hill", "0.4left", 3)}
    assert json.loads((export / "S1" / "strength.json").read_text())["image_size"] == 32
    with pytest.raises(SystemExit, match="another recipe"):
        reproduce.main([*argv, "--lr", "0.5"])


def test_official_shaped_flags_reach_every_run_and_a_stopped_run_counts_complete(tmp_path, capsys):
    argv = tiny_grid(tmp_path, "--losses", "Hill", "--seeds", "0", "--epochs", "3", "--stop-epoch", "0",
                     "--freeze-backbone", "--ema-decay", "0.5")
    reproduce.main(argv)
    run = tmp_path / "grid" / "0.4left-Hill-s0"
    args = json.loads((run / "args.json").read_text())
    assert (args["epochs"], args["stop_epoch"], args["freeze_backbone"], args["ema_decay"]) == (3, 0, True, 0.5)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    capsys.readouterr()
    reproduce.main(argv)  # one epoch of a 3-epoch schedule is all this run trains: complete
    assert "done, skipped" in capsys.readouterr().out


def test_strength_export_records_the_new_recipe_flags_only_when_set(tmp_path):
    strength = reproduce.Strength("S1", 32, 40, 4)
    base = {"model_name": "resnet10t", "batch_size": 8, "lr": 1e-3, "ema_decay": 0.99, "val_images": 16,
            "pretrain_epochs": 0, "pretrain_per_class": 200, "max_steps_per_epoch": None}
    reproduce._check_strength_export(tmp_path / "a", strength, argparse.Namespace(**base))
    assert set(json.loads((tmp_path / "a" / "strength.json").read_text())) == set(vars(strength)) | set(base)
    later = argparse.Namespace(**base, stop_epoch=1, freeze_backbone=True, pretrain_seed=2)
    with pytest.raises(SystemExit, match="another recipe"):
        reproduce._check_strength_export(tmp_path / "a", strength, later)
    reproduce._check_strength_export(tmp_path / "b", strength, later)
    saved = json.loads((tmp_path / "b" / "strength.json").read_text())
    assert (saved["stop_epoch"], saved["freeze_backbone"], saved["pretrain_seed"]) == (1, True, 2)
