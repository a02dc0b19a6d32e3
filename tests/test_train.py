"""train.py / validate.py end to end on the tiny toy COCO, on the CPU."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
import validate
from src.loss_functions.losses import LOSS_NAMES

ROOT = Path(__file__).resolve().parents[1]
METRIC_KEYS = {"epoch", "train_loss", "lr", "map", "map_ema", "cp", "cr", "cf1", "op", "or", "of1", "seconds",
               "images_per_second"}
TIMING_KEYS = {"seconds", "train_seconds", "images_per_second"}


def small_args(toy: Path, out: Path, *extra: str, loss: str = "Hill", steps: int = 2) -> list[str]:
    return ["--data", str(toy), "--dataset", str(toy / "coco_train_0.4left.txt"), "--model-name", "resnet18",
            "--image-size", "32", "-b", "8", "-j", "0", "--epochs", "2", "--stop-epoch", "0", "--lr", "1e-3",
            "--loss", loss, "--output", str(out), "--max-steps-per-epoch", str(steps), "--pretrained", "none", *extra]


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_loss_trains_one_short_epoch(toy_coco, tmp_path, loss):
    result = train.main(small_args(toy_coco, tmp_path / loss, loss=loss))
    (row,) = rows(tmp_path / loss)
    assert METRIC_KEYS <= set(row)
    assert row["epoch"] == 0 and torch.isfinite(torch.tensor(row["train_loss"]))
    assert 0 <= row["map"] <= 100 and 0 <= row["map_ema"] <= 100
    assert result["map"] == max(row["map"], row["map_ema"])
    assert (tmp_path / loss / "last.ckpt").is_file() and (tmp_path / loss / "best.ckpt").is_file()


def test_validate_reproduces_reported_map(toy_coco, tmp_path, capsys):
    run = tmp_path / "run"
    train.main(small_args(toy_coco, run, "--stop-epoch", "1", steps=3))
    best = max(max(r["map"], r["map_ema"]) for r in rows(run))
    out_json = tmp_path / "val.json"
    result = validate.main(["--model-path", str(run / "best.ckpt"), "--data", str(toy_coco), "-j", "0",
                            "--json", str(out_json)])
    assert result["map"] == pytest.approx(best, abs=1e-6)
    assert json.loads(out_json.read_text())["map"] == pytest.approx(best, abs=1e-6)
    printed = capsys.readouterr().out
    assert "mAP score:" in printed and " * P_C " in printed


def test_validate_reads_dataparallel_state_dict(toy_coco, tmp_path):
    run = tmp_path / "run"
    train.main(small_args(toy_coco, run))
    ckpt = torch.load(run / "best.ckpt", weights_only=True)
    dp = tmp_path / "official.ckpt"
    torch.save({"module." + k: v for k, v in ckpt["model"].items()}, dp)
    a = validate.main(["--model-path", str(run / "best.ckpt"), "--data", str(toy_coco), "-j", "0"])
    b = validate.main(["--model-path", str(dp), "--data", str(toy_coco), "-j", "0", "--model-name", "resnet18",
                       "--image-size", "32"])
    assert a["map"] == pytest.approx(b["map"], abs=1e-9)


@pytest.mark.parametrize("extra, message", [
    (["--loss", "Nope"], "invalid choice"),
    (["--model-name", "resnet5O"], "resnet50"),
    (["--num-classes", "80"], "disagrees with the data"),
    (["--tau", "0.7"], "tau"),                      # Hill takes no tau
    (["--stop-epoch", "5"], "--stop-epoch"),
    (["--val-split", "1.5"], "--val-split"),
])
def test_bad_flags_are_argparse_errors(toy_coco, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        train.main(small_args(toy_coco, tmp_path / "x") + extra)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_folders_are_named(tmp_path):
    (tmp_path / "train2014").mkdir()
    with pytest.raises(SystemExit, match="val2014"):
        train.main(small_args(tmp_path, tmp_path / "out"))


def test_existing_run_needs_resume(toy_coco, tmp_path):
    run = tmp_path / "run"
    train.main(small_args(toy_coco, run))
    with pytest.raises(SystemExit, match="--resume auto"):
        train.main(small_args(toy_coco, run))


def test_held_out_split_scores_best_on_test(toy_coco, tmp_path):
    run = tmp_path / "run"
    result = train.main(small_args(toy_coco, run, "--val-split", "0.25"))
    test = json.loads((run / "test_metrics.json").read_text())
    assert result["test"]["map"] == pytest.approx(test["map"])
    # validate.py on the test set agrees with the reported test figure
    v = validate.main(["--model-path", str(run / "best.ckpt"), "--data", str(toy_coco), "-j", "0"])
    assert v["map"] == pytest.approx(test["map"], abs=1e-6)


def test_oracle_logs_missing_label_identification(toy_coco, tmp_path):
    run = tmp_path / "run"
    train.main(small_args(toy_coco, run, "--oracle-list", str(toy_coco / "coco_train_full.txt"), loss="SPLC"))
    (row,) = rows(run)
    assert row["missing_count"] > 0
    assert 0 <= row["missing_recall"] <= 100 or row["missing_recall"] != row["missing_recall"]  # NaN: none found


def test_oracle_list_must_cover_training_images(toy_coco, tmp_path):
    partial = tmp_path / "partial.txt"
    partial.write_text("\n".join((toy_coco / "coco_train_full.txt").read_text().splitlines()[:5]) + "\n")
    with pytest.raises(SystemExit, match="no line for training image"):
        train.main(small_args(toy_coco, tmp_path / "run", "--oracle-list", str(partial)))


def _train_cmd(toy: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *small_args(toy, out, "--epochs", "4", "--stop-epoch", "2",
                                                               *extra, steps=4)]


def test_kill_and_resume_matches_uninterrupted_run(toy_coco, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(toy_coco, ref), check=True, env=env, capture_output=True, cwd=ROOT)

    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(toy_coco, run), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "last.ckpt"  # written atomically: once it exists, epoch 0 is complete
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists():
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(rows(run)) < 3
    subprocess.run(_train_cmd(toy_coco, run, "--resume", "auto"), check=True, env=env, capture_output=True, cwd=ROOT)

    got, want = rows(run), rows(ref)
    assert [r["epoch"] for r in got] == [0, 1, 2]
    for g, w in zip(got, want):
        for key in set(w) - TIMING_KEYS:
            if isinstance(w[key], float):
                assert g[key] == pytest.approx(w[key], abs=1e-6), key
            else:
                assert g[key] == w[key], key


def test_resume_rejects_a_different_run_and_a_torn_file(toy_coco, tmp_path):
    run = tmp_path / "run"
    train.main(small_args(toy_coco, run, "--epochs", "3", "--stop-epoch", "0"))
    with pytest.raises(SystemExit, match="different run"):
        train.main(small_args(toy_coco, run, "--epochs", "3", "--stop-epoch", "1", "--resume", "auto",
                              "--lr", "2e-3"))
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes((run / "last.ckpt").read_bytes()[:1000])
    with pytest.raises(SystemExit, match="cannot read checkpoint"):
        train.main(small_args(toy_coco, tmp_path / "other", "--epochs", "3", "--resume", str(torn)))


def test_two_process_gloo_run_matches_validate(toy_coco, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train.py"), *small_args(toy_coco, run, steps=2)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "world size 2" in done.stdout
    (row,) = rows(run)
    best = max(row["map"], row["map_ema"])
    v = validate.main(["--model-path", str(run / "best.ckpt"), "--data", str(toy_coco), "-j", "0"])
    assert v["map"] == pytest.approx(best, abs=1e-6)


def test_gpu_pipeline_path_runs_on_the_cpu_and_validate_agrees(toy_coco, tmp_path):
    """--gpu-pipeline on: workers read bytes, decode/resize/augment run batched on the device (here the CPU)."""
    run = tmp_path / "run"
    train.main(small_args(toy_coco, run, "--gpu-pipeline", "on"))
    (row,) = rows(run)
    best = max(row["map"], row["map_ema"])
    v = validate.main(["--model-path", str(run / "best.ckpt"), "--data", str(toy_coco), "-j", "0",
                       "--gpu-pipeline", "on"])
    assert v["map"] == pytest.approx(best, abs=1e-6)
    # on the CPU the batched decode equals the per-image val transform, so the CPU path agrees too
    c = validate.main(["--model-path", str(run / "best.ckpt"), "--data", str(toy_coco), "-j", "0",
                       "--gpu-pipeline", "off"])
    assert c["map"] == pytest.approx(best, abs=1e-4)


def test_gpu_pipeline_refuses_skip_bad_images(toy_coco, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(small_args(toy_coco, tmp_path / "x", "--gpu-pipeline", "on", "--skip-bad-images"))
    assert "--gpu-pipeline off" in capsys.readouterr().err


def test_corrupt_image_stops_or_is_skipped_and_counted(toy_coco, tmp_path):
    import shutil
    toy = tmp_path / "toy"
    shutil.copytree(toy_coco, toy)
    victim = sorted((toy / "train2014").glob("*.jpg"))[3]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(SystemExit, match=victim.name):  # error: <file>: bad image: ..., exit status 2
        train.main(small_args(toy, tmp_path / "a", steps=6))
    train.main(small_args(toy, tmp_path / "b", "--skip-bad-images", steps=6))
    (row,) = rows(tmp_path / "b")
    assert row["skipped_images"] == 1
