"""benchmarks/bench_augment.py at a tiny size on the CPU: the printed format and the fused count's flatness.
Nothing about speed is asserted."""
import re

import pytest

from benchmarks import bench_augment as ba

LINE = re.compile(r"^(per-op|masked|fused|fused-graph|fused-compiled) (\d+) images: (\d+) ops per batch \((\d+) aten calls with nested ones\), "
                  r"(\d+\.\d\d) ms per batch$")


def test_tiny_cpu_run_prints_counts_and_times(capsys, tmp_path):
    results = ba.main(["--device", "cpu", "--image-size", "12", "--batches", "4,6", "--repeats", "1",
                       "--json", str(tmp_path / "r.json")])
    lines = capsys.readouterr().out.splitlines()
    rows = [LINE.match(line) for line in lines if LINE.match(line)]
    assert [(m[1], int(m[2])) for m in rows] == [("per-op", 4), ("fused", 4), ("per-op", 6), ("fused", 6)]
    assert all(int(m[4]) >= int(m[3]) > 0 for m in rows)
    fused = {int(m[3]) for m in rows if m[1] == "fused"}
    assert len(fused) == 1, f"the fused count must not depend on the batch: {fused}"
    assert [(r.form, r.batch, r.ops) for r in results] == [(m[1], int(m[2]), int(m[3])) for m in rows]
    assert any(line.startswith("fused / per-op ops: ") and "flat in the batch size: yes" in line for line in lines)
    assert any(line.startswith("fused / per-op time on cpu: ") for line in lines)
    assert (tmp_path / "r.json").read_text().startswith("[")


def test_forms_flag_adds_a_form(capsys):
    ba.main(["--device", "cpu", "--image-size", "8", "--batches", "2", "--repeats", "1",
             "--forms", "per-op,fused,masked"])
    forms = [m[1] for m in map(LINE.match, capsys.readouterr().out.splitlines()) if m]
    assert forms == ["per-op", "fused", "masked"]


@pytest.mark.parametrize("argv", [["--batches", "4,x"], ["--forms", "fused"], ["--forms", "per-op,fused,best"]])
def test_bad_flags_exit_2(argv):
    with pytest.raises(SystemExit) as e:
        ba.main(argv)
    assert e.value.code == 2
