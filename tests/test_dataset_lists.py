"""dataset/ ships the paper's label lists byte for byte: the sha256 manifest, and the keep rule per image."""
import hashlib
from pathlib import Path

import pytest

from src.data.missing_labels import PAPER_SCHEMES

DATASET = Path(__file__).resolve().parents[1] / "dataset"
COCO_LISTS = ["coco_train_full.txt", "coco_train_0.75left.txt", "coco_train_0.4left.txt",
              "coco_train_singlelabel.txt"]
# The official README's dataset table: images and labels per list.
PAPER_TABLE = {"full": (82081, 241035), "0.75left": (82081, 181422), "0.4left": (82081, 96251),
               "singlelabel": (82081, 82081)}


def _manifest() -> dict[str, str]:
    rows = [line.split() for line in (DATASET / "SHA256SUMS").read_text().splitlines() if line.strip()]
    assert all(len(r) == 2 for r in rows)
    return {name.lstrip("*"): digest for digest, name in rows}


def _parse(path: Path) -> list[tuple[str, list[int]]]:
    """name, labels per line (the format is checked in full by tests/test_labels.py)."""
    out = []
    for line in path.read_text().splitlines():
        name, _, labels = line.partition(",")
        out.append((name, [int(i) for i in labels.split()]))
    return out


def test_every_list_matches_the_manifest():
    manifest = _manifest()
    assert set(manifest) == set(COCO_LISTS) | {"nus_val.txt"}
    assert {p.name for p in DATASET.glob("*.txt")} == set(manifest)  # nothing unlisted
    for name, digest in manifest.items():
        assert hashlib.sha256((DATASET / name).read_bytes()).hexdigest() == digest, name


@pytest.fixture(scope="module")
def coco_lists():
    return {name.removeprefix("coco_train_").removesuffix(".txt"): _parse(DATASET / name) for name in COCO_LISTS}


def test_counts_are_the_papers(coco_lists):
    assert {k: (len(v), sum(len(labels) for _, labels in v)) for k, v in coco_lists.items()} == PAPER_TABLE


def test_keep_rule_per_image(coco_lists):
    full = coco_lists["full"]
    for key, keep in PAPER_SCHEMES.items():
        part = coco_lists[key]
        assert [name for name, _ in part] == [name for name, _ in full], key  # same images, same order
        for (name, kept), (_, labels) in zip(part, full):
            assert set(kept) <= set(labels) and len(set(kept)) == len(kept), (key, name)
            assert len(kept) == min(keep(len(labels)), len(labels)), (key, name)


def test_nus_val_list():
    rows = _parse(DATASET / "nus_val.txt")
    assert len(rows) == 50720 and len({name for name, _ in rows}) == 50720
    assert all(labels and all(0 <= i < 81 for i in labels) for _, labels in rows)
