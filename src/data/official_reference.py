"""The official training augmentation written with PIL, as a reference for ``src.data.augment``.

The official train.py (xinyu1205/robust-loss-mlml) augments with ``CutoutPIL(0.5)`` (from ASL) and
``randaugment.RandAugment()`` (PyPI ``randaugment`` 1.0.2, which no longer imports on numpy >= 1.24). This
module writes their PIL calls out again from the facts listed in ``src/data/augment.py``'s docstring (nothing
is copied from those packages): tests/test_augment.py checks ``src.data.augment``'s tensor ops against
``pil_op``, and ``benchmarks.bench_throughput`` times ``official_train_transform`` as the official-style
pipeline. Random draws use python's ``random``, as the packages do.
"""
from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torchvision import transforms as T

from src.data.augment import OPS, magnitude_value

__all__ = ["FILL", "CUTOUT_OP_FILL", "pil_cutout", "pil_op", "pil_randaugment", "official_train_transform"]

FILL = (128, 128, 128)  # what the geometric ops show where the source lies outside the image
CUTOUT_OP_FILL = (125, 122, 113)  # RandAugment's own Cutout op
_ENHANCERS = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast, "Sharpness": ImageEnhance.Sharpness,
              "Brightness": ImageEnhance.Brightness}


def pil_cutout(img: Image.Image, factor: float = 0.5, center: tuple[int, int] | None = None,
               color: tuple[int, int, int] | None = None) -> Image.Image:
    """CutoutPIL: one box of side int(factor * size + 0.5), both ends inclusive, clipped, at ``center`` (y, x)
    (default: uniform over the pixels) in ``color`` (default: each channel uniform in 0..255). Draws in place."""
    w, h = img.size
    ch, cw = int(factor * h + 0.5), int(factor * w + 0.5)
    yc, xc = center if center is not None else (random.randrange(h), random.randrange(w))
    color = color if color is not None else tuple(random.randint(0, 255) for _ in range(3))
    box = (max(xc - cw // 2, 0), max(yc - ch // 2, 0), min(xc + cw // 2, w), min(yc + ch // 2, h))
    ImageDraw.Draw(img).rectangle(box, fill=color)
    return img


def _affine(img: Image.Image, coeffs: tuple, resample=Image.NEAREST) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, coeffs, resample, fillcolor=FILL)


def _cutout_op(img: Image.Image, size: int, center: tuple[int, int] | None) -> Image.Image:
    """RandAugment's Cutout: the box [c - size//2, c + size//2) per axis, clipped, filled with CUTOUT_OP_FILL."""
    w, h = img.size
    yc, xc = center if center is not None else (random.randrange(h), random.randrange(w))
    arr = np.array(img)
    arr[max(yc - size // 2, 0):min(yc + size // 2, h), max(xc - size // 2, 0):min(xc + size // 2, w)] = CUTOUT_OP_FILL
    return Image.fromarray(arr)


def pil_op(img: Image.Image, op: str, v, sign: float = 1.0, center: tuple[int, int] | None = None) -> Image.Image:
    """One RandAugment op with value ``v`` (``src.data.augment.magnitude_value``) and ``sign`` (+-1, for the ops
    that take one), as the ``randaugment`` package applies it. ``center`` (y, x): the Cutout op's box centre."""
    w, h = img.size
    if op == "Cutout":
        return _cutout_op(img, int(v), center)
    if op in _ENHANCERS:
        return _ENHANCERS[op](img).enhance(1 + v * sign)
    if op == "ShearX":
        return _affine(img, (1, v * sign, 0, 0, 1, 0), Image.BICUBIC)
    if op == "ShearY":
        return _affine(img, (1, 0, 0, v * sign, 1, 0), Image.BICUBIC)
    if op == "TranslateX":
        return _affine(img, (1, 0, v * w * sign, 0, 1, 0))
    if op == "TranslateY":
        return _affine(img, (1, 0, 0, 0, 1, v * h * sign))
    if op == "Rotate":  # unsigned; the fill goes in through an alpha mask
        rot = img.convert("RGBA").rotate(v)
        return Image.composite(rot, Image.new("RGBA", rot.size, FILL + (128,)), rot).convert(img.mode)
    if op == "Posterize":
        return ImageOps.posterize(img, int(v))
    if op == "Solarize":
        return ImageOps.solarize(img, v)
    simple = {"AutoContrast": ImageOps.autocontrast, "Equalize": ImageOps.equalize, "Invert": ImageOps.invert}
    if op in simple:
        return simple[op](img)
    raise ValueError(f"unknown op {op!r}")


def pil_randaugment(img: Image.Image) -> Image.Image:
    """Two uniform draws from the (op, magnitude 1..9) list, each applied with probability 0.5, sign +-1."""
    for _ in range(2):
        op, m = random.choice(OPS), random.randint(1, 9)
        if random.random() < 0.5:
            img = pil_op(img, op, magnitude_value(op, m), random.choice((-1.0, 1.0)))
    return img


def official_train_transform(image_size: int):
    """The official training transform on a PIL RGB image: Resize((S, S)), CutoutPIL(0.5), RandAugment, ToTensor."""
    return T.Compose([T.Resize((image_size, image_size)), pil_cutout, pil_randaugment, T.ToTensor()])
