import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# ../shared/data beside the checkout holds the real label lists (never copied into the project).
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def toy_coco(tmp_path_factory) -> Path:
    """A tiny toy COCO (48 train + 24 val images, 40 px, seed 0) in the real layout, made once per session."""
    from src.tools.make_toy_coco import make_toy_coco

    return make_toy_coco(tmp_path_factory.mktemp("toy_coco"), seed=0, train=48, val=24, image_size=40,
                         workers=1, verbose=False)
