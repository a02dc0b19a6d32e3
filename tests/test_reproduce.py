"""reproduce: a tiny grid through train.py, resumable, with mean ± std tables."""
import csv
import json

import pytest

from src.tools import reproduce
from src.tools.experiments import RunSpec
from src.tools.plot_metrics import RunMetrics


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

    # Re-running skips every finished run; adding the 'full' upper bound trains only BCE on it.
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


# ----------------------------------------------------------------------------- the strength study (no training)

def write_exported(root, strength, name, final_map, epochs=2, precision=60.0, recall=30.0):
    """An exported run folder as the study writes it: metrics rows for every epoch (mAP peaks at the end)."""
    run = root / strength / name
    run.mkdir(parents=True)
    rows = [{"epoch": e, "map": final_map - (epochs - 1 - e), "map_ema": final_map - 5.0, "seconds": 10.0,
             "missing_precision": precision, "missing_recall": recall} for e in range(epochs)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def synthetic_study(root, epochs=2):
    """Two strengths; ASL/Hill/SPLC per seed chosen so that paired and unpaired spreads differ."""
    maps = {"S1": {"Asl": [50.0, 52.0, 54.0], "Hill": [51.0, 52.0, 56.0], "SPLC": [49.0, 51.0, 53.0],
                   "BCE": [40.0, 41.0, 42.0]},
            "S2": {"Asl": [60.0, 61.0, 62.0], "Hill": [62.0, 63.0, 64.0], "SPLC": [61.0, 61.0, 61.0],
                   "BCE": [55.0, 55.0, 55.0]}}
    ref = {"S1": [70.0, 71.0, 72.0], "S2": [80.0, 80.0, 80.0]}
    for strength, by_loss in maps.items():
        (root / strength).mkdir(parents=True)
        (root / strength / "strength.json").write_text(json.dumps({"name": strength, "epochs": epochs}))
        for seed in range(3):
            write_exported(root, strength, f"full-BCE-s{seed}", ref[strength][seed], epochs)
            for loss, values in by_loss.items():
                write_exported(root, strength, f"0.4left-{loss}-s{seed}", values[seed], epochs,
                               precision=50.0 + 10 * seed, recall=20.0)
    return root


def test_parse_strengths_and_bad_specs(capsys):
    s = reproduce.parse_strengths("S1=48/2000/6, S2=64/4000/8/resnet18")
    assert s == [reproduce.Strength("S1", 48, 2000, 6), reproduce.Strength("S2", 64, 4000, 8, "resnet18")]
    assert s[1].overrides() == {"image_size": 64, "train_images": 4000, "epochs": 8, "model_name": "resnet18"}
    for bad in ("S1=48/2000", "S1=48/x/6", "=48/2000/6", "S1=0/2000/6", "S1=48/2000/6,S1=64/4000/8"):
        with pytest.raises(SystemExit) as e:
            reproduce.main(["--strengths", bad])
        assert e.value.code == 2 and "--strengths" in capsys.readouterr().err


def test_analysis_pairs_seeds_and_reads_last_epoch(tmp_path):
    root = synthetic_study(tmp_path / "export")
    # an unfinished run (1 of 2 epochs) is left out of the analysis
    write_exported(root, "S2", "singlelabel-Hill-s0", 99.0, epochs=1)
    study = reproduce.analyze_study(reproduce.load_study(root))
    assert study["strengths"] == ["S1", "S2"]
    gaps = {(g["strength"], g["loss"]): g for g in study["gaps"]}
    hill = gaps[("S1", "Hill")]
    assert hill["diffs"] == [1.0, 0.0, 2.0] and hill["mean"] == pytest.approx(1.0)
    assert hill["std"] == pytest.approx(1.0)  # paired; the unpaired std of the two columns would be ~2
    assert gaps[("S1", "SPLC")]["mean"] == pytest.approx(-1.0) and gaps[("S1", "SPLC")]["std"] == pytest.approx(0.0)
    assert gaps[("S2", "SPLC")]["diffs"] == [1.0, 0.0, -1.0]
    assert hill["ref_mean"] == pytest.approx(71.0) and gaps[("S2", "Hill")]["ref_std"] == pytest.approx(0.0)
    cells = {(c["strength"], c["setting"], c["loss"]): c for c in study["cells"]}
    assert ("S2", "singlelabel", "Hill") not in cells
    asl = cells[("S1", "0.4left", "Asl")]
    assert asl["maps"] == [50.0, 52.0, 54.0] and asl["std"] == pytest.approx(2.0)
    assert asl["missing_precision"] == pytest.approx(60.0) and asl["missing_recall"] == pytest.approx(20.0)


def test_analyze_cli_writes_tables_and_figure(tmp_path, capsys):
    root = synthetic_study(tmp_path / "export")
    reproduce.main(["--analyze", str(root), "--pics", str(tmp_path / "pics"), "--settings", "full,0.4left"])
    md = (root / "analysis.md").read_text()
    assert "| S1 | 71.00 ± 1.00 | +1.00 ± 1.00 | -1.00 ± 0.00 |" in md
    assert "| Asl |  | 52.00 ± 2.00 | 60 / 20 |" in md
    with open(root / "analysis.csv") as f:
        records = list(csv.DictReader(f))
    gap = [r for r in records if r["kind"] == "gap_vs_asl" and r["strength"] == "S2" and r["loss"] == "Hill"]
    assert gap[0]["values"] == "2.0000 2.0000 2.0000" and gap[0]["ref_mean"] == "80.0000"
    assert (tmp_path / "pics" / "strength_gap.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit, match="no strength.json"):
        (root / "stray").mkdir()
        reproduce.main(["--analyze", str(root), "--pics", str(tmp_path / "pics")])


def test_exported_runs_are_not_trained_again(tmp_path, capsys):
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
