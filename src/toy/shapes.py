"""Procedural "toy" images of coloured shapes: the objects behind the toy COCO and toy ImageNet.

**Classes.** The toy has MS-COCO 2014's 80 categories, with COCO's names and ids
(``src.data.class_names.COCO_2014_CATEGORIES``; class index = rank of the id). Each class looks like a
(shape, hue, fill) triple, a full 5 x 8 x 2 design:

    shape = SHAPES[(i // 8) % 5]   disc, square, triangle, star, cross
    hue   = HUES[i % 8]            red 0, orange 32, yellow 58, green 120, teal 172, blue 222,
                                   purple 275, magenta 320 (degrees)
    fill  = FILLS[i // 40]         solid (classes 0-39) or striped (40-79)

so every class differs from 7 others in hue only, from 4 in shape only and from 1 in fill only; no
single attribute tells a class. The hues are at least 26 degrees apart and jittered by at most
+-8 degrees, with saturation 0.65-1 and value 0.7-1, so hue alone stays distinct at any size; shape
and fill (stripes of period >= 3 px) need an object of a few pixels' radius, so small objects are
hard, as in COCO. Every object is jittered in aspect (+-15%), rotation (|angle| <= 20 deg, so a
square never becomes a diamond), hue, saturation, brightness and stripe phase/angle, and drawn over a
smooth textured background with low-contrast grey clutter.

**Scenes.** A toy COCO image is given its label set (``src.toy.generate`` takes it from a line of
the official ``coco_train_full.txt``, up to 18 labels). Every labelled class gets one object; then
each class gets another instance with probability ``EXTRA_INSTANCE_P`` (0.45 for person, which comes
in crowds, 0.12 for the rest), again and again (a geometric number of extras), up to ``max_objects(size, k) = max(k, min(16, size // 4))``
objects in all (16 at 64 px, 8 at 32 px): the labelled classes are never dropped.

**Sizes.** An object's radius r (half its extent before the +-15% aspect jitter) is log-uniform:

    log r ~ U(log r_lo, log r_hi(n)),  r_lo = max(0.045 S, 2 px),
    r_hi(n) = max(1.5 r_lo, S min(0.3, 0.45 / sqrt(n)))

for image side S and n objects in the image: crowded images hold smaller objects (r_hi = 0.3 S for up
to 2 objects, 0.16 S for 8, 0.11 S for 16). At 64 px r spans 2.9-19 px; about a fifth of the objects
of a one-object image, and more in crowded ones, are under 0.07 S (9 px across), hard to see.

Everything is a pure function of a ``numpy.random.Generator`` (and the label set), so one image is
reproducible from one seed.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from src.data.class_names import COCO_2014_CATEGORIES

SHAPES = ("disc", "square", "triangle", "star", "cross")
HUES = {  # name -> hue in degrees; neighbours are >= 26 degrees apart
    "red": 0, "orange": 32, "yellow": 58, "green": 120,
    "teal": 172, "blue": 222, "purple": 275, "magenta": 320,
}
FILLS = ("solid", "striped")
_HUE_NAMES = tuple(HUES)
HUE_JITTER_DEG = 8.0


@dataclass(frozen=True)
class ToyClass:
    name: str  # COCO's category name
    shape: str
    hue_name: str
    hue: float  # degrees
    striped: bool

    @property
    def look(self) -> str:
        """What the class looks like, e.g. 'striped blue star'."""
        return f"{FILLS[self.striped]} {self.hue_name} {self.shape}"


def _build_classes() -> tuple[ToyClass, ...]:
    """Class i: hue i % 8, shape (i // 8) % 5, striped when i >= 40 (see module docstring)."""
    n_hue, n_shape = len(HUES), len(SHAPES)
    assert n_hue * n_shape * len(FILLS) == len(COCO_2014_CATEGORIES)
    out = []
    for i, (_, name) in enumerate(COCO_2014_CATEGORIES):
        hue_name = _HUE_NAMES[i % n_hue]
        out.append(ToyClass(name, SHAPES[(i // n_hue) % n_shape], hue_name, float(HUES[hue_name]),
                            i >= n_hue * n_shape))
    return tuple(out)


CLASSES = _build_classes()
NUM_CLASSES = len(CLASSES)
CATEGORY_IDS = tuple(cid for cid, _ in COCO_2014_CATEGORIES)

EXTRA_INSTANCE_P = np.full(NUM_CLASSES, 0.12)
EXTRA_INSTANCE_P[0] = 0.45  # person comes in crowds
MAX_OBJECTS = 16  # objects per image (at >= 64 px) unless the label set alone has more
R_LO_FRAC, R_LO_PX = 0.045, 2.0  # smallest radius: 4.5% of the side, at least 2 px
R_HI_FRAC, R_CROWD = 0.3, 0.45  # largest radius: S * min(0.3, 0.45 / sqrt(n))
MAX_ROTATION_DEG = 20.0


@dataclass(frozen=True)
class ToyObject:
    """One drawn object, in pixels of the final image."""

    class_index: int
    polygon: np.ndarray  # (P, 2) outer outline, x y
    bbox: tuple[float, float, float, float]  # x, y, w, h, clipped to the image
    area: float  # visible pixels of its own mask (ignoring occlusion by others)


# ----------------------------------------------------------------------------- shapes

def _circle(n: int) -> np.ndarray:
    t = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], 1)


def _star(points: int, r_in: float) -> np.ndarray:
    t = np.deg2rad(-90 + np.arange(2 * points) * 180.0 / points)
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, r_in)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def shape_outline(shape: str) -> np.ndarray:
    """Unit outline (P, 2), roughly within [-1, 1]^2 (y down), of ``shape``."""
    if shape == "disc":
        return _circle(36)
    if shape == "square":
        return np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]])
    if shape == "triangle":
        return np.array([[0, -1], [0.95, 0.75], [-0.95, 0.75]])
    if shape == "star":
        return _star(5, 0.42)
    if shape == "cross":
        w = 0.32
        return np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1],
                         [-w, w], [-1, w], [-1, -w], [-w, -w]])
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


# ----------------------------------------------------------------------------- scene sampling

def max_objects(size: int, n_labels: int) -> int:
    """Objects allowed in an image of side ``size`` with ``n_labels`` labels: max(k, min(16, size // 4))."""
    return max(n_labels, min(MAX_OBJECTS, size // 4))


def check_labels(labels: Sequence[int]) -> tuple[int, ...]:
    """``labels`` as a tuple of ints, or ValueError when it is empty, repeats or leaves [0, NUM_CLASSES)."""
    out = tuple(int(c) for c in labels)
    if not out:
        raise ValueError("a toy scene needs at least one label")
    if len(set(out)) != len(out) or not all(0 <= c < NUM_CLASSES for c in out):
        raise ValueError(f"labels {list(out)}: need distinct class indices in [0, {NUM_CLASSES})")
    return out


def scene_classes(rng: np.random.Generator, labels: Sequence[int], size: int) -> list[int]:
    """Class index of every object: each label once, then extra instances (see module docstring)."""
    objects = list(check_labels(labels))
    cap = max_objects(size, len(objects))
    for c in list(objects):
        while len(objects) < cap and rng.random() < EXTRA_INSTANCE_P[c]:
            objects.append(c)
    return objects


def radius_bounds(size: int, n_objects: int) -> tuple[float, float]:
    """(r_lo, r_hi) in pixels for an image of side ``size`` holding ``n_objects`` objects."""
    lo = max(R_LO_FRAC * size, R_LO_PX)
    hi = max(1.5 * lo, size * min(R_HI_FRAC, R_CROWD / math.sqrt(n_objects)))
    return lo, hi


def sample_radii(rng: np.random.Generator, size: int, n_objects: int) -> list[float]:
    """Log-uniform radii in :func:`radius_bounds`, one per object."""
    lo, hi = radius_bounds(size, n_objects)
    return [math.exp(v) for v in rng.uniform(math.log(lo), math.log(hi), size=n_objects)]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of boxes a, b (x0, y0, x1, y1) over the area of the smaller box."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / small


def _place(rng: np.random.Generator, radii: list[float], size: int, tries: int = 16) -> list[np.ndarray]:
    """Centres for objects of the given radii (drawn in this order): random, with bounded overlap."""
    centres: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    for r in radii:
        lo, hi = 0.6 * r, size - 0.6 * r  # up to 40% of the radius may leave the image
        best, best_ov = None, 2.0
        for _ in range(tries):
            c = rng.uniform(lo, hi, size=2) if hi > lo else np.full(2, size / 2.0)
            box = np.array([c[0] - r, c[1] - r, c[0] + r, c[1] + r])
            ov = max((_overlap(box, b) for b in boxes), default=0.0)
            if ov < best_ov:
                best, best_ov = (c, box), ov
            if ov < 0.3:
                break
        centres.append(best[0])
        boxes.append(best[1])
    return centres


# ----------------------------------------------------------------------------- rendering

def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h_deg % 360) / 360.0, s, v)) * 255.0


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Float RGB (size, size, 3): muted two-colour gradient + smooth waves + faint grey clutter."""
    c1 = _hsv(rng.uniform(0, 360), rng.uniform(0, 0.25), rng.uniform(0.3, 0.85))
    c2 = _hsv(rng.uniform(0, 360), rng.uniform(0, 0.25), rng.uniform(0.3, 0.85))
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    a = rng.uniform(0, 2 * np.pi)
    t = np.clip((np.cos(a) * (xx - 0.5) + np.sin(a) * (yy - 0.5)) * 1.2 + 0.5, 0, 1)[..., None]
    img = c1 * (1 - t) + c2 * t
    for _ in range(3):  # low-frequency texture, 1-3 cycles per image
        f = rng.uniform(1, 3) * 2 * np.pi
        b = rng.uniform(0, 2 * np.pi)
        img += rng.uniform(4, 12) * np.sin(f * (np.cos(b) * xx + np.sin(b) * yy) + rng.uniform(0, 2 * np.pi))[..., None]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    base = img.mean()
    for _ in range(int(rng.integers(3, 9))):  # clutter: grey lines, arcs and blobs
        g = float(np.clip(base + rng.uniform(-45, 45), 0, 255))
        col = tuple(int(np.clip(g + d, 0, 255)) for d in rng.uniform(-6, 6, 3))
        p = rng.uniform(0, size, 4)
        kind = rng.integers(3)
        if kind == 0:
            draw.line([(p[0], p[1]), (p[2], p[3])], fill=col, width=1)
        elif kind == 1:
            x0, y0 = min(p[0], p[2]), min(p[1], p[3])
            draw.arc([x0, y0, x0 + abs(p[2] - p[0]) + 2, y0 + abs(p[3] - p[1]) + 2],
                     float(rng.uniform(0, 360)), float(rng.uniform(0, 360)), fill=col, width=1)
        else:
            r = rng.uniform(0.02, 0.06) * size
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=col)
    return np.asarray(pil, dtype=np.float64)


def _object_fill(rng: np.random.Generator, cls: ToyClass, yy: np.ndarray, xx: np.ndarray,
                 radius: float) -> np.ndarray:
    """Float RGB fill at pixel centres (yy, xx) for one object: jittered colour, shaded or striped."""
    colour = _hsv(cls.hue + rng.uniform(-HUE_JITTER_DEG, HUE_JITTER_DEG), rng.uniform(0.65, 1.0),
                  rng.uniform(0.7, 1.0))
    a = rng.uniform(0, 2 * np.pi)
    proj = np.cos(a) * xx + np.sin(a) * yy
    if cls.striped:
        period = max(3.0, radius * rng.uniform(0.45, 0.65))
        t = np.clip(0.5 + 1.5 * np.sin(2 * np.pi * proj / period + rng.uniform(0, 2 * np.pi)), 0, 1)
        dark = colour * rng.uniform(0.25, 0.45)
        return colour * t[..., None] + dark * (1 - t[..., None])
    shade = 1.0 + 0.12 * np.sin(proj / max(radius, 1.0))  # gentle shading across the object
    return np.clip(colour * shade[..., None], 0, 255)


def _object_mask(outline: np.ndarray, width: int, height: int, ss: int) -> np.ndarray:
    """Antialiased float mask in [0, 1] of shape (height, width): drawn at ``ss`` x, box-filtered."""
    m = Image.new("L", (width * ss, height * ss), 0)
    d = ImageDraw.Draw(m)
    d.polygon([tuple(p) for p in (outline * ss)], fill=255)
    return np.asarray(m.resize((width, height), Image.BOX), dtype=np.float64) / 255.0


def _transform(rng: np.random.Generator, radius: float, centre: np.ndarray):
    rot = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    sx, sy = radius * rng.uniform(0.85, 1.15, size=2)
    m = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]]) @ np.diag([sx, sy])
    return lambda pts: pts @ m.T + centre


def draw_objects(rng: np.random.Generator, img: np.ndarray, classes: list[int], radii: list[float],
                 centres: list[np.ndarray]) -> list[ToyObject]:
    """Composite objects onto ``img`` (float RGB, modified in place) in the given order."""
    size = img.shape[0]
    ss = 4 if size <= 160 else 2
    out = []
    for c, r, centre in zip(classes, radii, centres):
        cls = CLASSES[c]
        poly = _transform(rng, r, centre)(shape_outline(cls.shape))
        clipped = np.clip(poly, 0, size)
        x0, y0 = clipped.min(0)
        x1, y1 = clipped.max(0)
        # Work on the object's pixel window only.
        ix0, iy0 = int(math.floor(x0)), int(math.floor(y0))
        ix1, iy1 = max(int(math.ceil(x1)), ix0 + 1), max(int(math.ceil(y1)), iy0 + 1)
        off = np.array([ix0, iy0], dtype=np.float64)
        mask = _object_mask(poly - off, ix1 - ix0, iy1 - iy0, ss)[..., None]
        yy, xx = np.mgrid[iy0:iy1, ix0:ix1] + 0.5
        fill = _object_fill(rng, cls, yy, xx, r)
        win = img[iy0:iy1, ix0:ix1]
        win *= 1 - mask
        win += fill * mask
        out.append(ToyObject(c, clipped, (float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
                             float(mask.sum())))
    return out


def render_scene(rng: np.random.Generator, size: int,
                 labels: Sequence[int]) -> tuple[Image.Image, list[ToyObject]]:
    """A toy COCO image with the label set ``labels`` (class indices): objects from :func:`scene_classes`,
    radii from :func:`sample_radii`, larger objects drawn first (so small ones stay on top)."""
    classes = scene_classes(rng, labels, size)
    radii = sample_radii(rng, size, len(classes))
    order = np.argsort(radii, kind="stable")[::-1]
    classes = [classes[i] for i in order]
    radii = [radii[i] for i in order]
    img = render_background(rng, size)
    centres = _place(rng, radii, size)
    objects = draw_objects(rng, img, classes, radii, centres)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8)), objects


def render_single(rng: np.random.Generator, size: int, class_index: int) -> Image.Image:
    """A toy ImageNet image: one large object of ``class_index`` on a cluttered background."""
    if not 0 <= class_index < NUM_CLASSES:
        raise ValueError(f"class_index {class_index} outside [0, {NUM_CLASSES})")
    r = size * rng.uniform(0.2, 0.4)
    centre = rng.uniform(0.7 * r, size - 0.7 * r, size=2)
    img = render_background(rng, size)
    draw_objects(rng, img, [class_index], [r], [centre])
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))
