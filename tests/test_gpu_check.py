"""benchmarks/gpu_check.py: the CPU rehearsal of `make gpu-check` end to end (so the GPU script cannot rot), and its
parts: process kill on cue and time limit, the table's ratios and verdicts, failure status."""
import json
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check as gc

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_cpu_rehearsal_runs_every_step(tmp_path, capsys):
    """Toy size: data, train.py killed after epoch 1 and resumed for epoch 2, validate.py agreeing with the run's
    best mAP, the benchmark, the official-style baseline (float32 on the CPU). Compile and CUDA-only steps are
    skipped."""
    out = tmp_path / "out"
    rc = gc.main(["--device", "cpu", "--out", str(out), "--wheels", str(tmp_path / "no-wheels")])
    report = json.loads((out / "table.json").read_text())
    status = {s["name"]: s["status"] for s in report["steps"]}
    assert rc == 0, f"steps: {report['steps']}"
    assert status == {"setup": "ok", "data": "ok", "sync": "skipped", "decode": "ok", "train": "ok", "bench": "ok",
                      "baseline": "ok", "bench-compile": "skipped", "train-compile": "skipped"}
    decode = report["raw"]["decode"]  # the CPU decoder turns libjpeg's warning into an error naming the file
    assert decode["outcome"] == "raised ImageDecodeError" and "(cut): bad image" in decode["message"]
    train = report["raw"]["train"]
    assert [e["epoch"] for e in train["epochs"]] == [0, 1, 2]
    assert train["epoch_lines"] and train["epoch_lines"][-1].startswith("epoch 2/2")
    assert abs(train["validate_map"] - train["best_map"]) <= 1e-4
    log = (out / "gpu_check.log").read_text()
    assert "resumed from" in log and "epoch 1/2" in log
    bench = report["raw"]["bench"]
    for key in ("a_train_img_s", "a_serial_img_s", "b_step_img_s", "data_img_s", "eval_img_s"):
        assert bench[key] > 0, key
    base = report["raw"]["baseline"]
    assert base["loader_official_img_s"] > 0 and base["model_official_img_s"] > 0
    assert (base["model"], base["image_size"], base["batch_size"]) == (gc.TOY.model, gc.TOY.image_size, gc.TOY.batch)
    assert all(r["met"] is None for r in report["rows"]), "targets are not judged on the CPU"
    table = (out / "table.md").read_text()
    assert "| what | measured | unit | target | met |" in table and "exit status 0" in table
    assert table.strip() in capsys.readouterr().out


def test_closed_truncated_jpeg_passes_the_header_rule_but_not_the_decoder(tmp_path):
    import numpy as np
    import torch
    from torchvision.io import encode_jpeg

    from src.data.decode import BadImageError, check_jpeg_complete, decode_rgb

    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8))
    data = encode_jpeg(image).numpy().tobytes()
    cut = gc.closed_truncated_jpeg(data)
    assert cut.endswith(b"\xff\xd9") and len(cut) < len(data)
    check_jpeg_complete(cut, "x.jpg")  # no error: the file looks complete
    with pytest.raises(BadImageError, match="x.jpg: bad image: corrupt data"):
        decode_rgb(np.frombuffer(cut, dtype=np.uint8).copy(), "x.jpg")
    with pytest.raises(ValueError):
        gc.closed_truncated_jpeg(b"not a jpeg")


def test_runner_kills_on_cue_and_at_its_time_limit(tmp_path):
    runner = gc.Runner(tmp_path / "log", budget_s=60, env={})
    script = "import time\nfor i in range(50):\n    print(f'line {i}', flush=True)\n    time.sleep(0.05)"
    rc, lines, killed = runner.run("t", [sys.executable, "-c", script], 30, kill_on="line 3")
    assert killed and rc < 0 and lines[-1] in ("line 3", "line 4")
    with pytest.raises(gc.CheckError, match=r"killed after its \d+ s limit"):
        runner.run("t", [sys.executable, "-c", "import time; time.sleep(30)"], 1.5)
    assert "line 3" in (tmp_path / "log").read_text()


def test_table_computes_ratios_and_verdicts():
    raw = {"bench": {"a_train_img_s": 960.0, "b_step_img_s": 1000.0, "eval_40137_s": 26.0, "a_peak_gib": 20.0},
           "bench-compile": {"a_train_img_s": 1500.0, "b_step_img_s": 1700.0},
           "baseline": {"loader_official_img_s": 700.0, "model_official_img_s": 750.0, "model_official_peak_gib": 21.0}}
    rows = {r["what"]: r for r in gc.table_rows(raw, "NVIDIA H100 80GB HBM3")}
    assert rows["(a)/(b), eager"]["met"] is True and rows["(a)/(b), compiled"]["met"] is False
    assert rows["baseline = the slower of the two"]["measured"] == 700.0
    assert rows["(a) eager / baseline"]["measured"] == pytest.approx(960 / 700)
    assert rows["(a) compiled / baseline"]["met"] is False  # 2.14 < 2.2
    eval_row = rows["eval of 40,137 images (val2014), model + EMA"]
    assert eval_row["met"] is True and "27.5" in eval_row["target"]  # the H100 allowance
    assert rows["peak GPU memory: (a) eager / official-style step"]["met"] is True
    h200 = {r["what"]: r for r in gc.table_rows(raw, "NVIDIA H200")}
    assert h200["eval of 40,137 images (val2014), model + EMA"]["met"] is False
    empty = {r["what"]: r for r in gc.table_rows({}, "NVIDIA H200")}
    assert empty["(a)/(b), eager"]["measured"] is None and empty["(a)/(b), eager"]["met"] is None
    decode = "the input pipeline's decoder on a JPEG cut short and closed with FF D9"
    silent = gc.table_rows({"decode": {"outcome": "decoded without an error", "mean_abs_diff": 31.25}}, "H200")
    row = next(r for r in silent if r["what"] == decode)
    assert row["met"] is False and "mean difference 31.2 levels" in row["measured"]
    raised = gc.table_rows({"decode": {"outcome": "raised ImageDecodeError", "message": "x"}}, "H200")
    assert next(r for r in raised if r["what"] == decode)["met"] is True


def test_a_failing_step_is_reported_and_the_rest_still_run(tmp_path, monkeypatch):
    ran = []

    def fake_step(name, ctx):
        ran.append(name)
        if name == "bench":
            raise gc.CheckError("bench_throughput failed (exit 1): boom")
        return {}

    monkeypatch.setattr(gc, "_run_step", fake_step)
    rc = gc.main(["--device", "cpu", "--out", str(tmp_path), "--wheels", str(tmp_path / "none")])
    report = json.loads((tmp_path / "table.json").read_text())
    assert rc == 1 and report["failed"] == ["bench"]
    assert ran == ["setup", "data", "decode", "train", "bench", "baseline"]
    assert "failed: bench" in (tmp_path / "table.md").read_text()


def test_bad_flags_are_rejected(tmp_path):
    with pytest.raises(SystemExit) as e:
        gc.parse_args(["--device", "cpu", "--budget", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        gc.parse_args(["--device", "tpu"])
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as e:
            gc.parse_args(["--device", "cuda"])
        assert e.value.code == 2


def test_setup_fails_plainly_when_a_needed_package_has_no_wheel(tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "WHEEL_MODULES", ("pycocotools", "no_such_module_xyz"))
    for device in ("cuda", "cpu"):
        ctx = gc.Context(gc.Runner(tmp_path / "log", 60, {}), tmp_path, gc.TOY, device, tmp_path / "none")
        with pytest.raises(gc.CheckError, match="lacks no_such_module_xyz.*make gpu-carry.*carry .carry"):
            gc.setup(ctx)


def test_the_closing_line_counts_passed_skipped_failed_and_names_missed_targets():
    steps = [{"name": n, "status": st, "seconds": 1.0, "detail": ""}
             for n, st in (("setup", "ok"), ("train", "ok"), ("sync", "skipped"), ("bench", "FAIL"))]
    rows = [{"what": "speed", "met": True}, {"what": "memory", "met": False}, {"what": "info", "met": None}]
    line = gc.verdict({"steps": steps, "rows": rows, "failed": ["bench"], "exit_status": 1})
    assert line == ("exit status 1: 2 of 4 steps passed; 1 skipped (sync); 1 failed: bench; "
                    "1 of 2 targets met; missed: memory")
    clean = gc.verdict({"steps": steps[:2], "rows": [rows[0]], "failed": [], "exit_status": 0})
    assert clean == "exit status 0: 2 of 2 steps passed; 1 of 1 targets met"
    unjudged = gc.verdict({"steps": steps[:3], "rows": [rows[2]], "failed": [], "exit_status": 0})
    assert "1 skipped (sync)" in unjudged and "every" not in unjudged and "no target judged" in unjudged


def test_augment_form_reaches_the_sync_and_bench_commands(tmp_path, monkeypatch):
    """--augment-form (make gpu-check AUGMENT=...) is passed to the sync and bench steps' processes."""
    seen = {}

    class FakeRunner:
        def run(self, tag, argv, limit):
            seen[tag] = argv
            if "--json" in argv:  # bench reads the figures its process writes
                Path(argv[argv.index("--json") + 1]).write_text("{}")
            return 0, ['{"batches_without_sync": 3}'], 0.0

    pool = tmp_path / "pool"
    gc.bench(FakeRunner(), pool, gc.TOY, "cpu", tmp_path, False, "bench", "fused")
    gc.sync_check(FakeRunner(), pool, gc.TOY, "fused-graph")
    assert seen["bench"][seen["bench"].index("--augment-form") + 1] == "fused"
    assert seen["sync"][seen["sync"].index("--augment-form") + 1] == "fused-graph"
    gc.bench(FakeRunner(), pool, gc.TOY, "cpu", tmp_path, False, "bench", None)
    assert "--augment-form" not in seen["bench"]
    assert gc.parse_args(["--device", "cpu", "--augment-form", "fused"]).augment_form == "fused"
