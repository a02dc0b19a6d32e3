"""The official training augmentation on uint8 tensors: Resize -> Cutout(0.5) -> RandAugment -> [0, 1] floats.

Two forms of one policy:
  * per sample (CPU DataLoader workers): ``train_transform(S)`` = Resize((S, S)), ``Cutout(0.5)``,
    ``RandAugmentPolicy()``, uint8 -> float32 / 255;
  * batched (uint8 (B, 3, S, S) on any device, e.g. after GPU jpeg decode): ``BatchAugment(S)``, then
    ``batch_to_float``.
Both draw their random numbers with ``sample_cutout`` / ``sample_policy`` and apply every op with ``apply_op``,
so they share one distribution and one implementation of each op. No mean/std normalisation anywhere: the
paper's models take inputs in [0, 1].

Facts used (read from the sources; nothing is imported from them):
  * official train.py (xinyu1205/robust-loss-mlml): train = Resize((S, S)), CutoutPIL(cutout_factor=0.5),
    randaugment.RandAugment(), ToTensor(); val = Resize((S, S)), ToTensor().
  * CutoutPIL (the official src/helper_functions/helper_functions.py, taken from ASL): side
    c = int(0.5 * S + 0.5); centre (yc, xc) uniform over the pixels; PIL rectangle
    [xc - c//2, xc + c//2] x [yc - c//2, yc + c//2] with both ends inclusive, clipped to the image; one fill colour
    (r, g, b), each uniform in 0..255.
  * RandAugment of PyPI ``randaugment`` 1.0.2 (randaugment/randaugment.py), reimplemented because that package
    uses ``np.int`` and breaks on numpy >= 1.24: a list of (0.5, op, m) for the 15 ops below and m = 1..9; one
    ordered pair of list entries is drawn uniformly (so the op pair is uniform over 15 x 15 and the two
    magnitudes are independent and uniform over 1..9); each of the two is applied with probability 0.5, first then
    second. Values are entry m of a 10-point linspace (the ``ranges`` table):

    op            value v for m = 1..9              applied as (PIL calls)                                    sign
    Invert        -                                 255 - x                                                    -
    Cutout        round(20m/9) = 2,4,7,9,11,13,16,18,20 pixels (absolute, not relative to the image): box
                                                    [c - v//2, c + v//2) per axis, uniform centre c, clipped,
                                                    fill (125, 122, 113)                                       -
    Sharpness     0.9m/9 = 0.1m                     blend(SMOOTH-filtered x, x, 1 + sv)                       +-
    AutoContrast  -                                 per channel LUT int((i - lo) * 255 / (hi - lo))             -
    Posterize     round(8 - 4m/9) = 8,7,7,6,6,5,5,4,4 bits   x & ~(2^(8 - v) - 1)                              -
    ShearX        0.3m/9                            affine (1, sv, 0, 0, 1, 0), BICUBIC, fill 128             +-
    TranslateX    (150/331)m/9 x width              affine (1, 0, sv W, 0, 1, 0), NEAREST, fill 128           +-
    TranslateY    (150/331)m/9 x height             affine (1, 0, 0, 0, 1, sv H), NEAREST, fill 128           +-
    ShearY        0.3m/9                            affine (1, 0, 0, sv, 1, 0), BICUBIC, fill 128             +-
    Rotate        30m/9 degrees                     rotate(v): counter-clockwise about the centre, NEAREST,   none
                                                    fill 128 (the package's signed variant is commented out)
    Equalize      -                                 ImageOps.equalize, per channel                             -
    Contrast      0.9m/9 = 0.1m                     blend(grey image of int(mean L + 0.5), x, 1 + sv)         +-
    Color         0.9m/9 = 0.1m                     blend(L as RGB, x, 1 + sv)                                +-
    Solarize      256 - 256m/9                      x >= v -> 255 - x                                          -
    Brightness    0.9m/9 = 0.1m                     blend(black, x, 1 + sv)                                   +-
  (s = +-1 with probability 1/2 each, drawn per application.)

  PIL conventions reproduced: an affine tuple maps output to input in continuous coordinates (pixel centres at
  +0.5); a sample outside [0, W) x [0, H) takes the fill; nearest = floor; L = (19595 R + 38470 G + 7471 B
  + 2^15) >> 16; SMOOTH = [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded, border pixels kept; blend(a, b, f) =
  trunc(clip(a + f (b - a), 0, 255)).

Deviations from the PIL package (measured against Pillow 13 on random images, see tests/test_augment.py):
  * None in the ops' formulas: PIL's affine BICUBIC (Keys cubic, a = -1, not grid_sample's -0.75) is written out
    for the shears, its NEAREST is floor(). What remains is arithmetic: the shears' cubic weights are float32
    (PIL: double), and PIL rotates in 16.16 fixed point (here: float64 coordinates): on random images up to ~0.02%
    of shear pixels differ by 1 level and ~0.1-0.3% of rotated pixels read a neighbouring pixel. Every other op
    matches Pillow 13 bit for bit.
  * Resize: torchvision's antialiased bilinear on uint8 instead of PIL's (same filter, +-1 level).
  * Random numbers come from torch (optionally a ``torch.Generator``), not python ``random`` / ``np.random``:
    the same distributions, not the same streams.
  * On non-square images the official CutoutPIL mixes up width and height; here rows use H and columns W
    (identical after Resize((S, S))).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

OPS: tuple[str, ...] = (
    "Invert", "Cutout", "Sharpness", "AutoContrast", "Posterize",
    "ShearX", "TranslateX", "TranslateY", "ShearY", "Rotate",
    "Equalize", "Contrast", "Color", "Solarize", "Brightness",
)
MAGNITUDES = range(1, 10)
APPLY_PROB = 0.5
SIGNED_OPS = frozenset({"Sharpness", "ShearX", "TranslateX", "TranslateY", "ShearY", "Contrast", "Color", "Brightness"})
NEAREST_OPS = ("TranslateX", "TranslateY", "Rotate")  # one batched gather per slot; shears use shear_cubic
GEOMETRIC_FILL = 128
RA_CUTOUT_FILL = (125, 122, 113)


def _linspace_entry(start: float, stop: float, m: int) -> float:
    """Entry m of numpy.linspace(start, stop, 10)."""
    return stop if m == 9 else start + m * ((stop - start) / 9)


def magnitude_value(op: str, m: int) -> float | int:
    """The package's ``ranges[op][m]`` (see the module table); an int for Posterize (bits) and Cutout (pixels)."""
    if op not in OPS:
        raise ValueError(f"unknown RandAugment op {op!r}; expected one of {OPS}")
    if m not in MAGNITUDES:
        raise ValueError(f"magnitude {m!r} for {op} is outside {MAGNITUDES.start}..{MAGNITUDES.stop - 1}")
    if op in ("ShearX", "ShearY"):
        return _linspace_entry(0.0, 0.3, m)
    if op in ("TranslateX", "TranslateY"):
        return _linspace_entry(0.0, 150 / 331, m)
    if op == "Rotate":
        return _linspace_entry(0.0, 30.0, m)
    if op in ("Color", "Contrast", "Sharpness", "Brightness"):
        return _linspace_entry(0.0, 0.9, m)
    if op == "Posterize":
        return int(round(_linspace_entry(8.0, 4.0, m)))
    if op == "Solarize":
        return _linspace_entry(256.0, 0.0, m)
    if op == "Cutout":
        return int(round(_linspace_entry(0.0, 20.0, m)))
    return 0  # Invert, AutoContrast, Equalize take no magnitude


def value_table() -> torch.Tensor:
    """(15, 10) float64: ``table[OPS.index(op), m] = magnitude_value(op, m)``; column 0 is unused."""
    rows = [[0.0] + [float(magnitude_value(op, m)) for m in MAGNITUDES] for op in OPS]
    return torch.tensor(rows, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------- checks, helpers

def _check_image(img: torch.Tensor, ndim: tuple[int, ...], where: str) -> None:
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{where}: expected a uint8 image tensor, got {type(img).__name__}")
    if img.dtype != torch.uint8 or img.ndim not in ndim or img.shape[-3] != 3:
        raise ValueError(f"{where}: expected a uint8 RGB tensor with {' or '.join(map(str, ndim))} dims "
                         f"(channels 3 at dim -3), got dtype {img.dtype} shape {tuple(img.shape)}")


def _per_sample(value: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """A python number or a (B,) / 0-d tensor -> float64 (B,) on ``device`` (a fill, never a host copy).

    float64 so that enhance factors 1 +- v round to float32 exactly as PIL's (double -> float) do.
    """
    if isinstance(value, torch.Tensor):
        value = value.to(device=device, dtype=torch.float64)
        if value.ndim == 0:
            return value.expand(batch)
        if value.shape != (batch,):
            raise ValueError(f"per-sample parameter has shape {tuple(value.shape)}, expected ({batch},)")
        return value
    return torch.full((batch,), float(value), device=device, dtype=torch.float64)


def to_device_nonblocking(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A (small) CPU tensor -> ``device`` without blocking the host: on CUDA through pinned memory with
    ``non_blocking=True`` (a plain ``.to("cuda")`` from pageable memory waits for the stream to drain)."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def _col(t: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) for broadcasting over (B, C, H, W)."""
    return t.view(-1, 1, 1, 1)


def _blend(degenerate: torch.Tensor, img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL Image.blend(degenerate, img, f) = trunc(clip(d + f (x - d), 0, 255)); factor (B,)."""
    d = degenerate.float()
    return (d + _col(factor) * (img.float() - d)).clamp_(0, 255).to(torch.uint8)


def _luma(img: torch.Tensor) -> torch.Tensor:
    """PIL convert('L'): (19595 R + 38470 G + 7471 B + 2^15) >> 16, as int32 (B, 1, H, W)."""
    r, g, b = img.int().unbind(dim=-3)
    return ((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16).unsqueeze(-3)


def _smooth(img: torch.Tensor) -> torch.Tensor:
    """PIL ImageFilter.SMOOTH: 3x3 [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded; the 1-pixel border is kept.

    Computed as (3x3 box sum + 4 x) / 13 with exact integer sums (separable; on the CPU ~7x faster per image than a
    depthwise conv, which the fused form uses, tested equal).
    """
    x = img.float()
    rows = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    out = x.clone()
    out[..., 1:-1, 1:-1] = (box + 4 * x[..., 1:-1, 1:-1]).div_(13).round_()
    return out


def grey_level(luma: torch.Tensor) -> torch.Tensor:
    """Contrast's degenerate level from the L image (B, 1, H, W) or (B, 1, N): PIL's int(mean + 0.5), int64
    (B, 1, 1[, 1]). Computed as (2 sum + n) // 2n on exact integers: PIL's float64 mean + 0.5 is never within
    rounding error of an integer it is not (its distance from one is 0 or at least 1 / 2n)."""
    dims = tuple(range(1, luma.ndim))
    n = math.prod(luma.shape[1:])
    return luma.sum(dim=dims, keepdim=True, dtype=torch.int64).mul_(2).add_(n).div_(2 * n, rounding_mode="floor")


def autocontrast_lut(lo: torch.Tensor, hi: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """PIL ImageOps.autocontrast's LUT (cutoff 0) in float64: int(i * s - lo * s), s = 255 / (hi - lo); the
    identity where hi == lo. ``lo``, ``hi``: float64 (..., 1) channel extremes; ``levels``: float64 0..255."""
    scale = torch.div(255.0, (hi - lo).clamp(min=1))  # one rounding, as PIL; `255.0 / t` is 255 * (1 / t): two
    lut = (levels * scale - lo * scale).trunc().clamp(0, 255)
    return torch.where(hi > lo, lut, levels)


def _autocontrast(img: torch.Tensor) -> torch.Tensor:
    """PIL ImageOps.autocontrast (cutoff 0), per channel."""
    flat = img.flatten(-2).long()
    lo = flat.amin(dim=-1, keepdim=True).double()
    hi = flat.amax(dim=-1, keepdim=True).double()
    levels = torch.arange(256, device=img.device, dtype=torch.float64)
    lut = autocontrast_lut(lo, hi, levels).to(torch.uint8)
    return lut.gather(-1, flat).view_as(img)


# ------------------------------------------------------------------------------------------------ geometric ops

def affine_matrix(op: str, value: torch.Tensor, sign: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 6) PIL affine tuples (a, b, c, d, e, f) for the nearest-neighbour ops (NEAREST_OPS).

    Input (u, v) = (a x + b y + c, d x + e y + f) at output (x, y), continuous coordinates.
    """
    one, zero = torch.ones_like(value), torch.zeros_like(value)
    if op == "TranslateX":
        rows = (one, zero, sign * value * width, zero, one, zero)
    elif op == "TranslateY":
        rows = (one, zero, zero, zero, one, sign * value * height)
    elif op == "Rotate":  # PIL Image.rotate(value): counter-clockwise about the centre; the package draws no sign
        theta = torch.deg2rad(-value)
        a, b = torch.cos(theta), torch.sin(theta)
        d, e = -b, a
        cx, cy = width / 2.0, height / 2.0
        rows = (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy)
    else:
        raise ValueError(f"{op!r} is not one of {NEAREST_OPS}")
    return torch.stack(rows, dim=1)


def identity_matrix(batch: int, device: torch.device) -> torch.Tensor:
    """(B, 6) identity affine tuples."""
    m = torch.zeros(batch, 6, device=device, dtype=torch.float64)
    m[:, 0] = 1.0
    m[:, 4] = 1.0
    return m


def warp_nearest(img: torch.Tensor, matrix: torch.Tensor, fill: int = GEOMETRIC_FILL) -> torch.Tensor:
    """PIL Image.transform(AFFINE, NEAREST) on uint8 (B, C, H, W) with per-sample (B, 6) matrices.

    Output pixel (x, y) reads input pixel (floor v, floor u), (u, v) = matrix applied to (x + 0.5, y + 0.5);
    outside [0, W) x [0, H) it takes ``fill``. An identity matrix copies the image exactly.
    """
    b, c, h, w = img.shape
    ys = (torch.arange(h, device=img.device, dtype=torch.float64) + 0.5).view(1, h, 1)
    xs = (torch.arange(w, device=img.device, dtype=torch.float64) + 0.5).view(1, 1, w)
    m = matrix.to(torch.float64).view(b, 6, 1, 1)
    u = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]
    v = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    inside = ((u >= 0) & (u < w) & (v >= 0) & (v < h)).unsqueeze(1)
    index = v.floor().long().clamp_(0, h - 1) * w + u.floor().long().clamp_(0, w - 1)
    out = img.reshape(b, c, h * w).gather(2, index.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)
    return torch.where(inside, out, torch.full_like(out, fill))


# keys_cubic's Horner coefficients (v2, p2, p3, p4) as integer combinations of the taps (v1, v2, v3, v4)
CUBIC_COEFFS = ((0, 1, 0, 0), (-1, 0, 1, 0), (2, -2, 1, -1), (-1, 1, -1, 1))


def keys_cubic(v1: torch.Tensor, v2: torch.Tensor, v3: torch.Tensor, v4: torch.Tensor, d: torch.Tensor
               ) -> torch.Tensor:
    """PIL's BICUBIC of 4 taps at fraction d past v2 (Keys a = -1, its Horner form); not clamped, not rounded."""
    p2, p3, p4 = v3 - v1, 2 * (v1 - v2) + v3 - v4, v2 - v1 + v4 - v3  # = CUBIC_COEFFS applied to the taps
    return horner(v2, p2, p3, p4, d)


def horner(v2: torch.Tensor, p2: torch.Tensor, p3: torch.Tensor, p4: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """v2 + d (p2 + d (p3 + d p4)), in this order (PIL's BICUBIC macro)."""
    return v2 + d * (p2 + d * (p3 + d * p4))


def shear_cubic(img: torch.Tensor, shear: torch.Tensor, axis: str, fill: int = GEOMETRIC_FILL) -> torch.Tensor:
    """PIL Image.transform(AFFINE, BICUBIC) for ShearX (1, s, 0, 0, 1, 0) or ShearY (1, 0, 0, s, 1, 0).

    A shear keeps the other coordinate on pixel centres, so PIL's 4x4 cubic reduces to 4 taps along ``axis``:
    output (x, y) samples u = x + 0.5 + s (y + 0.5) with PIL's cubic (Keys a = -1, Horner form, edge-clamped
    taps, truncated to uint8); u outside [0, W) takes ``fill``. ``shear`` is (B,).
    """
    if axis == "y":
        return shear_cubic(img.transpose(-1, -2), shear, "x", fill).transpose(-1, -2)
    if axis != "x":
        raise ValueError(f"shear axis {axis!r} is not 'x' or 'y'")
    b, c, h, w = img.shape
    ys = (torch.arange(h, device=img.device, dtype=torch.float64) + 0.5).view(1, h, 1)
    xs = (torch.arange(w, device=img.device, dtype=torch.float64) + 0.5).view(1, 1, w)
    u = xs + shear.to(torch.float64).view(b, 1, 1) * ys  # (B, H, W) source column, continuous
    inside = ((u >= 0) & (u < w)).unsqueeze(1)
    left = (u - 0.5).floor()
    d = (u - 0.5 - left).to(torch.float32).unsqueeze(1)
    left = left.long()

    def tap(k: int) -> torch.Tensor:
        index = (left + k).clamp_(0, w - 1).unsqueeze(1).expand(b, c, h, w)
        return img.gather(3, index).float()

    out = keys_cubic(tap(-1), tap(0), tap(1), tap(2), d).clamp_(0, 255).to(torch.uint8)
    return torch.where(inside, out, torch.full_like(out, fill))


# -------------------------------------------------------------------------------------------------- box filling

def fill_boxes(img: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor], cols: tuple[torch.Tensor, torch.Tensor],
               color: torch.Tensor) -> torch.Tensor:
    """Fill the half-open boxes [r0, r1) x [c0, c1) (each (B,) long) of uint8 (B, C, H, W) with colour (B, C)."""
    b, c, h, w = img.shape
    r = torch.arange(h, device=img.device).view(1, h, 1)
    k = torch.arange(w, device=img.device).view(1, 1, w)
    in_rows = (r >= rows[0].view(b, 1, 1)) & (r < rows[1].view(b, 1, 1))
    inside = in_rows & (k >= cols[0].view(b, 1, 1)) & (k < cols[1].view(b, 1, 1))
    return torch.where(inside.unsqueeze(1), color.to(torch.uint8).view(b, c, 1, 1), img)


def cutout_pil_boxes(center: torch.Tensor, height: int, width: int, factor: float
                     ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Official CutoutPIL box as half-open (rows, cols): [clip(c - s//2), clip(c + s//2) + 1), s = int(f*size+.5)."""
    half_h = int(factor * height + 0.5) // 2
    half_w = int(factor * width + 0.5) // 2
    cy, cx = center[:, 0], center[:, 1]
    rows = ((cy - half_h).clamp(0, height), (cy + half_h).clamp(0, height - 1) + 1)
    cols = ((cx - half_w).clamp(0, width), (cx + half_w).clamp(0, width - 1) + 1)
    return rows, cols


def _ra_cutout(img: torch.Tensor, size: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """randaugment's Cutout(size): box [c - size//2, c + size//2) per axis, clipped, filled (125, 122, 113)."""
    b, c, h, w = img.shape
    half = size.round().long() // 2
    cy, cx = center[:, 0], center[:, 1]
    rows = ((cy - half).clamp(min=0), (cy + half).clamp(max=h))
    cols = ((cx - half).clamp(min=0), (cx + half).clamp(max=w))
    color = torch.empty(b, c, dtype=torch.uint8, device=img.device)
    for i, v in enumerate(RA_CUTOUT_FILL):
        color[:, i] = v
    return fill_boxes(img, rows, cols, color)


# ----------------------------------------------------------------------------------------------- the op dispatch

def apply_op(img: torch.Tensor, op: str, magnitude_value: float | torch.Tensor, sign: float | torch.Tensor = 1.0,
             *, center: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply one RandAugment op to uint8 (C, H, W) or (B, C, H, W) on any device; the single implementation.

    ``magnitude_value`` is the op's value (``magnitude_value(op, m)``), ``sign`` is +-1 (used by SIGNED_OPS only);
    both are python numbers or per-sample (B,) tensors. ``center`` ((B, 2) long (row, col), Cutout only) is drawn
    uniformly with ``generator`` when None.
    """
    _check_image(img, (3, 4), f"apply_op({op!r})")
    if op not in OPS:
        raise ValueError(f"unknown RandAugment op {op!r}; expected one of {OPS}")
    single = img.ndim == 3
    x = img.unsqueeze(0) if single else img
    b, _, h, w = x.shape
    value = _per_sample(magnitude_value, b, x.device)
    sgn = _per_sample(sign, b, x.device)
    factor = (1.0 + sgn * value).float()  # enhance ops

    if op == "Invert":
        out = 255 - x
    elif op == "Posterize":
        shift = (8 - value.round().long()).clamp_(0, 8)
        mask = ((torch.full_like(shift, 255) >> shift) << shift).to(torch.uint8)
        out = x & _col(mask)
    elif op == "Solarize":
        threshold = value.ceil().clamp(0, 256).to(torch.int16)  # x >= v  <=>  x >= ceil(v) for integer x
        out = torch.where(x >= _col(threshold), 255 - x, x)
    elif op == "AutoContrast":
        out = _autocontrast(x)
    elif op == "Equalize":
        out = TF.equalize(x)
    elif op == "Brightness":
        out = _blend(torch.zeros_like(x), x, factor)
    elif op == "Color":
        out = _blend(_luma(x), x, factor)
    elif op == "Contrast":
        out = _blend(grey_level(_luma(x)), x, factor)
    elif op == "Sharpness":
        out = _blend(_smooth(x), x, factor)
    elif op == "Cutout":
        if center is None:
            center = sample_centers(b, h, w, x.device, generator)
        out = _ra_cutout(x, value, center.to(x.device))
    elif op in ("ShearX", "ShearY"):
        out = shear_cubic(x, sgn * value, "x" if op == "ShearX" else "y")
    else:
        out = warp_nearest(x, affine_matrix(op, value, sgn, h, w))
    return out.squeeze(0) if single else out


# -------------------------------------------------------------------------------------------------------- draws

def sample_centers(batch: int, height: int, width: int, device: torch.device | str = "cpu",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 2) long (row, col), each uniform over the pixels."""
    rows = torch.randint(0, height, (batch,), device=device, generator=generator)
    cols = torch.randint(0, width, (batch,), device=device, generator=generator)
    return torch.stack((rows, cols), dim=1)


@dataclass
class CutoutDraw:
    center: torch.Tensor  # (B, 2) long (row, col)
    color: torch.Tensor   # (B, 3) long in 0..255


@dataclass
class PolicyDraw:
    """Per sample and slot (first, second op): (B, 2) tensors; ``center`` is (B, 2, 2) for the Cutout op."""
    op: torch.Tensor         # long index into OPS, uniform over 0..14
    magnitude: torch.Tensor  # long, uniform over 1..9
    sign: torch.Tensor       # float32 +-1, each with prob 1/2
    applied: torch.Tensor    # bool, True with prob APPLY_PROB
    center: torch.Tensor     # long (row, col) of a RandAugment Cutout box


def sample_cutout(batch: int, height: int, width: int, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> CutoutDraw:
    """CutoutPIL's draws: a uniform centre pixel and a uniform colour in 0..255^3."""
    center = sample_centers(batch, height, width, device, generator)
    color = torch.randint(0, 256, (batch, 3), device=device, generator=generator)
    return CutoutDraw(center, color)


def sample_policy(batch: int, height: int, width: int, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> PolicyDraw:
    """RandAugment's draws, one call per quantity: ordered op pair, magnitudes, signs, coin flips, cutout centres."""
    op = torch.randint(0, len(OPS), (batch, 2), device=device, generator=generator)
    magnitude = torch.randint(MAGNITUDES.start, MAGNITUDES.stop, (batch, 2), device=device, generator=generator)
    sign = torch.randint(0, 2, (batch, 2), device=device, generator=generator).float().mul_(2).sub_(1)
    applied = torch.rand(batch, 2, device=device, generator=generator) < APPLY_PROB
    rows = torch.randint(0, height, (batch, 2), device=device, generator=generator)
    cols = torch.randint(0, width, (batch, 2), device=device, generator=generator)
    return PolicyDraw(op, magnitude, sign, applied, torch.stack((rows, cols), dim=-1))


# --------------------------------------------------------------------------------------------- per-sample modules

class Cutout(torch.nn.Module):
    """Official CutoutPIL on uint8 (3, H, W): a box of side ~factor*size at a uniform centre, one random colour."""

    def __init__(self, factor: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"Cutout factor must be in (0, 1], got {factor}")
        self.factor = factor

    def apply(self, x: torch.Tensor, draw: CutoutDraw) -> torch.Tensor:
        """Deterministic part on uint8 (B, 3, H, W)."""
        h, w = x.shape[-2:]
        rows, cols = cutout_pil_boxes(to_device_nonblocking(draw.center, x.device), h, w, self.factor)
        return fill_boxes(x, rows, cols, to_device_nonblocking(draw.color, x.device))

    def forward(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(img, (3,), "Cutout")
        draw = sample_cutout(1, img.shape[-2], img.shape[-1], img.device, generator)
        return self.apply(img.unsqueeze(0), draw).squeeze(0)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class RandAugmentPolicy(torch.nn.Module):
    """randaugment 1.0.2's RandAugment on uint8 (3, H, W): a uniform ordered op pair, each applied w.p. 0.5."""

    OPS = OPS
    MAGNITUDES = MAGNITUDES

    def apply(self, img: torch.Tensor, draw: PolicyDraw) -> torch.Tensor:
        """Deterministic part: apply a B=1 draw to uint8 (3, H, W) or (1, 3, H, W)."""
        op, mag, sign, applied = (t.view(-1).tolist() for t in (draw.op, draw.magnitude, draw.sign, draw.applied))
        for slot in range(2):
            if applied[slot]:
                name = OPS[op[slot]]
                img = apply_op(img, name, magnitude_value(name, mag[slot]), sign[slot],
                               center=draw.center[:, slot])
        return img

    def forward(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(img, (3,), "RandAugmentPolicy")
        return self.apply(img, sample_policy(1, img.shape[-2], img.shape[-1], img.device, generator))


def _expect_uint8_rgb(img: torch.Tensor) -> torch.Tensor:
    _check_image(img, (3,), "train/val transform input")
    return img


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s augmentation in ``epoch`` of a run seeded ``seed``: a 64-bit hash of the
    three (numpy's SeedSequence), so that it depends on nothing else: not the worker that loads the sample, the
    worker count, the batch or the process."""
    words = np.random.SeedSequence([seed % 2**64, epoch, index]).generate_state(2, dtype=np.uint32)
    return int(words[0]) | int(words[1]) << 32


class TrainTransform:
    """uint8 (3, H, W) -> float32 (3, S, S) in [0, 1]: Resize((S, S)), Cutout(0.5), RandAugment, /255.

    ``transform(img, generator=g)`` draws every random number from ``g`` (the datasets pass a generator seeded
    by ``sample_seed``); without one it draws from torch's global generator."""

    accepts_generator = True

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self.resize = v2.Resize((image_size, image_size), antialias=True)
        self.cutout, self.policy = Cutout(0.5), RandAugmentPolicy()
        self.to_float = v2.ToDtype(torch.float32, scale=True)

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        img = self.resize(_expect_uint8_rgb(img))
        img = self.policy(self.cutout(img, generator), generator)
        return self.to_float(img)

    def __repr__(self) -> str:
        return f"TrainTransform(image_size={self.image_size}: Resize, Cutout(0.5), RandAugment, /255)"


def train_transform(image_size: int) -> TrainTransform:
    """uint8 (3, H, W) -> float32 (3, S, S) in [0, 1]: Resize((S, S)), Cutout(0.5), RandAugment, /255."""
    return TrainTransform(image_size)


def val_transform(image_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (3, H, W) -> float32 (3, S, S) in [0, 1]: Resize((S, S)), /255. Deterministic."""
    return v2.Compose([
        _expect_uint8_rgb,
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
    ])


def batch_to_float(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 -> ``dtype`` in [0, 1] (x / 255). The one place that says: no mean/std normalisation."""
    if x.dtype != torch.uint8:
        raise ValueError(f"batch_to_float expects uint8, got {x.dtype}")
    return x.to(dtype).div_(255)


# ------------------------------------------------------------------------------------------------- batched module

class BatchAugment(torch.nn.Module):
    """Cutout + RandAugment on uint8 (B, 3, S, S) on any device: per-sample draws, batched application.

    Default (grouped): per slot, samples are sorted by drawn op and each op runs once on its group (index_select
    / index_copy_). The groups are formed where the draws are: with draws on the CPU (a CPU ``generator``, as
    ``GpuTrainPreprocess`` uses) the host knows them without waiting for the device, and the draws then go to the
    images' device by non-blocking copies: no host sync. With draws on a GPU the group sizes cost one host sync
    per slot.
    ``sync_free=True``: every op runs on the whole batch and is kept where drawn (torch.where), with
    TranslateX/TranslateY/Rotate sharing one gather; no host sync at all, ~10x the arithmetic.
    Both give exactly the per-sample pipeline's output for the same draws.
    """

    def __init__(self, image_size: int, cutout_factor: float = 0.5, sync_free: bool = False) -> None:
        super().__init__()
        self.image_size = image_size
        self.sync_free = sync_free
        self.cutout = Cutout(cutout_factor)
        self.register_buffer("values", value_table(), persistent=False)

    def sample(self, batch: int, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> tuple[CutoutDraw, PolicyDraw]:
        s = self.image_size
        return sample_cutout(batch, s, s, device, generator), sample_policy(batch, s, s, device, generator)

    def apply_slot(self, x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor,
                   applied: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """One policy slot: sample i gets OPS[op[i]] if applied[i]; all arguments are (B,) ((B, 2) for center)."""
        if self.values.device != x.device:  # moved once, so later calls copy nothing to the device
            self.values = self.values.to(x.device)
        order, counts = None, None
        if not self.sync_free:  # group on the draws' device: free on the CPU, a host sync on a GPU
            key = torch.where(applied, op, len(OPS))  # len(OPS) = not applied
            order = torch.argsort(key, stable=True)
            counts = torch.bincount(key, minlength=len(OPS) + 1).tolist()
        op, magnitude, sign, applied, center = (to_device_nonblocking(t, x.device)
                                                for t in (op, magnitude, sign, applied, center))
        value = self.values[op, magnitude]
        if self.sync_free:
            return self._apply_masked(x, op, value, sign, applied, center)
        order = to_device_nonblocking(order, x.device)
        out = x.clone()
        start = 0
        for k, n in enumerate(counts[:len(OPS)]):
            if n:
                idx = order[start:start + n]
                done = apply_op(x.index_select(0, idx), OPS[k], value[idx], sign[idx], center=center[idx])
                out.index_copy_(0, idx, done)
            start += n
        return out

    def _apply_masked(self, x: torch.Tensor, op: torch.Tensor, value: torch.Tensor, sign: torch.Tensor,
                      applied: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        chosen = {name: (op == k) & applied for k, name in enumerate(OPS)}
        matrix = identity_matrix(b, x.device)
        for name in NEAREST_OPS:
            matrix = torch.where(chosen[name].unsqueeze(1), affine_matrix(name, value, sign, h, w), matrix)
        out = warp_nearest(x, matrix)  # the nearest-neighbour ops; an exact copy for every other sample
        for name in OPS:
            if name not in NEAREST_OPS:
                out = torch.where(_col(chosen[name]), apply_op(x, name, value, sign, center=center), out)
        return out

    def apply(self, x: torch.Tensor, cut: CutoutDraw, policy: PolicyDraw) -> torch.Tensor:
        """Deterministic part: cutout, then the two policy slots."""
        x = self.cutout.apply(x, cut)
        for slot in range(2):
            x = self.apply_slot(x, policy.op[:, slot], policy.magnitude[:, slot], policy.sign[:, slot],
                                policy.applied[:, slot], policy.center[:, slot])
        return x

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(x, (4,), "BatchAugment")
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"BatchAugment({self.image_size}) got images of size {tuple(x.shape[-2:])}")
        draws_device = generator.device if generator is not None else x.device  # a CPU generator: no host sync
        cut, policy = self.sample(x.shape[0], draws_device, generator)
        return self.apply(x, cut, policy)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, cutout_factor={self.cutout.factor}, sync_free={self.sync_free}"
