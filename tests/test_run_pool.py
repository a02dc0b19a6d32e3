"""src/experiments/run_pool.py: the order of a strength study's runs, the children's flags, the scheduling (with stand-in
children), and reproduce --jobs end to end on a tiny toy study."""
import json
import subprocess
import sys
import time

import pytest

from src.experiments import reproduce, run_pool
from src.experiments.experiments import RunSpec
from src.experiments.run_pool import PoolRun, child_argv, order_runs, priority


def pool_run(strength, setting, loss, seed, group=None):
    return PoolRun(strength, f"{strength}=32/64/1", RunSpec(loss, setting, seed), group or strength)


def test_priority_puts_the_gap_runs_first():
    assert priority(RunSpec("BCE", "full")) == 0
    assert [priority(RunSpec(loss, "0.4left")) for loss in ("Asl", "Hill", "SPLC")] == [0, 0, 0]
    assert [priority(RunSpec(loss, "singlelabel")) for loss in ("Asl", "Hill", "SPLC")] == [1, 1, 1]
    assert priority(RunSpec("Focal", "0.4left")) == priority(RunSpec("BCE", "singlelabel")) == 2


def test_order_runs_by_priority_then_seed_then_strength():
    runs = [pool_run(s, setting, loss, seed) for s in ("S1", "S2") for seed in (0, 1)
            for setting, loss in (("0.4left", "BCE"), ("singlelabel", "Hill"), ("0.4left", "Asl"))]
    names = [r.label for r in order_runs(runs, ["S1", "S2"])]
    assert names[:4] == ["S1/0.4left-Asl-s0", "S2/0.4left-Asl-s0", "S1/0.4left-Asl-s1", "S2/0.4left-Asl-s1"]
    assert names[4:8] == ["S1/singlelabel-Hill-s0", "S2/singlelabel-Hill-s0", "S1/singlelabel-Hill-s1",
                          "S2/singlelabel-Hill-s1"]
    assert names[8:] == ["S1/0.4left-BCE-s0", "S2/0.4left-BCE-s0", "S1/0.4left-BCE-s1", "S2/0.4left-BCE-s1"]


def test_child_argv_of_a_plain_grid_has_no_strengths():
    argv = child_argv(["--seeds", "0,1"], PoolRun("grid", None, RunSpec("Asl", "0.4left", 1), "grid"))
    a = reproduce.build_parser().parse_args(argv)
    assert a.strengths is None and (a.settings, a.losses, a.seeds) == (["0.4left"], ["Asl"], [1])


def test_child_argv_restricts_the_study_to_one_run():
    base = ["--strengths", "S1=48/2000/6,S2=64/4000/8", "--seeds", "0,1,2", "--losses", "BCE,Hill",
            "--export", "exp"]
    a = reproduce.build_parser().parse_args(child_argv(base, pool_run("S2", "singlelabel", "Hill", 1)))
    assert [s.name for s in a.strengths] == ["S2"] and a.strengths[0].image_size == 32
    assert (a.settings, a.losses, a.full_losses, a.seeds, a.no_report) == (["singlelabel"], ["Hill"], "Hill",
                                                                           [1], True)
    assert str(a.export) == "exp"


@pytest.mark.parametrize("argv", [["--jobs", "4", "--seeds", "0"], ["--jobs=4", "--seeds", "0", "--stop-after=9"],
                                  ["--stop-after", "9", "--seeds", "0", "--jobs", "4"]])
def test_pool_flags_are_not_passed_on(argv):
    assert reproduce._without_pool_flags(argv) == ["--seeds", "0"]


def test_jobs_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--strengths", "T=32/64/1", "--jobs", "0"])
    assert "--jobs must be >= 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- scheduling, stand-in children

@pytest.fixture
def fake_children(monkeypatch):
    """Children that sleep briefly and exit 1 when their label is in ``fail``; records start times and the
    number running at each start."""
    state = {"fail": set(), "starts": [], "procs": [], "most_running": 0}

    def start(run, base, log_dir, t0):
        code = 1 if run.label in state["fail"] else 0
        run.proc = subprocess.Popen([sys.executable, "-c", f"import time, sys; time.sleep(0.3); sys.exit({code})"])
        run.started = time.monotonic()
        state["starts"].append(run.label)
        state["procs"].append(run.proc)
        state["most_running"] = max(state["most_running"], sum(p.poll() is None for p in state["procs"]))

    monkeypatch.setattr(run_pool, "_start", start)
    return state


def test_one_opener_per_group_then_the_rest_within_jobs(fake_children, tmp_path):
    runs = [pool_run("S1", "0.4left", loss, seed, "48px") for seed in (0, 1) for loss in ("Asl", "Hill")]
    runs += [pool_run("S2", "0.4left", "Asl", 0, "48px")]  # shares S1's caches: waits for S1's opener too
    result = run_pool.run_pool(runs, [], jobs=2, log_dir=tmp_path / "logs")
    assert sorted(result["finished"]) == sorted(r.label for r in runs) and not result["failed"]
    assert fake_children["starts"][0] == "S1/0.4left-Asl-s0"
    # the opener ran alone: the second start came after it had finished
    opener = runs[0]
    assert all(r.started >= opener.started + 0.3 for r in runs[1:])
    assert fake_children["most_running"] == 2
    assert (tmp_path / "logs").is_dir()


def test_a_failed_opener_skips_its_group_only(fake_children, tmp_path, capsys):
    fake_children["fail"] = {"S1/0.4left-Asl-s0"}
    runs = [pool_run("S1", "0.4left", "Asl", 0, "48px"), pool_run("S1", "0.4left", "Hill", 0, "48px"),
            pool_run("S2", "0.4left", "Asl", 0, "64px")]
    result = run_pool.run_pool(runs, [], jobs=3, log_dir=tmp_path)
    assert result == {"finished": ["S2/0.4left-Asl-s0"], "failed": ["S1/0.4left-Asl-s0"],
                      "skipped": ["S1/0.4left-Hill-s0"], "not started": []}
    assert "failed: S1/0.4left-Asl-s0" in capsys.readouterr().out


def test_stop_after_starts_nothing_late(fake_children, tmp_path):
    runs = [pool_run("S1", "0.4left", "Asl", 0), pool_run("S1", "0.4left", "Hill", 0)]
    result = run_pool.run_pool(runs, [], jobs=2, log_dir=tmp_path, stop_after=0.0)
    assert result["not started"] == [r.label for r in runs] and fake_children["starts"] == []


# ----------------------------------------------------------------------------- end to end

TINY = ["--settings", "full,0.4left", "--losses", "Asl,Hill", "--seeds", "0", "--val-images", "16",
        "--pretrain-epochs", "0", "-b", "16", "-j", "0", "--device", "cpu", "--jobs", "2"]


def _reproduce(argv):
    out = subprocess.run([sys.executable, "-m", "src.experiments.reproduce", *argv], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_reproduce_jobs_trains_the_study_and_exports_it(tmp_path):
    """Three runs of a tiny strength, two at a time: each exported, the analysis written, a rerun trains none."""
    argv = ["--strengths", "T=32/48/1", *TINY, "--export", str(tmp_path / "exp"), "--out-dir", str(tmp_path / "runs"),
            "--data-root", str(tmp_path / "data"), "--pics", str(tmp_path / "pics")]
    out = _reproduce(argv)
    assert "3 runs to train, 2 at a time" in out and "3 finished, 0 failed" in out
    for name in ("full-BCE-s0", "0.4left-Asl-s0", "0.4left-Hill-s0"):
        rows = (tmp_path / "exp" / "T" / name / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["epoch"] for r in rows] == [0]
        assert (tmp_path / "runs" / "logs" / f"T-{name}.log").is_file()
    assert "0.4left Hill − ASL" in (tmp_path / "exp" / "analysis.md").read_text()
    assert (tmp_path / "pics" / "strength_gap.png").is_file()
    assert "0 runs to train" in _reproduce(argv)


def test_reproduce_jobs_on_a_plain_grid_writes_the_whole_table(tmp_path):
    """Without --strengths: the runs in parallel, then one table of all of them (not of the last child's run)."""
    argv = [*TINY, "--train-images", "48", "--image-size", "32", "--epochs", "1", "--out-dir", str(tmp_path / "runs"),
            "--data-root", str(tmp_path / "data")]
    out = _reproduce(argv)
    assert "3 finished, 0 failed" in out
    table = (tmp_path / "runs" / "results.md").read_text()
    assert "| Asl |" in table and "| Hill |" in table and "| BCE |" in table and "3 runs" in table
    assert (tmp_path / "runs" / "logs" / "grid-0.4left-Hill-s0.log").is_file()
    assert "0 runs to train" in _reproduce(argv)  # complete in OUT_DIR: nothing to start
