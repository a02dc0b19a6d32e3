"""`make demo` shrunk: protocol L on batched heads over a tiny toy, its tables and figure, and the scripts' pass."""
import dataclasses
import hashlib
import json

import pytest
import timm
import torch

from src.experiments import demo, preregistered_plan
from src.experiments.linear_heads import Head

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tiny_demo(tmp_path, monkeypatch):
    """The demo on a 48/24-image toy at 32 px, a 4-epoch schedule stopped at epoch 2, batch 8, and a random
    backbone standing in for the shipped one (with its checksum file)."""
    torch.manual_seed(0)
    backbone = tmp_path / "backbone.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet10t").state_dict().items()
               if not k.startswith("fc.")}, str(backbone))
    sha = tmp_path / "backbone.sha256"
    sha.write_text(hashlib.sha256(backbone.read_bytes()).hexdigest() + "  backbone.safetensors\n")
    monkeypatch.setattr(demo, "BACKBONE", backbone)
    monkeypatch.setattr(demo, "BACKBONE_SHA256", sha)
    toy = {"train": 48, "val": 24, "image_size": 32}
    monkeypatch.setattr(demo, "TOY", toy)
    monkeypatch.setattr(preregistered_plan, "TOY", toy)
    monkeypatch.setattr(demo, "PROTOCOL", dataclasses.replace(demo.PROTOCOL, epochs=4, stop_epoch=2))
    monkeypatch.setattr(demo, "PIPELINE_EPOCHS", 1)
    monkeypatch.setattr(preregistered_plan, "BATCH", 8)
    return ["--data-root", str(tmp_path / "data"), "--out-dir", str(tmp_path / "runs"), "--pics",
            str(tmp_path / "pics")]


def test_the_demo_prints_its_findings_over_seeds_and_checks_the_scripts(tiny_demo, tmp_path, capsys):
    table = demo.main([*tiny_demo, "--seeds", "2"])
    out = capsys.readouterr().out
    for stage in ("== toy COCO", "== protocol L on 2 seeds", "== the scripts end to end"):
        assert stage in out
    assert out.count("   done in ") == 3 and "total " in out
    assert "validate.py" in out and "they agree" in out
    assert "| (a) loss − ASL | 0.4left | held-out pick |" in table
    assert "| (b) ASL drop − loss drop | singlelabel | last epoch |" in table
    assert "(n=2, " in table and "The premise" in table
    lines = [json.loads(x) for x in (tmp_path / "runs" / "linear_heads.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * 3 * 5 and {x["seed"] for x in lines} == {0, 1}
    assert all(len(x["rows"]) == 3 for x in lines)
    assert (tmp_path / "pics" / "demo_findings.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "runs" / demo.PIPELINE.name / "best.ckpt").is_file()


def test_a_changed_backbone_is_refused_naming_the_file(tiny_demo, capsys):
    demo.BACKBONE.write_bytes(demo.BACKBONE.read_bytes() + b"x")
    with pytest.raises(SystemExit, match="checksum"):
        demo.main([*tiny_demo, "--no-pipeline"])


def _rows(test_map: float, held: float) -> list[dict]:
    row = {"map": held, "map_ema": held - 1, "map_full": held, "map_ema_full": held - 1, "test_map": test_map,
           "test_map_ema": 0.0, "missing_precision": 80.0, "missing_recall": 10.0, "missing_auroc": 70.0}
    return [{**row, "epoch": e} for e in range(demo.PROTOCOL.stop_epoch + 1)]


def test_findings_pair_by_seed_and_count_the_seeds_above_zero():
    """Hill beats ASL by 1 and 3 on two seeds of 0.4left: +2.00 ± 1.41 (n=2, 2 > 0)."""
    runs = []
    for seed, gain in ((0, 1.0), (1, 3.0)):
        for setting in demo.SETTINGS:
            for loss in demo.PROTOCOL.losses:
                base = 40.0 if setting == "full" else 30.0
                runs.append((Head(loss, setting, seed), _rows(base + (gain if loss == "Hill" and setting == "0.4left"
                                                                      else 0.0), 50.0)))
    table = demo.findings(runs)
    assert "| (a) loss − ASL | 0.4left | held-out pick | +2.00 ± 1.41 (n=2, 2 > 0) | +0.00 ± 0.00 (n=2, 0 > 0) |" \
        in table
    assert "| Hill | 0.4left | 80.0 ± 0.0 / 80.0 ± 0.0 | 10.0 ± 0.0 / 10.0 ± 0.0 | 70.0 ± 0.0 / 70.0 ± 0.0 |" in table
