"""Procedural "toy" images of coloured shapes: the objects behind the toy COCO and toy ImageNet.

A class is a (shape, hue, fill) triple; 12 shapes x 2 appearances give 24 classes. Every object is
jittered in size, aspect, rotation (|angle| <= 20 deg, so square and diamond stay distinct), hue,
saturation, brightness and stripe phase/angle, and drawn over a smooth textured background with
low-contrast grey clutter. Everything is a pure function of a ``numpy.random.Generator``, so one
image is reproducible from one seed.

Multi-label scenes follow COCO's statistics: the number of distinct labels k in 1..8 is drawn from
COCO 2014 train's histogram (tail folded into 8, mean 2.91), classes are drawn without replacement
with Zipf weights w_c = 1 / (c + 1) boosted x``COOCCUR_BOOST`` for partners of classes already in
the image (like person + bicycle), and some classes get extra instances, for 1..8 objects in all.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = (
    "disc", "ring", "square", "diamond", "triangle", "star",
    "cross", "hexagon", "crescent", "heart", "arrow", "hourglass",
)
HUES = {  # name -> hue in degrees
    "red": 0, "orange": 30, "yellow": 55, "green": 120,
    "teal": 170, "blue": 220, "purple": 275, "magenta": 320,
}
_HUE_NAMES = tuple(HUES)


@dataclass(frozen=True)
class ToyClass:
    name: str
    shape: str
    hue: float  # degrees
    striped: bool


def _build_classes() -> tuple[ToyClass, ...]:
    """Class 2i: solid shape i; class 2i+1: striped shape i in another hue (each hue used 3 times)."""
    out = []
    for i, shape in enumerate(SHAPES):
        for striped, hue_name in ((False, _HUE_NAMES[(3 * i) % 8]), (True, _HUE_NAMES[(3 * i + 4) % 8])):
            name = f"striped {hue_name} {shape}" if striped else f"{hue_name} {shape}"
            out.append(ToyClass(name, shape, float(HUES[hue_name]), striped))
    return tuple(out)


CLASSES = _build_classes()
NUM_CLASSES = len(CLASSES)
# COCO-style category ids with gaps: every third id of COCO's 80 (1, 4, 7, 10, 14, ...).
_COCO_IDS = (list(range(1, 12)) + list(range(13, 26)) + [27, 28] + list(range(31, 45))
             + list(range(46, 66)) + [67, 70] + list(range(72, 83)) + list(range(84, 91)))
CATEGORY_IDS = tuple(_COCO_IDS[::3][:NUM_CLASSES])

# P(k distinct labels), k = 1..8: COCO 2014 train (coco_train_full.txt), labels > 8 folded into 8.
LABEL_COUNT_P = np.array([0.2048, 0.3052, 0.2051, 0.1198, 0.0720, 0.0410, 0.0242, 0.0279])
LABEL_COUNT_P = LABEL_COUNT_P / LABEL_COUNT_P.sum()
MAX_OBJECTS = 8
ZIPF_WEIGHTS = 1.0 / np.arange(1, NUM_CLASSES + 1)
# Classes that tend to appear together; a class is in at most one group.
COOCCUR_GROUPS = ((0, 7, 13), (1, 10), (2, 16, 21), (3, 12), (4, 19), (6, 15, 22),
                  (8, 18), (11, 23), (14, 20), (9, 17))
COOCCUR_BOOST = 6.0
EXTRA_INSTANCE_P = np.full(NUM_CLASSES, 0.12)
EXTRA_INSTANCE_P[0] = 0.45  # class 0 comes in crowds, like COCO's person
MAX_ROTATION_DEG = 20.0


@dataclass(frozen=True)
class ToyObject:
    """One drawn object, in pixels of the final image."""

    class_index: int
    polygon: np.ndarray  # (P, 2) outer outline, x y
    bbox: tuple[float, float, float, float]  # x, y, w, h, clipped to the image
    area: float  # visible pixels of its own mask (ignoring occlusion by others)


# ----------------------------------------------------------------------------- shapes

def _circle(n: int, r: float = 1.0, cx: float = 0.0, cy: float = 0.0,
            a0: float = 0.0, a1: float = 360.0) -> np.ndarray:
    t = np.deg2rad(np.linspace(a0, a1, n, endpoint=(a1 - a0) % 360 != 0))
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _star(points: int, r_in: float) -> np.ndarray:
    t = np.deg2rad(-90 + np.arange(2 * points) * 180.0 / points)
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, r_in)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _crescent() -> np.ndarray:
    # Outer circle (0, 0, 1) minus circle (d, 0, r2): outer arc through the left, inner arc back.
    d, r2 = 0.5, 0.8
    x = (1 - r2 * r2 + d * d) / (2 * d)
    a = math.degrees(math.atan2(math.sqrt(1 - x * x), x))
    b = math.degrees(math.atan2(math.sqrt(1 - x * x), x - d))
    outer = _circle(24, 1.0, 0, 0, a, 360 - a)
    inner = _circle(16, r2, d, 0, 360 - b, b)  # decreasing angle: back along the hollow side
    return np.concatenate([outer, inner])


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, -y - 2.5], 1) / 16.5


def shape_outline(shape: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit outline (roughly within [-1, 1]^2, y down) and an optional hole, for ``shape``."""
    if shape == "disc":
        return _circle(36), None
    if shape == "ring":
        return _circle(36), _circle(28, 0.55)
    if shape == "square":
        return np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]]), None
    if shape == "diamond":
        return np.array([[0, -1], [0.7, 0], [0, 1], [-0.7, 0]], dtype=float), None
    if shape == "triangle":
        return np.array([[0, -1], [0.95, 0.75], [-0.95, 0.75]]), None
    if shape == "star":
        return _star(5, 0.42), None
    if shape == "cross":
        w = 0.32
        return np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1],
                         [-w, w], [-1, w], [-1, -w], [-w, -w]]), None
    if shape == "hexagon":
        return _circle(6, 1.0, a0=0.0), None
    if shape == "crescent":
        return _crescent(), None
    if shape == "heart":
        return _heart(), None
    if shape == "arrow":
        return np.array([[-1, -0.25], [0.1, -0.25], [0.1, -0.65], [1, 0], [0.1, 0.65], [0.1, 0.25],
                         [-1, 0.25]]), None
    if shape == "hourglass":
        return np.array([[-0.8, -1], [0.8, -1], [0.15, 0], [0.8, 1], [-0.8, 1], [-0.15, 0]]), None
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


# ----------------------------------------------------------------------------- scene sampling

def sample_classes(rng: np.random.Generator) -> list[int]:
    """Class index of every object (1..8 objects, 1..8 distinct classes), see module docstring."""
    k = int(rng.choice(len(LABEL_COUNT_P), p=LABEL_COUNT_P)) + 1
    w = ZIPF_WEIGHTS.copy()
    chosen: list[int] = []
    for _ in range(k):
        c = int(rng.choice(NUM_CLASSES, p=w / w.sum()))
        chosen.append(c)
        w[c] = 0.0
        for group in COOCCUR_GROUPS:
            if c in group:
                for mate in group:
                    w[mate] *= COOCCUR_BOOST
    objects = list(chosen)
    for c in chosen:
        while len(objects) < MAX_OBJECTS and rng.random() < EXTRA_INSTANCE_P[c]:
            objects.append(c)
    return objects


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
    colour = _hsv(cls.hue + rng.uniform(-12, 12), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    a = rng.uniform(0, 2 * np.pi)
    proj = np.cos(a) * xx + np.sin(a) * yy
    if cls.striped:
        period = max(3.0, radius * rng.uniform(0.45, 0.65))
        t = np.clip(0.5 + 1.5 * np.sin(2 * np.pi * proj / period + rng.uniform(0, 2 * np.pi)), 0, 1)
        dark = colour * rng.uniform(0.25, 0.45)
        return colour * t[..., None] + dark * (1 - t[..., None])
    shade = 1.0 + 0.12 * np.sin(proj / max(radius, 1.0))  # gentle shading across the object
    return np.clip(colour * shade[..., None], 0, 255)


def _object_mask(outline: np.ndarray, hole: np.ndarray | None, width: int, height: int,
                 ss: int) -> np.ndarray:
    """Antialiased float mask in [0, 1] of shape (height, width): drawn at ``ss`` x, box-filtered."""
    m = Image.new("L", (width * ss, height * ss), 0)
    d = ImageDraw.Draw(m)
    d.polygon([tuple(p) for p in (outline * ss)], fill=255)
    if hole is not None:
        d.polygon([tuple(p) for p in (hole * ss)], fill=0)
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
        outline, hole = shape_outline(cls.shape)
        tf = _transform(rng, r, centre)
        poly = tf(outline)
        clipped = np.clip(poly, 0, size)
        x0, y0 = clipped.min(0)
        x1, y1 = clipped.max(0)
        # Work on the object's pixel window only.
        ix0, iy0 = int(math.floor(x0)), int(math.floor(y0))
        ix1, iy1 = max(int(math.ceil(x1)), ix0 + 1), max(int(math.ceil(y1)), iy0 + 1)
        off = np.array([ix0, iy0], dtype=np.float64)
        mask = _object_mask(poly - off, None if hole is None else tf(hole) - off,
                            ix1 - ix0, iy1 - iy0, ss)[..., None]
        yy, xx = np.mgrid[iy0:iy1, ix0:ix1] + 0.5
        fill = _object_fill(rng, cls, yy, xx, r)
        win = img[iy0:iy1, ix0:ix1]
        win *= 1 - mask
        win += fill * mask
        out.append(ToyObject(c, clipped, (float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
                             float(mask.sum())))
    return out


def render_scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[ToyObject]]:
    """A multi-object toy COCO image: classes from :func:`sample_classes`, larger objects drawn first."""
    classes = sample_classes(rng)
    n = len(classes)
    r_max = 0.28 / (1 + 0.12 * (n - 1))  # crowded images hold smaller objects
    radii = [size * math.exp(rng.uniform(math.log(0.08), math.log(r_max))) for _ in classes]
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
