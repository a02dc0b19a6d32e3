"""src/experiments/strength_study.py: reading a strength study's export back, the paired per-seed gaps, the tables and
the figure (through reproduce --analyze); no training."""
import csv

import pytest

from src.experiments import reproduce
from src.experiments.strength_study import analyze_study, load_study


def test_analysis_pairs_seeds_and_reads_last_epoch(tmp_path, synthetic_study, write_exported):
    root = synthetic_study(tmp_path / "export")
    # an unfinished run (1 of 2 epochs) is left out of the analysis
    write_exported(root, "S2", "singlelabel-Hill-s0", 99.0, epochs=1)
    study = analyze_study(load_study(root))
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


def test_analyze_cli_writes_tables_and_figure(tmp_path, capsys, synthetic_study):
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
