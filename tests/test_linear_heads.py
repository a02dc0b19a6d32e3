"""Batched linear heads (src/experiments/linear_heads.py) against train.py --freeze-backbone, run by run."""
import json

import numpy as np
import pytest
import timm
import torch

from src.experiments import linear_heads as LH
from src.experiments.experiments import coco_parser
from src.data.builders import coco_datasets
from src.metrics import mAP
from src.trainer import run_training

RECIPE = ["--model-name", "resnet10t", "--image-size", "32", "-b", "8", "-j", "0", "--epochs", "5",
          "--stop-epoch", "2", "--lr", "0.01", "--ema-decay", "0.5", "--device", "cpu",
          "--freeze-backbone", "--val-split", "0.25", "--oracle-threshold", "0.6", "--print-freq", "1000"]
COMPARED = ("map", "map_ema", "map_full", "map_ema_full", "train_loss", "first_step_loss", "lr", "missing_precision", "missing_recall",
            "missing_auroc", "missing_topk_precision")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """A resnet10t weight file (timm's layout, random weights drawn once): the backbone every run shares."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("backbone") / "resnet10t.pth"
    torch.save(timm.create_model("resnet10t").state_dict(), path)
    return ["--pretrained", str(path)]


def _lists(toy):
    return {s: toy / f"coco_train_{s}.txt" for s in ("full", "0.4left")}


def _train_py(toy, tmp_path, head: LH.Head, backbone) -> list[dict]:
    out = tmp_path / head.name
    argv = ["--data", str(toy), "--dataset", str(_lists(toy)[head.setting]), "--loss", head.loss, "--seed",
            str(head.seed), "--output", str(out), *RECIPE, *backbone]
    if head.setting != "full":
        argv += ["--oracle-list", str(_lists(toy)["full"])]
    parser = coco_parser()
    run_training(parser, parser.parse_args(argv), coco_datasets)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "test_metrics.json").read_text())


@pytest.fixture(scope="module")
def batched(toy_coco, backbone):
    probe = LH.probe_features(["--data", str(toy_coco), "--dataset", str(_lists(toy_coco)["full"]), *RECIPE,
                               *backbone], _lists(toy_coco))
    heads = [LH.Head(loss, setting, seed) for seed in (0, 1) for loss, setting in
             (("SPLC", "0.4left"), ("BCE", "full"), ("Hill", "0.4left"))]
    return probe, heads, LH.train_heads(probe, heads, log=lambda *_: None)


@pytest.mark.parametrize("which", [LH.Head("SPLC", "0.4left", 1), LH.Head("BCE", "full", 0)])
def test_a_batched_head_follows_train_py_with_the_same_seed(batched, toy_coco, tmp_path, backbone, which):
    """Every epoch's held-out mAP (model and EMA), loss, lr and missing-label statistics of one head of a
    six-head grid equal those of train.py --freeze-backbone with that head's loss, list and seed (1e-4), and
    so does the last epoch's test mAP; heads of other seeds and losses trained beside it change nothing."""
    probe, heads, rows = batched
    mine = rows[heads.index(which)]
    theirs, test = _train_py(toy_coco, tmp_path, which, backbone)
    assert len(mine) == len(theirs) == 3
    for a, b in zip(mine, theirs):
        assert a["selected"] == b["selected"]
        for key in COMPARED:
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4, nan_ok=True), (a["epoch"], key)
            else:
                assert key not in a or which.setting == "full"
    assert ("missing_auroc" in mine[-1]) == (which.setting != "full")
    assert mine[-1]["test_map"] == pytest.approx(test["last_epoch"]["map"], abs=1e-4)
    assert mine[-1]["test_map_ema"] == pytest.approx(test["last_epoch"]["map_ema"], abs=1e-4)


def test_heads_of_one_seed_differ_by_loss_and_seeds_by_initialisation(batched):
    probe, heads, rows = batched
    w0, _ = probe.init(0)
    w1, _ = probe.init(1)
    assert not torch.equal(w0, w1) and torch.equal(w0, probe.init(0)[0])
    losses = {h: [r["train_loss"] for r in rows[i]] for i, h in enumerate(heads)}
    assert losses[LH.Head("SPLC", "0.4left", 0)] != losses[LH.Head("Hill", "0.4left", 0)]
    assert losses[LH.Head("SPLC", "0.4left", 0)] != losses[LH.Head("SPLC", "0.4left", 1)]


def test_full_label_held_out_map_uses_the_full_labels(batched):
    """On the full list the two held-out readings agree; on 0.4left they differ (other targets)."""
    probe, heads, rows = batched
    full = rows[heads.index(LH.Head("BCE", "full", 0))]
    part = rows[heads.index(LH.Head("SPLC", "0.4left", 0))]
    assert all(r["map"] == r["map_full"] for r in full)
    assert any(r["map"] != r["map_full"] for r in part)


def test_head_maps_equals_map_per_head():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(3, 40, 6, generator=g)
    targets = (torch.rand(40, 6, generator=g) > 0.6).float()
    expected = [mAP(targets, s) for s in scores]
    assert np.allclose(LH.head_maps(targets, scores), expected, atol=1e-9)
    per_head = (torch.rand(3, 40, 6, generator=g) > 0.5).float()
    assert np.allclose(LH.head_maps(per_head, scores), [mAP(t, s) for t, s in zip(per_head, scores)], atol=1e-9)


def test_the_heads_need_one_backbone_for_every_seed(toy_coco):
    with pytest.raises(ValueError, match="--pretrained"):
        LH.probe_features(["--data", str(toy_coco), "--dataset", str(_lists(toy_coco)["full"]), *RECIPE,
                           "--pretrained", "none"], _lists(toy_coco))


def test_only_a_full_seed_major_grid_of_element_wise_losses_is_batched():
    with pytest.raises(ValueError, match="full grid"):
        LH._grid([LH.Head("BCE", "full", 0), LH.Head("Hill", "full", 1)])
    with pytest.raises(ValueError, match="not element-wise"):
        LH._grid([LH.Head("LL-R", "full", 0)])


def test_an_epoch_ending_in_a_one_image_batch_drops_it_in_train_py_and_in_the_heads(toy_coco, tmp_path, backbone):
    """36 training images at batch 7 end each epoch in one image, which train.py's loader leaves out: train.py
    --freeze-backbone runs its whole schedule on 5 steps an epoch, and a batched head follows it."""
    recipe = RECIPE[:]
    recipe[recipe.index("-b") + 1] = "7"
    recipe[recipe.index("--stop-epoch") + 1] = "4"  # the schedule's last epoch: a sixth step would overrun it
    head = LH.Head("BCE", "full", 0)
    out = tmp_path / "train_py"
    argv = ["--data", str(toy_coco), "--dataset", str(_lists(toy_coco)["full"]), "--loss", "BCE", "--seed", "0",
            "--output", str(out), *recipe, *backbone]
    parser = coco_parser()
    run_training(parser, parser.parse_args(argv), coco_datasets)
    theirs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    probe = LH.probe_features(["--data", str(toy_coco), "--dataset", str(_lists(toy_coco)["full"]), *recipe,
                               *backbone], _lists(toy_coco))
    assert len(probe.train_idx) % 7 == 1 and probe.steps == len(probe.train_idx) // 7
    mine = LH.train_heads(probe, [head], log=lambda *_: None)[0]
    assert len(mine) == len(theirs) == 5
    for a, b in zip(mine, theirs):
        for key in ("map", "train_loss", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), (a["epoch"], key)
