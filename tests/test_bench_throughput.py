"""Smoke test of benchmarks/bench_throughput.py at toy size on the CPU: every figure is produced, finite and positive.
Nothing about speed is asserted."""
import json
import math

import pytest

from benchmarks import bench_throughput as bt

FIGURES = ("a_train_img_s", "a_serial_img_s", "b_step_img_s", "data_img_s", "eval_img_s", "eval_40137_s",
           "c_reference_img_s", "ratio_a_b", "ratio_a_serial_b", "ratio_a_c", "c_data_img_s", "make_images_s",
           "paper_run_hours", "paper_run_hours_reference")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_toy_cpu_run_produces_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    r = bt.main(["--device", "cpu", "--num-images", "12", "--image-size", "32", "--batch-size", "4", "--steps", "2",
                 "--warmup", "1", "--workers", "0", "--threads", "1", "--model-name", "resnet18",
                 "--image-dir", str(tmp_path / "imgs"), "--json", str(out)])
    for key in FIGURES:
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, f"{key} = {r[key]!r}"
    assert r["a_peak_gib"] is None and r["pipeline"] == "cpu"
    assert json.loads(out.read_text()) == r
    assert len(list((tmp_path / "imgs").glob("*.jpg"))) == 12
    printed = capsys.readouterr().out
    assert "(a)/(b)" in printed and "(a)/(c)" in printed


def test_synthetic_images_are_natural_looking_jpegs(tmp_path):
    from PIL import Image
    import numpy as np

    bt.make_image(1, str(tmp_path / "x.jpg"))
    img = Image.open(tmp_path / "x.jpg")
    assert img.format == "JPEG" and img.size == bt.COCO_SIZES[1]
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    assert arr.std() > 20, "flat image"
    assert np.abs(np.diff(arr, axis=1)).mean() < 20, "pure noise, not smooth content"


def test_bad_flags_are_rejected():
    with pytest.raises(SystemExit):
        bt.parse_args(["--steps", "0"])
    with pytest.raises(SystemExit):
        bt.parse_args(["--model-name", "not_a_model_xyz"])


def test_timed_loader_counts_batches_after_the_first_round_only():
    import time
    import torch

    batches = [(None, None, torch.arange(4), 0)] * 6

    def consume(loader):
        for _ in loader:
            time.sleep(0.01)

    timed = bt.TimedLoader(batches, skip=2, device=torch.device("cpu"))
    assert len(timed) == 6
    consume(timed)
    # batches 0..3 (16 images) are timed over their 4 consumer sleeps: at most 16 / 0.04 = 400 img/s
    assert 50 < timed.rate <= 400
