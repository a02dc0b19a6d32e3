"""Write the toy COCO and the toy ImageNet: small datasets of coloured shapes (``src.toy.shapes``) on disk.

``make_toy_coco(out, ToyCoco(seed, train, val, image_size))`` writes the toy COCO in the real MS-COCO 2014 layout:
OUT/train2014/*.jpg, OUT/val2014/*.jpg, OUT/annotations/instances_{train,val}2014.json and the official label
lists OUT/coco_train_{full,0.75left,0.4left,singlelabel}.txt. The 80 classes are COCO's categories, with
COCO's names and ids (class index = rank of the id, as in the official lists).

**Label sets from COCO.** Image i of the train split takes the label set of line ``train_lines[i]`` of the
official dataset/coco_train_full.txt, image i of val that of line ``val_lines[i]``, where
``source_lines(seed, n_lines, train, val)`` draws both without replacement from one seeded permutation
(train from its front, val from its back): no val image shares a source line with a train image. Each image
record of the annotations carries its ``source_line`` (1-based line number in that file). The missing-label
lists are then made from the toy's own full list by ``write_missing_label_lists`` (the paper's formulas).
With ``verbose`` the writer prints the label-structure table (``src.toy.label_structure``) of the lists it
wrote beside the official ones. The output is a pure function of the arguments (per-image seeds, fixed
JPEG settings), so the worker count does not matter. OUT/toy_coco.json records the spec and is written
last: a complete dataset made from the same spec is reused (``force`` regenerates).

``make_toy_imagenet(out, ToyImageNet(seed, per_class, val_per_class, image_size))`` writes the "toy ImageNet":
single-object images of each class, from seed streams the toy COCO never uses, in an ImageFolder layout
(OUT/{train,val}/NN_class_name/*.jpg). ``write_preview`` draws a grid of toy COCO train images with their boxes.
The command line is ``python -m src.tools.make_toy_coco``.
"""
from __future__ import annotations

import functools
import json
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from src.data.labels import LabelEntry, read_label_list
from src.data.missing_labels import write_missing_label_lists
from src.io_utils import atomic_write, atomic_write_text
from src.outputs import png_metadata
from src.toy.label_structure import format_structure_table, read_label_structure
from src.toy.shapes import CATEGORY_IDS, CLASSES, NUM_CLASSES, render_scene, render_single

__all__ = ["ToyCoco", "ToyImageNet", "make_toy_coco", "make_toy_imagenet", "write_preview", "coco_json", "categories",
           "source_lines",
           "official_label_sets", "structure_table", "ToySizeError"]

GENERATOR_VERSION = 2
OFFICIAL_DIR = Path(__file__).resolve().parents[2] / "dataset"  # the shipped official label lists
OFFICIAL_FULL_LIST = OFFICIAL_DIR / "coco_train_full.txt"
DEFAULT_TRAIN = 4000
DEFAULT_VAL = 1000
DEFAULT_IMAGE_SIZE = 64
DEFAULT_PER_CLASS = 200
DEFAULT_VAL_PER_CLASS = 50
JPEG_SETTINGS = {"quality": 90, "subsampling": 0, "optimize": False, "progressive": False}
# Seed streams: toy COCO image i uses SeedSequence([seed, stream, i]), toy ImageNet [seed, stream, class, i].
STREAMS = {"train2014": 0, "val2014": 1, "imagenet_train": 2, "imagenet_val": 3, "source_lines": 4}
VAL_ID_OFFSET = 500_000  # val image ids never collide with train ids, as in COCO
MIN_IMAGES_PER_WORKER = 256  # below this, a process pool costs more than it saves
COCO_MANIFEST = "toy_coco.json"
IMAGENET_MANIFEST = "toy_imagenet.json"


@dataclass(frozen=True)
class ToyCoco:
    """What a toy COCO is: its images are a pure function of these fields, which its manifest records."""
    seed: int = 0
    train: int = DEFAULT_TRAIN
    val: int = DEFAULT_VAL
    image_size: int = DEFAULT_IMAGE_SIZE

    def manifest(self) -> dict[str, Any]:
        return {"kind": "toy_coco", "version": GENERATOR_VERSION, **asdict(self)}


@dataclass(frozen=True)
class ToyImageNet:
    """What a toy ImageNet is: ``per_class`` train and ``val_per_class`` val images of each class."""
    seed: int = 0
    per_class: int = DEFAULT_PER_CLASS
    val_per_class: int = DEFAULT_VAL_PER_CLASS
    image_size: int = DEFAULT_IMAGE_SIZE

    def manifest(self) -> dict[str, Any]:
        return {"kind": "toy_imagenet", "version": GENERATOR_VERSION, **asdict(self)}


def image_rng(seed: int, stream: int, *index: int) -> np.random.Generator:
    """The generator of one image: independent of every other image and of the worker running it."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *index]))


class ToySizeError(ValueError):
    """More toy COCO images asked for than the official full list has lines."""


@functools.lru_cache(maxsize=1)
def official_label_sets() -> tuple[tuple[int, ...], ...]:
    """The label set (sorted class indices) of every line of dataset/coco_train_full.txt, in order."""
    return tuple(tuple(sorted(e.labels)) for e in read_label_list(OFFICIAL_FULL_LIST, NUM_CLASSES))


def source_lines(seed: int, n_lines: int, train: int, val: int) -> tuple[np.ndarray, np.ndarray]:
    """0-based source lines of the train and val images: the front and the back of one permutation of
    range(n_lines) seeded by SeedSequence([seed, STREAMS['source_lines']]), so they never overlap, a larger
    train split extends a smaller one, and the val lines do not depend on ``train``."""
    if train + val > n_lines:
        raise ToySizeError(f"train + val = {train + val} images, but {OFFICIAL_FULL_LIST} has only {n_lines} "
                           f"lines to take label sets from")
    perm = image_rng(seed, STREAMS["source_lines"]).permutation(n_lines)
    return perm[:train], perm[::-1][:val]


def _save_jpeg(img: Image.Image, path: Path) -> None:
    img.save(path, format="JPEG", **JPEG_SETTINGS)


def _coco_image(task: tuple[str, str, int, int, int, int, int, tuple[int, ...]]) -> dict[str, Any]:
    """Render and save one toy COCO image; return its image record and objects (worker function)."""
    root, split, index, image_id, seed, size, line, labels = task
    img, objects = render_scene(image_rng(seed, STREAMS[split], index), size, labels)
    file_name = f"COCO_{split}_{image_id:012d}.jpg"
    _save_jpeg(img, Path(root) / split / file_name)
    return {
        "image": {"id": image_id, "file_name": file_name, "width": size, "height": size, "source_line": line + 1},
        "objects": [(o.class_index, o.bbox, o.area, o.polygon) for o in objects],
    }


def _imagenet_image(task: tuple[str, str, int, int, int, int]) -> None:
    root, split, class_index, index, seed, size = task
    stream = STREAMS[f"imagenet_{split}"]
    rng = image_rng(seed, stream, class_index, index)
    _save_jpeg(render_single(rng, size, class_index), Path(root) / split / _class_dir(class_index)
               / f"{split}_{class_index:02d}_{index:06d}.jpg")


def _run(fn: Callable, tasks: list, workers: int | None, min_per_worker: int = MIN_IMAGES_PER_WORKER) -> list:
    """``[fn(t) for t in tasks]``, on a spawn process pool when there is enough work."""
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max(1, min(workers, len(tasks) // min_per_worker))
    if workers == 1:
        return [fn(t) for t in tasks]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(fn, tasks, chunksize=max(1, len(tasks) // (workers * 8)))


def categories() -> list[dict[str, Any]]:
    """COCO ``categories``: COCO's ids (1..90 with gaps) and names; ``look`` says how the toy draws each."""
    return [{"id": cid, "name": c.name, "supercategory": c.shape, "look": c.look}
            for cid, c in zip(CATEGORY_IDS, CLASSES)]


def coco_json(records: list[dict[str, Any]], first_ann_id: int = 1) -> dict[str, Any]:
    """COCO instances dict (images, annotations, categories) for rendered image records."""
    images, annotations = [], []
    ann_id = first_ann_id
    for rec in records:
        images.append(rec["image"])
        for class_index, bbox, area, polygon in rec["objects"]:
            annotations.append({
                "id": ann_id,
                "image_id": rec["image"]["id"],
                "category_id": CATEGORY_IDS[class_index],
                "bbox": [round(v, 2) for v in bbox],
                "area": round(area, 2),
                "iscrowd": 0,
                "segmentation": [[round(float(v), 2) for v in np.asarray(polygon).ravel()]],
            })
            ann_id += 1
    return {
        "info": {"description": "toy COCO made by src.tools.make_toy_coco", "version": str(GENERATOR_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories(),
    }


def _is_cached(out: Path, manifest: str, args: dict[str, Any], needed: Sequence[str]) -> bool:
    try:
        found = json.loads((out / manifest).read_text())
    except (OSError, ValueError):
        return False
    return found == {**args, "complete": True} and all((out / p).exists() for p in needed)


def _prepare(out: Path, manifest: str, args: dict[str, Any], owned: Sequence[str]) -> None:
    """Claim ``out`` for regeneration: refuse foreign data, drop our stale images, mark incomplete."""
    ours = (out / manifest).exists()
    for name in owned:
        d = out / name
        if not d.exists():
            continue
        if not ours:
            raise FileExistsError(f"{d} exists but {out / manifest} does not: {out} holds data not made "
                                  f"by make_toy_coco; pass an empty or new --out")
        for f in sorted(d.rglob("*.jpg")):
            f.unlink()
    atomic_write_text(out / manifest, json.dumps({**args, "complete": False}, indent=1) + "\n")


def _finish(out: Path, manifest: str, args: dict[str, Any]) -> None:
    atomic_write_text(out / manifest, json.dumps({**args, "complete": True}, indent=1) + "\n")


def make_toy_coco(out: str | os.PathLike, spec: ToyCoco = ToyCoco(), *, force: bool = False,
                  workers: int | None = None, verbose: bool = True) -> Path:
    """Write the toy COCO ``spec`` to ``out`` (see module docstring) unless it is there already; return ``out``."""
    _check_sizes(train=spec.train, val=spec.val, image_size=spec.image_size)
    out = Path(out)
    args = spec.manifest()
    needed = ["annotations/instances_train2014.json", "annotations/instances_val2014.json",
              "coco_train_full.txt"]
    if not force and _is_cached(out, COCO_MANIFEST, args, needed):
        if verbose:
            print(f"toy COCO: cached at {out} (made with the same arguments; --force regenerates)")
        return out
    t0 = time.perf_counter()
    tasks = _coco_tasks(out, spec)  # before _prepare: a ToySizeError deletes nothing
    _prepare(out, COCO_MANIFEST, args, ["train2014", "val2014", "annotations"])
    for d in ("train2014", "val2014", "annotations"):
        (out / d).mkdir(parents=True, exist_ok=True)
    records = _run(_coco_image, tasks, workers)
    train_recs, val_recs = records[:spec.train], records[spec.train:]
    train_json = coco_json(train_recs)
    val_json = coco_json(val_recs, first_ann_id=len(train_json["annotations"]) + 1)
    for name, data in (("train", train_json), ("val", val_json)):
        text = json.dumps(data, separators=(",", ":"))
        atomic_write_text(out / "annotations" / f"instances_{name}2014.json", text)
    entries = [LabelEntry(r["image"]["file_name"], tuple(sorted({o[0] for o in r["objects"]})))
               for r in train_recs]
    write_missing_label_lists(entries, out, prefix="coco", seed=spec.seed)
    _finish(out, COCO_MANIFEST, args)
    if verbose:
        print(f"toy COCO: {spec.train} train + {spec.val} val images, {NUM_CLASSES} classes, "
              f"{_per_image(train_recs)} train, {_per_image(val_recs)} val, "
              f"{spec.image_size}px -> {out} ({time.perf_counter() - t0:.1f} s)")
        print(structure_table(out))  # the train split's lists beside the official ones
    return out


def _per_image(records: list[dict]) -> str:
    """'2.97 labels/image, 3.75 objects/image' of one split's image records ('no images' when empty)."""
    if not records:
        return "no images"
    labels = sum(len({o[0] for o in r["objects"]}) for r in records)
    objects = sum(len(r["objects"]) for r in records)
    return f"{labels / len(records):.2f} labels/image, {objects / len(records):.2f} objects/image"


def _coco_tasks(out: Path, spec: ToyCoco) -> list[tuple]:
    """One task per image: (root, split, index, image id, seed, size, source line, label set)."""
    sets = official_label_sets()
    train_lines, val_lines = source_lines(spec.seed, len(sets), spec.train, spec.val)
    seed, size = spec.seed, spec.image_size
    tasks = [(str(out), "train2014", i, i + 1, seed, size, int(n), sets[n]) for i, n in enumerate(train_lines)]
    tasks += [(str(out), "val2014", i, VAL_ID_OFFSET + i + 1, seed, size, int(n), sets[n])
              for i, n in enumerate(val_lines)]
    return tasks


def structure_table(toy_dir: str | os.PathLike) -> str:
    """The label-structure table of the toy's train lists in ``toy_dir`` beside the official COCO lists."""
    official = read_label_structure(OFFICIAL_DIR, NUM_CLASSES)
    toy = read_label_structure(toy_dir, NUM_CLASSES)
    return format_structure_table({"MS-COCO 2014 train (official lists)": official,
                                   "toy COCO train": toy})


def _class_dir(class_index: int) -> str:
    """ImageFolder directory of a class; the index prefix keeps sorted order = class index."""
    return f"{class_index:02d}_{CLASSES[class_index].name.replace(' ', '_')}"


def make_toy_imagenet(out: str | os.PathLike, spec: ToyImageNet = ToyImageNet(), *, force: bool = False,
                      workers: int | None = None, verbose: bool = True) -> Path:
    """Single-object images, ``out/{train,val}/NN_class_name/*.jpg`` (torchvision ImageFolder layout).

    Same classes as the toy COCO, but seed streams it never uses, so no image (or scene) is shared
    with the multi-label data. Cached like :func:`make_toy_coco` (manifest ``toy_imagenet.json``).
    """
    _check_sizes(per_class=spec.per_class, image_size=spec.image_size)
    if spec.val_per_class < 0:
        raise ValueError(f"val_per_class must be >= 0, got {spec.val_per_class}")
    out = Path(out)
    args = spec.manifest()
    splits = {"train": spec.per_class, "val": spec.val_per_class}
    needed = [f"{s}/{_class_dir(c)}" for s, n in splits.items() if n for c in range(NUM_CLASSES)]
    if not force and _is_cached(out, IMAGENET_MANIFEST, args, needed):
        if verbose:
            print(f"toy ImageNet: cached at {out} (made with the same arguments; --force regenerates)")
        return out
    t0 = time.perf_counter()
    _prepare(out, IMAGENET_MANIFEST, args, list(splits))
    tasks = []
    for split, n in splits.items():
        for c in range(NUM_CLASSES):
            if n:
                (out / split / _class_dir(c)).mkdir(parents=True, exist_ok=True)
            tasks += [(str(out), split, c, i, spec.seed, spec.image_size) for i in range(n)]
    _run(_imagenet_image, tasks, workers)
    _finish(out, IMAGENET_MANIFEST, args)
    if verbose:
        print(f"toy ImageNet: {spec.per_class} train + {spec.val_per_class} val images x {NUM_CLASSES} classes, "
              f"{spec.image_size}px -> {out} ({time.perf_counter() - t0:.1f} s)")
    return out


def _check_sizes(**sizes: int) -> None:
    for name, v in sizes.items():
        low = 16 if name == "image_size" else 1
        if not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")


PREVIEW_TOOL = "src.tools.make_toy_coco --preview"  # the marker of the preview PNG (src/outputs.py)


def write_preview(root: str | os.PathLike, png: str | os.PathLike, n: int = 8, max_labels: int = 4) -> Path:
    """A grid of the first ``n`` train images with at most ``max_labels`` labels, boxes and class names
    (a PNG marked as drawn by ``PREVIEW_TOOL``)."""
    from matplotlib.figure import Figure  # lazy: heavy, and only the preview needs it
    from matplotlib.patches import Rectangle

    root = Path(root)
    data = json.loads((root / "annotations" / "instances_train2014.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    anns: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    chosen = [im for im in data["images"] if len({a["category_id"] for a in anns.get(im["id"], [])}) <= max_labels][:n]
    if not chosen:
        raise ValueError(f"{root}: no train image with at most {max_labels} labels to preview")
    cols = min(4, len(chosen))
    rows = -(-len(chosen) // cols)
    fig = Figure(figsize=(2.4 * cols, 3.0 * rows))
    for k, im in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, k + 1)
        with Image.open(root / "train2014" / im["file_name"]) as f:
            ax.imshow(f.convert("RGB"), interpolation="nearest")
        for a in anns.get(im["id"], []):
            x, y, w, h = a["bbox"]
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, lw=0.8, ec="white"))
        labels = sorted({a["category_id"] for a in anns.get(im["id"], [])})
        ax.set_title("\n".join(names[c] for c in labels), fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    return atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=100, metadata=png_metadata(PREVIEW_TOOL)))
