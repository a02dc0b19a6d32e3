import json
import shutil
import sys
from pathlib import Path

import huggingface_hub
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    """The repository's dataset/ folder: the paper's label lists (see dataset/README.md)."""
    return ROOT / "dataset"


@pytest.fixture(scope="session")
def toy_coco(tmp_path_factory) -> Path:
    """A tiny toy COCO (48 train + 24 val images, 40 px, seed 0) in the real layout, made once per session."""
    from src.toy.generate import ToyCoco, make_toy_coco

    return make_toy_coco(tmp_path_factory.mktemp("toy_coco"), ToyCoco(seed=0, train=48, val=24, image_size=40),
                         workers=1, verbose=False)


# ----------------------------------------------------------------------------- a run folder, made up

def _write_run(path, loss, maps, missing=True, args=True, dataset="d/coco_train_0.4left.txt", ranking=False):
    path.mkdir(parents=True)
    rows = []
    for e, m in enumerate(maps):
        row = {"epoch": e, "train_loss": 1.0, "map": m, "map_ema": m - 1.0, "cf1": 50.0, "of1": 55.0}
        if missing:
            row.update(missing_precision=float("nan") if e == 0 else 60.0 + e, missing_recall=10.0 * e,
                       missing_count=100)
        if ranking:
            row.update(missing_auroc=70.0 + e, missing_topk_precision=float("nan") if e == 0 else 30.0 + e)
        rows.append(json.dumps(row))  # NaN is written as NaN, as train.py does
    (path / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    if args:
        (path / "args.json").write_text(json.dumps({"loss": loss, "dataset": dataset}))
    return path


@pytest.fixture
def write_run():
    """write_run(path, loss, maps, missing=True, args=True, dataset=..., ranking=False) -> a run folder as train.py
    writes it: metrics.jsonl (EMA = model - 1; missing-label and ranking columns on request) and args.json."""
    return _write_run


# ----------------------------------------------------------------------------- a strength study's export, made up

def _write_exported(root, strength, name, final_map, epochs=2, precision=60.0, recall=30.0):
    """An exported run folder as the study writes it: metrics rows for every epoch (mAP peaks at the end)."""
    run = root / strength / name
    run.mkdir(parents=True)
    rows = [{"epoch": e, "map": final_map - (epochs - 1 - e), "map_ema": final_map - 5.0, "seconds": 10.0,
             "missing_precision": precision, "missing_recall": recall} for e in range(epochs)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def _synthetic_study(root, epochs=2):
    """Two strengths; ASL/Hill/SPLC per seed chosen so that paired and unpaired spreads differ."""
    maps = {"S1": {"Asl": [50.0, 52.0, 54.0], "Hill": [51.0, 52.0, 56.0], "SPLC": [49.0, 51.0, 53.0],
                   "BCE": [40.0, 41.0, 42.0]},
            "S2": {"Asl": [60.0, 61.0, 62.0], "Hill": [62.0, 63.0, 64.0], "SPLC": [61.0, 61.0, 61.0],
                   "BCE": [55.0, 55.0, 55.0]}}
    ref = {"S1": [70.0, 71.0, 72.0], "S2": [80.0, 80.0, 80.0]}
    for strength, by_loss in maps.items():
        (root / strength).mkdir(parents=True)
        (root / strength / "strength.json").write_text(json.dumps({"name": strength, "epochs": epochs}))
        for seed in range(3):
            _write_exported(root, strength, f"full-BCE-s{seed}", ref[strength][seed], epochs)
            for loss, values in by_loss.items():
                _write_exported(root, strength, f"0.4left-{loss}-s{seed}", values[seed], epochs,
                               precision=50.0 + 10 * seed, recall=20.0)
    return root


@pytest.fixture
def write_exported():
    """write_exported(root, strength, name, final_map, epochs=2, precision=60.0, recall=30.0) -> the run folder."""
    return _write_exported


@pytest.fixture
def synthetic_study():
    """synthetic_study(root, epochs=2) -> root, an export of two strengths with known per-seed mAPs."""
    return _synthetic_study


@pytest.fixture
def nus_folder(toy_coco):
    """nus_folder(root, n_train, n_val) -> root, a NUS-WIDE-shaped folder made of toy COCO images: ROOT/images and
    ROOT/train.txt, ROOT/val.txt (the toy full-label lines, with NUS-WIDE's last class, 80, added to the first
    image so that the lists span the 81 classes)."""
    def make(root, n_train, n_val):
        (root / "images").mkdir()
        lines = (toy_coco / "coco_train_full.txt").read_text().splitlines()[:n_train + n_val]
        lines[0] += " 80"
        for line in lines:
            shutil.copy(toy_coco / "train2014" / line.split(",")[0], root / "images")
        (root / "train.txt").write_text("\n".join(lines[:n_train]) + "\n")
        (root / "val.txt").write_text("\n".join(lines[n_train:]) + "\n")
        return root
    return make


# ----------------------------------------------------------------------------- damaged checkpoints

def _flip_a_bit(path, at=8):
    """Flip one bit inside the first tensor's bytes of a torch zip file (a damaged disk or transfer): the file
    still unpickles, only the zip record's CRC-32 tells."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data/0"))
    data = bytearray(Path(path).read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)  # the local header's own
    data[info.header_offset + 30 + name_len + extra_len + at] ^= 0x40
    Path(path).write_bytes(bytes(data))


@pytest.fixture
def flip_a_bit():
    """flip_a_bit(path, at=8): flip a bit at byte ``at`` of the first tensor stored in a torch zip file."""
    return _flip_a_bit


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache under tmp_path, offline (constants patched: the env is read at import)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache
