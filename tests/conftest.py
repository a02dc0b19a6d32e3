import os
import sys
from pathlib import Path

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
    from src.toy.generate import make_toy_coco

    return make_toy_coco(tmp_path_factory.mktemp("toy_coco"), seed=0, train=48, val=24, image_size=40,
                         workers=1, verbose=False)
