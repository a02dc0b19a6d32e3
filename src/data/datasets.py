"""Multi-label image datasets: a label list (or COCO instances file) plus an image folder.

A sample is ``(image, target, index)``: ``image`` = ``transform(uint8 RGB tensor (3, H, W))`` (or the
undecoded file bytes with ``raw=True``), ``target`` = float32 multi-hot of shape (C,), ``index`` = the
sample's index in this dataset (also through a ``Subset``), for per-sample label stores.

Bad input is never silently replaced: a missing image raises FileNotFoundError naming it (the
official code returns a black image with all-zero labels), a file the decoder rejects (corrupt,
truncated, not an image) raises BadImageError naming it, unless ``skip_bad_images=True``, where the
sample is logged and returned as None and ``collate_multilabel`` drops and counts it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.labels import LabelEntry, LabelListError, read_label_list

__all__ = [
    "NUS_NUM_CLASSES",
    "BadImageError",
    "MultiLabelImages",
    "collate_multilabel",
    "label_list_dataset",
    "coco_entries_from_instances",
    "coco_num_classes",
    "coco_category_names",
    "coco_dataset",
    "split_holdout",
    "check_jpeg_complete",
]

NUS_NUM_CLASSES = 81

_log = logging.getLogger(__name__)


class BadImageError(RuntimeError):
    """An image file that exists but cannot be decoded (corrupt, truncated, empty, not an image)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: bad image: {reason}")
        self.path = str(path)


def check_jpeg_complete(data: np.ndarray | bytes, path: str | os.PathLike) -> None:
    """Cheap structural check for undecoded bytes: non-empty, and a JPEG (FF D8 FF ...) must hold an
    end-of-image marker (FF D9) after its last start-of-scan marker (FF DA), i.e. it is not cut short.
    Other formats pass; the decoder judges them."""
    buf = bytes(data)
    if not buf:
        raise BadImageError(path, "empty file")
    if buf[:3] == b"\xff\xd8\xff" and buf.rfind(b"\xff\xd9") < buf.rfind(b"\xff\xda"):
        raise BadImageError(path, "JPEG has no end-of-image marker after its last scan (truncated)")


def _decode_rgb(data: np.ndarray, path: Path) -> torch.Tensor:
    """Decode file bytes to a uint8 RGB tensor (3, H, W) with torchvision; BadImageError if it fails."""
    from torchvision.io import ImageReadMode, decode_image

    if data.size == 0:
        raise BadImageError(path, "empty file")
    try:
        # torchvision's JPEG decoder raises on truncated files ("Image is incomplete or truncated").
        return decode_image(torch.from_numpy(data), mode=ImageReadMode.RGB)
    except RuntimeError as e:
        raise BadImageError(path, str(e).strip()) from None


class MultiLabelImages(Dataset):
    """Images ``image_dir / entry.name`` with multi-hot targets over ``num_classes`` classes.

    raw=True returns the file bytes as a 1-D uint8 tensor (for a GPU decoder), after only the cheap
    ``check_jpeg_complete`` test; it takes no transform and no skip_bad_images (both need decoding).
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
        try:
            return np.fromfile(path, dtype=np.uint8)
        except FileNotFoundError:
            listed = f" (listed in {self.source})" if self.source else ""
            raise FileNotFoundError(f"image file not found: {path}{listed}") from None

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
            else:
                image = _decode_rgb(data, path)
        except BadImageError as e:
            if not self.skip_bad_images:
                raise
            _log.warning("skipping %s", e)
            return None
        if self.transform is not None:
            image = self.transform(image)
        return image, self.target(index), index

    def check_images(self, max_names: int = 10) -> None:
        """Raise one FileNotFoundError listing the missing image files (count + the first few)."""
        missing = [e.name for e in self.entries if not (self.image_dir / e.name).is_file()]
        if missing:
            listed = f" listed in {self.source}" if self.source else ""
            more = f", ... ({len(missing) - max_names} more)" if len(missing) > max_names else ""
            raise FileNotFoundError(
                f"{len(missing)} of {len(self.entries)} image files{listed} are missing from "
                f"{self.image_dir}: {', '.join(missing[:max_names])}{more}"
            )


def collate_multilabel(batch: list) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor, torch.Tensor, int]:
    """DataLoader collate_fn: drop None (skipped bad images) and return
    ``(images, targets, indices, num_skipped)``.

    images: stacked (B, ...) tensor, or a list of 1-D byte tensors for raw samples; targets (B, C)
    float32; indices (B,) int64. If every item was skipped, images and targets are empty tensors
    with B = 0.
    """
    kept = [item for item in batch if item is not None]
    num_skipped = len(batch) - len(kept)
    if not kept:
        return torch.empty(0), torch.empty(0, 0), torch.empty(0, dtype=torch.long), num_skipped
    images, targets, indices = zip(*kept)
    if isinstance(images[0], torch.Tensor) and images[0].dim() == 1:
        images_out: torch.Tensor | list[torch.Tensor] = list(images)  # raw bytes, ragged
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
        from pycocotools.coco import COCO
    except ImportError as e:
        raise ImportError("reading COCO instances files needs pycocotools (pip install pycocotools)") from e
    if not Path(ann_file).is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        return COCO(str(ann_file))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{ann_file}: not a COCO instances file ({type(e).__name__}: {e})") from None


def _coco_categories(coco, ann_file) -> tuple[dict[int, int], list[str]]:
    """Class index of a category = rank of its id among the sorted category ids (0 = person for COCO)."""
    cat_ids = sorted(coco.getCatIds())
    if not cat_ids:
        raise ValueError(f"{ann_file}: no categories")
    return {c: i for i, c in enumerate(cat_ids)}, [coco.cats[c]["name"] for c in cat_ids]


def coco_entries_from_instances(ann_file: str | os.PathLike) -> tuple[list[LabelEntry], list[str]]:
    """Label entries of the images with at least one annotation (sorted by image id), and the
    category names in class-index order. 82,081 images for instances_train2014.json, 40,137 for val."""
    coco = _load_coco(ann_file)
    index, names = _coco_categories(coco, ann_file)
    entries: list[LabelEntry] = []
    seen: set[str] = set()
    for img_id in sorted(coco.imgToAnns):
        if img_id not in coco.imgs:
            raise ValueError(f"{ann_file}: annotations refer to image id {img_id}, which is not in 'images'")
        labels = set()
        for ann in coco.imgToAnns[img_id]:
            if ann["category_id"] not in index:
                raise ValueError(
                    f"{ann_file}: annotation {ann.get('id')} has category_id {ann['category_id']}, "
                    "which is not in 'categories'"
                )
            labels.add(index[ann["category_id"]])
        name = coco.imgs[img_id]["file_name"]
        if name in seen:
            raise ValueError(f"{ann_file}: file_name {name!r} belongs to two images")
        seen.add(name)
        entries.append(LabelEntry(name, tuple(sorted(labels))))
    if not entries:
        raise ValueError(f"{ann_file}: no annotated images")
    return entries, names


def coco_category_names(ann_file: str | os.PathLike) -> list[str]:
    """Category names in class-index order (sorted category id)."""
    return _coco_categories(_load_coco(ann_file), ann_file)[1]


def coco_num_classes(ann_file: str | os.PathLike) -> int:
    """Number of categories in a COCO instances file (80 for COCO 2014)."""
    return len(coco_category_names(ann_file))


def coco_dataset(image_dir: str | os.PathLike, ann_file: str | os.PathLike, **kw) -> MultiLabelImages:
    """A COCO split from its instances file: images with at least one annotation, targets = the
    categories present (the official code's max over its area-bucketed (3, C) tensor).
    ``.class_names`` holds the category names."""
    entries, names = coco_entries_from_instances(ann_file)
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
