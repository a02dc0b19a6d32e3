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
    (["--loss", "Nope"], "unknown loss 'Nope'; known losses: BCE"),
    (["--model-name", "resnet5O"], "resnet50"),
    (["--num-classes", "24"], "disagrees with the data"),
    (["--tau", "0.7"], "tau"),                      # Hill takes no tau
    (["--stop-epoch", "5"], "--stop-epoch"),
    (["--val-split", "1.5"], "--val-split"),
    (["--val-split", "0.25", "--val-split-labels", "full"], "--oracle-list"),
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
    # and the last epoch's model and EMA, scored beside it, are last.ckpt's
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert test["last_epoch"]["epoch"] == rows[-1]["epoch"]
    assert all(r["eval_skipped_images"] == 0 for r in rows), "the training rows outside the hold-out are no skips"
    for which, flags in (("map", []), ("map_ema", ["--ema"])):
        v = validate.main(["--model-path", str(run / "last.ckpt"), "--data", str(toy_coco), "-j", "0", *flags])
        assert v["map"] == pytest.approx(test["last_epoch"][which], abs=1e-6)


@pytest.mark.parametrize("labels", ["observed", "full"])
def test_val_split_labels_picks_the_held_out_reading_and_both_are_logged(toy_coco, tmp_path, labels):
    """With --oracle-list every epoch logs the held-out mAP on observed and on full labels; --val-split-labels
    says which one is "map" (and picks best.ckpt). The full labels are another reading: they differ."""
    run = tmp_path / labels
    train.main(small_args(toy_coco, run, "--val-split", "0.25", "--stop-epoch", "1", "--oracle-list",
                          str(toy_coco / "coco_train_full.txt"), "--val-split-labels", labels))
    got = rows(run)
    for row in got:
        assert row["map"] == row[f"map_{labels}"] and row["map_ema"] == row[f"map_ema_{labels}"]
    assert any(r["map_full"] != r["map_observed"] for r in got)
    best = torch.load(run / "best.ckpt", weights_only=True)
    picked = max(got, key=lambda r: max(r["map"], r["map_ema"]))
    assert best["epoch"] == picked["epoch"]


def test_oracle_logs_missing_label_identification(toy_coco, tmp_path):
    run = tmp_path / "run"
    train.main(small_args(toy_coco, run, "--oracle-list", str(toy_coco / "coco_train_full.txt"),
                          "--stop-epoch", "1", loss="SPLC"))
    got = rows(run)
    assert len(got) == 2
    for row in got:
        assert row["missing_count"] > 0
        assert 0 <= row["missing_recall"] <= 100 or row["missing_recall"] != row["missing_recall"]  # NaN: none found
        assert 0 <= row["missing_auroc"] <= 100 and 0 <= row["missing_topk_precision"] <= 100


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
           str(ROOT / "train.py"), *small_args(toy_coco, run, "--oracle-list", str(toy_coco / "coco_train_full.txt"),
                                               steps=2)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "world size 2" in done.stdout
    (row,) = rows(run)
    assert 0 <= row["missing_auroc"] <= 100  # the two ranks' scores, combined by all_reduce_max
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


def test_a_resume_with_another_worker_count_matches_the_uninterrupted_run(toy_coco, tmp_path):
    """Each sample's augmentation follows from (seed, epoch, index): -j 0 then a resume with -j 2 gives the rows
    of an uninterrupted -j 0 run (the workers' own seeds used to decide it)."""
    train.main(small_args(toy_coco, tmp_path / "ref", "--stop-epoch", "1", steps=3))
    run = tmp_path / "run"
    train.main(small_args(toy_coco, run, "--stop-epoch", "0", steps=3))
    train.main(small_args(toy_coco, run, "--stop-epoch", "1", "--resume", "auto", "-j", "2", steps=3))
    got, want = rows(run), rows(tmp_path / "ref")
    assert [r["epoch"] for r in got] == [0, 1]
    for g, w in zip(got, want):
        for key in set(w) - TIMING_KEYS:
            assert g[key] == (pytest.approx(w[key], abs=1e-6) if isinstance(w[key], float) else w[key]), key


def test_a_diverged_run_is_flagged_and_stopped_and_never_best(toy_coco, tmp_path, capsys):
    """--lr 1e4: the loss grows by orders of magnitude and the scores collapse; exit 0 with a "best mAP" above
    the healthy run's before."""
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"training diverged at epoch 0: .*lower --lr \(now 10000\); no checkpoint") \
            as e:
        train.main(small_args(toy_coco, run, "--lr", "1e4", steps=4))
    assert e.value.code == 2  # as docs/reliability.md says: an error line, exit status 2
    (row,) = rows(run)
    assert row["diverged"] and "DIVERGED: " in capsys.readouterr().out
    assert not (run / "best.ckpt").exists() and not (run / "last.ckpt").exists()


@pytest.mark.parametrize("row, history, why", [
    ({"train_loss": 5e4, "first_step_loss": 100.0, "score_spread": 0.1}, [], "500 times the lowest so far"),
    ({"train_loss": 90.0, "first_step_loss": 0.5, "score_spread": 0.1}, [], "180 times"),
    ({"train_loss": 5e4, "first_step_loss": 5e4, "score_spread": 0.1}, [{"train_loss": 50.0}], "1000 times"),
    ({"train_loss": 90.0, "first_step_loss": 100.0, "score_spread": 0.0}, [], "the same scores"),
    ({"train_loss": 90.0, "first_step_loss": 100.0, "score_spread": 1e-3}, [{"train_loss": 95.0}], None),
])
def test_divergence_rule(row, history, why):
    from src.trainer import divergence
    got = divergence(row, history)
    assert (got is None) if why is None else (why in got)


def test_a_last_training_batch_of_one_image_is_left_out(toy_coco, tmp_path, capsys):
    """48 images in batches of 47: the last batch would hold one image, which BatchNorm cannot train on at 32 px
    (a traceback before)."""
    run = tmp_path / "run"
    train.main(small_args(toy_coco, run, "-b", "47", steps=5))
    assert "leaves out its last batch, of 1 image" in capsys.readouterr().out
    (row,) = rows(run)
    assert row["images_per_second"] > 0 and row["epoch"] == 0


def test_stop_epoch_unset_trains_the_whole_short_schedule_and_args_json_records_it(toy_coco, tmp_path):
    argv = small_args(toy_coco, tmp_path / "run", steps=1)
    k = argv.index("--stop-epoch")
    del argv[k:k + 2]  # --epochs 2 alone
    train.main(argv)
    assert [r["epoch"] for r in rows(tmp_path / "run")] == [0, 1]
    assert json.loads((tmp_path / "run" / "args.json").read_text())["stop_epoch"] == 1


def test_a_bad_test_image_skipped_is_counted_in_the_row_and_the_epoch_line(toy_coco, tmp_path, capsys):
    import shutil
    toy = tmp_path / "toy"
    shutil.copytree(toy_coco, toy)
    victim = sorted((toy / "val2014").glob("*.jpg"))[2]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated JPEG
    train.main(small_args(toy, tmp_path / "run", "--skip-bad-images"))
    (row,) = rows(tmp_path / "run")
    assert row["eval_skipped_images"] == 1 and row["skipped_images"] == 0
    assert "evaluated without 1 bad images" in capsys.readouterr().out


# ----------------------------------------------------------------------------- --freeze-backbone

def _frozen_args(toy: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return small_args(toy, out, "--model-name", "resnet10t", "-b", "16", "--freeze-backbone", "--pretrained",
                      str(weights), "--oracle-list", str(toy / "coco_train_full.txt"), *extra, loss="SPLC", steps=100)


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> Path:
    """A resnet10t weights file whose BatchNorm statistics are not the defaults (so an update would show)."""
    import timm
    torch.manual_seed(123)
    model = timm.create_model("resnet10t", num_classes=1000)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "resnet10t.pth"
    torch.save(model.state_dict(), path)
    return path


def test_frozen_backbone_50_epochs_keeps_the_backbone_and_validate_scores_best(toy_coco, tmp_path, backbone_file):
    from timm.utils import random_seed

    from src.models import create_model_with_weights

    run = tmp_path / "frozen"
    result = train.main(_frozen_args(toy_coco, run, backbone_file, "--epochs", "50", "--stop-epoch", "49"))
    got = rows(run)
    assert [r["epoch"] for r in got] == list(range(50))
    assert all(0 <= r["missing_auroc"] <= 100 for r in got)
    assert json.loads((run / "args.json").read_text())["freeze_backbone"] is True
    start = torch.load(backbone_file, weights_only=True)
    last, best = (torch.load(run / f, weights_only=True) for f in ("last.ckpt", "best.ckpt"))
    random_seed(0)  # as build_run seeds before making the model: the classifier it starts from
    initial_head = create_model_with_weights("resnet10t", last["num_classes"], str(backbone_file), 32)[0].fc
    for state in (last["model"], last["ema"], best["model"]):
        backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
        assert set(backbone) == set(start) - {"fc.weight", "fc.bias"}
        for k, v in backbone.items():
            assert torch.equal(v, start[k]), k  # weights and BatchNorm statistics exactly as loaded
        assert not torch.equal(state["fc.weight"], initial_head.weight.detach())  # the classifier trained
    assert not torch.equal(last["model"]["fc.weight"], last["ema"]["fc.weight"])
    v = validate.main(["--model-path", str(run / "best.ckpt"), "--data", str(toy_coco), "-j", "0"])
    assert v["map"] == pytest.approx(result["map"], abs=1e-6)


def test_frozen_resume_matches_uninterrupted_run(toy_coco, tmp_path, backbone_file):
    ref, run = tmp_path / "ref", tmp_path / "run"
    train.main(_frozen_args(toy_coco, ref, backbone_file, "--epochs", "5", "--stop-epoch", "3"))
    train.main(_frozen_args(toy_coco, run, backbone_file, "--epochs", "5", "--stop-epoch", "1"))
    train.main(_frozen_args(toy_coco, run, backbone_file, "--epochs", "5", "--stop-epoch", "3", "--resume", "auto"))
    got, want = rows(run), rows(ref)
    assert [r["epoch"] for r in got] == [0, 1, 2, 3]
    for g, w in zip(got, want):
        for key in set(w) - TIMING_KEYS:
            assert g[key] == pytest.approx(w[key], abs=1e-6, nan_ok=True) if isinstance(w[key], float) \
                else g[key] == w[key], key
    a, b = (torch.load(r / "last.ckpt", weights_only=True) for r in (ref, run))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    with pytest.raises(SystemExit, match="freeze-backbone"):  # run-defining: a resume cannot drop it
        train.main(small_args(toy_coco, run, "--model-name", "resnet10t", "-b", "16", "--epochs", "5",
                              "--stop-epoch", "4", "--resume", "auto", loss="SPLC"))


def test_frozen_val_split_scores_best_on_test(toy_coco, tmp_path, backbone_file):
    run = tmp_path / "run"
    result = train.main(_frozen_args(toy_coco, run, backbone_file, "--val-split", "0.25", "--stop-epoch", "1"))
    v = validate.main(["--model-path", str(run / "best.ckpt"), "--data", str(toy_coco), "-j", "0"])
    assert v["map"] == pytest.approx(result["test"]["map"], abs=1e-6)
