"""benchmarks/official_style_baseline.py: the official recipe's pipeline and step, timed at toy size on the CPU."""
import json

import pytest
import torch
from torch import nn

from benchmarks import official_style_baseline as osb
from benchmarks.bench_throughput import make_images


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    make_images(folder, 8, 1, scale=0.1)
    return folder


def test_state_dict_ema_moves_every_float_entry_by_one_minus_decay():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = osb.StateDictEma(model, decay=0.75)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    after, live = ema.module.state_dict(), model.state_dict()
    for k in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert torch.allclose(after[k], 0.75 * before[k] + 0.25 * live[k])


def test_the_pipeline_gives_official_samples(image_dir):
    names = osb.image_names(image_dir, 4)
    labels = [(0,), (1, 79), (5,), (2, 3, 4)]
    images = osb.PilReferenceImages(image_dir, names, labels, 32)
    x, target, index = images[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert index == 1 and target.nonzero().flatten().tolist() == [1, 79]
    with pytest.raises(ValueError, match="4 images but 3 label rows"):
        osb.PilReferenceImages(image_dir, names, labels[:3], 32)


def test_random_labels_hold_one_to_four_distinct_classes():
    rows = osb.random_labels(200)
    assert {len(r) for r in rows} == {1, 2, 3, 4}
    assert all(len(set(r)) == len(r) and all(0 <= c < osb.NUM_CLASSES for c in r) for r in rows)
    assert osb.random_labels(5) == osb.random_labels(5)  # seeded


def test_main_writes_both_rates_and_the_settings(image_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    r = osb.main(["--image-dir", str(image_dir), "--num-images", "8", "--device", "cpu", "--image-size", "32",
                  "--batch-size", "4", "--workers", "0", "--steps", "1", "--warmup", "1", "--model-name", "resnet10t",
                  "--json", str(out)])
    assert r["loader_official_img_s"] > 0 and r["model_official_img_s"] > 0
    assert "model_official_peak_gib" not in r  # CUDA only
    assert json.loads(out.read_text()) == r
    assert (r["model"], r["image_size"], r["batch_size"], r["num_images"]) == ("resnet10t", 32, 4, 8)
    assert "official pipeline" in capsys.readouterr().out


def test_too_few_images_and_bad_flags_are_one_line_errors(image_dir, tmp_path):
    with pytest.raises(SystemExit) as e:
        osb.main(["--image-dir", str(image_dir), "--num-images", "9", "--device", "cpu"])
    assert e.value.code == 2 and "8 JPEGs, --num-images asks for 9" in str(e.value)
    for bad in (["--image-dir", str(tmp_path / "missing")], ["--image-dir", str(image_dir), "--steps", "0"],
                ["--image-dir", str(image_dir), "--model-name", "no_such_net"]):
        with pytest.raises(SystemExit) as e:
            osb.parse_args(bad)
        assert e.value.code == 2
