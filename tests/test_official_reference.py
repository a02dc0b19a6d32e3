"""src/data/official_reference.py: its Cutout drawings equal src.data.augment's (the other ops are checked against
it in tests/test_augment.py), and the official transform gives [0, 1] images of the asked size."""
import random

import numpy as np
import torch
from PIL import Image

from src.data import augment as A
from src.data.official_reference import official_train_transform, pil_cutout, pil_op


def image(h=32, w=32, seed=6) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(x.permute(1, 2, 0).numpy())


def tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def test_cutouts_equal_the_tensor_ops():
    x = image()
    for cy, cx in [(0, 0), (16, 5), (31, 31), (3, 28)]:
        ours = A.Cutout(0.5).apply(x[None], A.CutoutDraw(torch.tensor([[cy, cx]]), torch.tensor([[10, 20, 30]])))[0]
        assert torch.equal(tensor(pil_cutout(pil(x), 0.5, center=(cy, cx), color=(10, 20, 30))), ours), (cy, cx)
        for size in (2, 9, 20):
            ref = tensor(pil_op(pil(x), "Cutout", size, center=(cy, cx)))
            assert torch.equal(A.apply_op(x, "Cutout", size, center=torch.tensor([[cy, cx]])), ref), (cy, cx, size)


def test_official_transform_output():
    random.seed(0)
    out = official_train_transform(24)(pil(image(40, 56)))
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
