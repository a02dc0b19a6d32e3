"""Multi-label image datasets: a label list (or COCO instances file) plus an image folder.

A sample is ``(image, target, index)``: ``image`` = ``transform(uint8 RGB tensor (3, H, W))`` (or the
undecoded file bytes with ``raw=True``), ``target`` = float32 multi-hot of shape (C,), ``index`` = the
sample's index in this dataset (also through a ``Subset``), for per-sample label stores.

Bad input is never silently replaced: a missing image raises MissingImageError naming it (the
official code returns a black image with all-zero labels), a file no decoder reads (corrupt,
truncated, not an image) or one the JPEG decoder reports corrupt data in (``src.data.decode``) raises
BadImageError naming it, unless ``skip_bad_images=True``, where the sample is logged and returned as
None and ``collate_multilabel`` drops and counts it. Every image PIL or torchvision reads (16-bit,
palette, alpha, CMYK, grayscale, BMP, TIFF, ...) becomes 8-bit RGB. Annotation files are checked:
categories present, no duplicate id or name, file names inside the image folder (AnnotationError).
All three errors are ``UserError``s: the scripts print them as one line and exit with status 2.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.augment import sample_seed
from src.data.class_names import COCO_2014_CATEGORIES  # re-exported: one list, in class_names
from src.data.decode import BadImageError, check_jpeg_complete, decode_rgb
from src.data.labels import LabelEntry, LabelListError, escape_problem, read_label_list
from src.errors import UserError

__all__ = [
    "NUS_NUM_CLASSES",
    "COCO_2014_CATEGORIES",
    "MissingImageError",
    "AnnotationError",
    "RawBatch",
    "coco_categories",
    "check_class_set",
    "MultiLabelImages",
    "collate_multilabel",
    "label_list_dataset",
    "coco_entries_from_instances",
    "coco_num_classes",
    "coco_category_names",
    "coco_dataset",
    "split_holdout",
]

NUS_NUM_CLASSES = 81

_log = logging.getLogger(__name__)


class MissingImageError(UserError, FileNotFoundError):
    """An image file named by a data file that does not exist."""


class AnnotationError(UserError, ValueError):
    """A COCO annotation file that is missing, malformed or inconsistent; the message names it."""



class RawBatch(list):
    """The undecoded images of a batch (1-D uint8 byte tensors) and ``names``, their file paths: the GPU
    decoder names the file when one is bad."""

    def __init__(self, images: Sequence[torch.Tensor] = (), names: Sequence[str] | None = None):
        super().__init__(images)
        self.names = list(names) if names is not None else None


class MultiLabelImages(Dataset):
    """Images ``image_dir / entry.name`` with multi-hot targets over ``num_classes`` classes.

    raw=True returns the file bytes as a 1-D uint8 tensor (for a GPU decoder), after only the cheap
    ``check_jpeg_complete`` test; it takes no transform and no skip_bad_images (both need decoding).
    The tensor's ``file_name`` attribute holds its path; ``collate_multilabel`` gathers them into the
    batch's ``RawBatch.names``.
    ``source`` (the label list or annotation file) is named in error messages.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        entries: Sequence[LabelEntry],
        num_classes: int,
        transform: Callable[[torch.Tensor], object] | None = None,
        raw: bool = False,
        skip_bad_images: bool = False,
        source: str = "",
        class_names: Sequence[str] | None = None,
    ):
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if raw and skip_bad_images:
            raise ValueError("skip_bad_images needs decoding here; raw=True returns undecoded bytes")
        if raw and transform is not None:
            raise ValueError("raw=True returns undecoded bytes; a transform cannot apply to them")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        where = source or "entries"
        for k, e in enumerate(entries):
            bad = [i for i in e.labels if not 0 <= i < num_classes]
            if bad:
                raise LabelListError(
                    f"{where}: entry {k} ({e.name!r}): class index {bad[0]} out of range [0, {num_classes})"
                )
        self.image_dir = Path(image_dir)
        self.entries = list(entries)
        self.num_classes = num_classes
        self.transform = transform
        self.raw = raw
        self.skip_bad_images = skip_bad_images
        self.source = source
        self.class_names = list(class_names) if class_names is not None else None
        self.augment_seed: tuple[int, int] | None = None  # (seed, epoch): see set_augment_epoch

    def set_augment_epoch(self, seed: int, epoch: int) -> None:
        """From now on, sample i's random augmentation is drawn from a generator seeded by
        ``sample_seed(seed, epoch, i)`` (for a transform with ``accepts_generator``, as ``train_transform``):
        it depends on (seed, epoch, i) only, not on the worker count or which worker loads it. DataLoader
        workers get a copy of the dataset when an epoch's iteration starts (persistent_workers=False), so call
        this before iterating."""
        self.augment_seed = (int(seed), int(epoch))

    def _transform(self, image, index: int):
        if self.augment_seed is not None and getattr(self.transform, "accepts_generator", False):
            g = torch.Generator().manual_seed(sample_seed(*self.augment_seed, index))
            return self.transform(image, generator=g)
        return self.transform(image)

    def __len__(self) -> int:
        return len(self.entries)

    def path(self, index: int) -> Path:
        return self.image_dir / self.entries[index].name

    def target(self, index: int) -> torch.Tensor:
        """Float32 multi-hot (C,) of sample ``index``."""
        t = torch.zeros(self.num_classes, dtype=torch.float32)
        t[list(self.entries[index].labels)] = 1.0
        return t

    def targets_matrix(self) -> torch.Tensor:
        """All targets as an (N, C) float32 multi-hot matrix, without touching the images."""
        rows = [k for k, e in enumerate(self.entries) for _ in e.labels]
        cols = [i for e in self.entries for i in e.labels]
        t = torch.zeros(len(self.entries), self.num_classes, dtype=torch.float32)
        t[torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)] = 1.0
        return t

    def _read(self, path: Path) -> np.ndarray:
        listed = f" (listed in {self.source})" if self.source else ""
        try:
            return np.fromfile(path, dtype=np.uint8)
        except FileNotFoundError:
            raise MissingImageError(f"image file not found: {path}{listed}") from None
        except OSError as e:  # a folder, no permission, an I/O error
            raise BadImageError(path, f"cannot read it{listed}: {e.strerror or e}") from None

    def __getitem__(self, index: int):
        index = int(index)
        if not 0 <= index < len(self.entries):
            raise IndexError(f"index {index} out of range for {len(self.entries)} samples")
        path = self.path(index)
        data = self._read(path)
        try:
            if self.raw:
                check_jpeg_complete(data, path)
                image = torch.from_numpy(data)
                image.file_name = str(path)
            else:
                image = decode_rgb(data, path)
        except BadImageError as e:
            if not self.skip_bad_images:
                raise
            _log.warning("skipping %s", e)
            return None
        if self.transform is not None:
            image = self._transform(image, index)
        return image, self.target(index), index

    def check_images(self, max_names: int = 10) -> None:
        """Raise one MissingImageError listing the missing image files (count + the first few)."""
        missing = [e.name for e in self.entries if not (self.image_dir / e.name).is_file()]
        if missing:
            listed = f" listed in {self.source}" if self.source else ""
            more = f", ... ({len(missing) - max_names} more)" if len(missing) > max_names else ""
            raise MissingImageError(
                f"{len(missing)} of {len(self.entries)} image files{listed} are missing from "
                f"{self.image_dir}: {', '.join(missing[:max_names])}{more}"
            )


def collate_multilabel(batch: list) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor, torch.Tensor, int]:
    """DataLoader collate_fn: drop None (skipped bad images) and return
    ``(images, targets, indices, num_skipped)``.

    images: stacked (B, ...) tensor, or a RawBatch of 1-D byte tensors for raw samples; targets (B, C)
    float32; indices (B,) int64. If every item was skipped, images and targets are empty tensors
    with B = 0.
    """
    kept = [item for item in batch if item is not None]
    num_skipped = len(batch) - len(kept)
    if not kept:
        return torch.empty(0), torch.empty(0, 0), torch.empty(0, dtype=torch.long), num_skipped
    images, targets, indices = zip(*kept)
    if isinstance(images[0], torch.Tensor) and images[0].dim() == 1:
        names = [getattr(t, "file_name", None) for t in images]
        images_out: torch.Tensor | list[torch.Tensor] = RawBatch(images, names if None not in names else None)
    else:
        images_out = torch.stack(images)
    return images_out, torch.stack(targets), torch.tensor(indices, dtype=torch.long), num_skipped


def label_list_dataset(
    image_dir: str | os.PathLike, list_file: str | os.PathLike, num_classes: int, **kw
) -> MultiLabelImages:
    """A dataset from a label list file (the official code's COCO_missing_dataset), validated on read."""
    entries = read_label_list(list_file, num_classes)
    return MultiLabelImages(image_dir, entries, num_classes, source=str(list_file), **kw)


def _load_coco(ann_file: str | os.PathLike):
    try:
        from pycocotools.coco import COCO  # lazy: optional, only COCO instances files need it
    except ImportError as e:
        raise ImportError("reading COCO instances files needs pycocotools (pip install pycocotools)") from e
    if not Path(ann_file).is_file():
        raise AnnotationError(f"COCO annotation file not found: {ann_file}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "loading annotations..." banners
            return COCO(str(ann_file))
    except (ValueError, KeyError, TypeError, AttributeError, AssertionError) as e:  # Assertion: not a JSON object
        raise AnnotationError(f"{ann_file}: not a COCO instances file ({type(e).__name__}: {e})") from None


def _checked_categories(raw, ann_file) -> list[tuple[int, str]]:
    """(id, name) of every category of a COCO ``categories`` list, sorted by id; AnnotationError for a
    missing or malformed list and for a repeated id or name (either would shift the class indices)."""
    if raw is None:
        raise AnnotationError(f"{ann_file}: no 'categories' list (a COCO instances file has one)")
    if not isinstance(raw, list) or not raw:
        raise AnnotationError(f"{ann_file}: 'categories' must be a non-empty list")
    cats: dict[int, str] = {}
    by_name: dict[str, int] = {}
    for k, c in enumerate(raw):
        if not (isinstance(c, dict) and isinstance(c.get("id"), int) and isinstance(c.get("name"), str)):
            raise AnnotationError(f"{ann_file}: categories[{k}] needs an integer 'id' and a string 'name': {c!r}")
        cid, name = c["id"], c["name"]
        if cid in cats:
            raise AnnotationError(f"{ann_file}: category id {cid} appears twice ({cats[cid]!r} and {name!r})")
        if name in by_name:
            raise AnnotationError(f"{ann_file}: category name {name!r} appears twice (ids {by_name[name]} and {cid})")
        cats[cid], by_name[name] = name, cid
    return sorted(cats.items())


def coco_categories(ann_file: str | os.PathLike) -> list[tuple[int, str]]:
    """(id, name) of the categories of a COCO instances file, sorted by id (= class index order)."""
    if not Path(ann_file).is_file():
        raise AnnotationError(f"COCO annotation file not found: {ann_file}")
    try:
        data = json.loads(Path(ann_file).read_bytes())
    except (ValueError, OSError) as e:
        raise AnnotationError(f"{ann_file}: not a JSON file ({e})") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{ann_file}: not a COCO instances file (a JSON object)")
    return _checked_categories(data.get("categories"), ann_file)


def _format_categories(cats) -> str:
    shown = ", ".join(f"{i} {n!r}" for i, n in cats[:5])
    return shown + (f" and {len(cats) - 5} more" if len(cats) > 5 else "")


def check_class_set(categories: Sequence[tuple[int, str]], ann_file, reference: str | os.PathLike | None = None
                    ) -> None:
    """The categories of ``ann_file`` must be the full class set, where one is at hand: the annotations
    ``reference`` (e.g. instances_train2014.json beside the val file) if that file exists, else the 80
    COCO 2014 categories when every category of ``ann_file`` is one of them. A category missing (or one
    too many) would shift every class index after it: AnnotationError naming them."""
    have = list(categories)
    official = set(COCO_2014_CATEGORIES)
    if set(have) <= official and len(have) == len(official):
        return
    if reference is not None and Path(reference).is_file():
        expected, what = coco_categories(reference), str(reference)
    elif set(have) <= official:
        expected, what = list(COCO_2014_CATEGORIES), "the 80 COCO 2014 categories"
    else:
        return
    lacking = [c for c in expected if c not in set(have)]
    extra = [c for c in have if c not in set(expected)]
    if lacking or extra:
        parts = ([f"lacks {_format_categories(lacking)}"] if lacking else []) + \
                ([f"has {_format_categories(extra)} in addition"] if extra else [])
        raise AnnotationError(f"{ann_file}: its categories differ from {what}: {'; '.join(parts)} "
                              "(class indices would shift)")


def _coco_entries(coco, ann_file) -> tuple[list[LabelEntry], list[tuple[int, str]]]:
    """Entries and (id, name) categories of a loaded COCO file. Class index of a category = rank of its id
    among the sorted category ids (0 = person for COCO)."""
    cats = _checked_categories(coco.dataset.get("categories"), ann_file)
    index = {c: i for i, (c, _) in enumerate(cats)}
    entries: list[LabelEntry] = []
    seen: set[str] = set()
    for img_id in sorted(coco.imgToAnns):
        if img_id not in coco.imgs:
            raise AnnotationError(f"{ann_file}: annotations refer to image id {img_id}, which is not in 'images'")
        labels = set()
        for ann in coco.imgToAnns[img_id]:
            if ann.get("category_id") not in index:
                raise AnnotationError(
                    f"{ann_file}: annotation {ann.get('id')} has category_id {ann.get('category_id')}, "
                    "which is not in 'categories'"
                )
            labels.add(index[ann["category_id"]])
        name = coco.imgs[img_id].get("file_name")
        problem = escape_problem(name) if isinstance(name, str) else "file_name must be a string"
        if problem:
            raise AnnotationError(f"{ann_file}: image id {img_id}: file_name {name!r}: {problem}")
        if name in seen:
            raise AnnotationError(f"{ann_file}: file_name {name!r} belongs to two images")
        seen.add(name)
        entries.append(LabelEntry(name, tuple(sorted(labels))))
    if not entries:
        raise AnnotationError(f"{ann_file}: no annotated images")
    return entries, cats


def coco_entries_from_instances(ann_file: str | os.PathLike) -> tuple[list[LabelEntry], list[str]]:
    """Label entries of the images with at least one annotation (sorted by image id), and the
    category names in class-index order. 82,081 images for instances_train2014.json, 40,137 for val."""
    entries, cats = _coco_entries(_load_coco(ann_file), ann_file)
    return entries, [name for _, name in cats]


def coco_category_names(ann_file: str | os.PathLike) -> list[str]:
    """Category names in class-index order (sorted category id)."""
    return [name for _, name in coco_categories(ann_file)]


def coco_num_classes(ann_file: str | os.PathLike) -> int:
    """Number of categories in a COCO instances file (80 for COCO 2014)."""
    return len(coco_categories(ann_file))


def coco_dataset(image_dir: str | os.PathLike, ann_file: str | os.PathLike,
                 reference: str | os.PathLike | None = None, **kw) -> MultiLabelImages:
    """A COCO split from its instances file: images with at least one annotation, targets = the
    categories present (the official code's max over its area-bucketed (3, C) tensor).
    ``.class_names`` holds the category names; ``reference``: see ``check_class_set``."""
    entries, cats = _coco_entries(_load_coco(ann_file), ann_file)
    check_class_set(cats, ann_file, reference)
    names = [name for _, name in cats]
    return MultiLabelImages(image_dir, entries, len(names), source=str(ann_file), class_names=names, **kw)


def split_holdout(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic held-out split of ``range(n)``: round(n * val_fraction) indices (at least one
    when val_fraction > 0) drawn by ``numpy.random.default_rng(seed)``; both lists sorted."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(n * val_fraction)
    if val_fraction > 0:
        n_val = max(n_val, 1)
    if n_val >= n and n > 0:
        raise ValueError(f"val_fraction {val_fraction} of {n} samples leaves no training sample")
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())
