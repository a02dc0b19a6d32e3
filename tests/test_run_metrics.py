"""src/run_metrics.py: a run folder's metrics.jsonl and args.json read back; a missing file or a bad row is an error
naming the file (and the line)."""
import math

import pytest

from src.run_metrics import MetricsError, read_run


def test_reads_rows_nan_and_the_args(write_run, tmp_path):
    run = read_run(write_run(tmp_path / "hill_dir", "Hill", [10.0, 20.0]))
    assert run.best_map == [10.0, 20.0]  # max(model, EMA)
    assert math.isnan(run.column("missing_precision")[0]) and run.column("missing_recall") == [0.0, 10.0]
    assert run.args["loss"] == "Hill" and run.has_missing
    bare = read_run(write_run(tmp_path / "no_args", "x", [1.0], missing=False, args=False))
    assert bare.args == {} and not bare.has_missing


def test_missing_metrics_file_names_the_folder(tmp_path):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(MetricsError, match="not_a_run: no metrics.jsonl"):
        read_run(empty)


def test_bad_row_names_file_and_line(write_run, tmp_path):
    run = write_run(tmp_path / "r", "BCE", [1.0])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 1}\n')
    with pytest.raises(MetricsError, match=r"metrics.jsonl:2: a row needs"):
        read_run(run)
