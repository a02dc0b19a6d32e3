"""Unlabelled image files for inference: finding them on the command line, and a dataset that reports bad ones.

``find_images(paths, recursive)`` turns files and folders into a list of image files (a folder's images in
sorted order, its subfolders too with ``recursive``, symlinked ones included, each real folder once).
``ImageFiles`` decodes with the training datasets' decoder (``MultiLabelImages``) and, instead of raising inside a
DataLoader worker, hands an unreadable or corrupt file back as ``(path, reason)`` in the batch, so that the caller
decides: stop naming it, or skip it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from src.data.datasets import MultiLabelImages
from src.data.decode import BadImageError
from src.data.labels import LabelEntry
from src.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "ImagePathError", "find_images", "ImageFiles", "collate_images"]

# What the datasets' decoder reads (torchvision.io, else PIL), as a folder's images are recognised.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")


class ImagePathError(UserError, ValueError):
    """A path on the command line that is missing, or a folder without images."""


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _walk(folder: Path) -> list[Path]:
    """Every file under ``folder``, symlinked subfolders followed, each real folder visited once (a link back to
    a folder above is not followed again, so loops end)."""
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        found += [Path(root) / name for name in files]
    return found


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    found = _walk(folder) if recursive else folder.iterdir()
    images = sorted(p for p in found if _is_image(p))
    if not images:
        hint = ""
        if not recursive and any(p.is_dir() for p in folder.iterdir()):
            hint = " (it has subfolders: add --recursive to search them)"
        raise ImagePathError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder{hint}")
    return images


def find_images(paths: Sequence[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Image files named by ``paths``: a file is taken as it is (whatever its suffix; the decoder judges it),
    a folder gives its images with the suffixes in IMAGE_SUFFIXES (case-insensitive), sorted by path.
    ImagePathError names a path that does not exist or a folder that holds no image."""
    images: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            images += _folder_images(p, recursive)
        elif p.exists():
            images.append(p)
        else:
            raise ImagePathError(f"{p}: no such file or folder")
    return images


class ImageFiles(Dataset):
    """Images to score: sample i = ``(image, i, None)``, or ``(None, i, reason)`` for a file that cannot be
    read or decoded (missing, unreadable, corrupt, not an image); ``reason`` names the file.

    ``transform`` applies to the decoded uint8 RGB tensor (3, H, W), as in the labelled datasets.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], transform: Callable[[torch.Tensor], object] | None):
        self.paths = [Path(p) for p in paths]
        # The labelled dataset's reader and decoder, with no labels; "." / path is the path as given.
        entries = [LabelEntry(str(p), ()) for p in self.paths]
        self._images = MultiLabelImages(".", entries, num_classes=1, transform=transform)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image, _target, _ = self._images[index]
        except (BadImageError, FileNotFoundError) as e:  # missing, unreadable (a folder, no permission), corrupt
            return None, index, str(e)
        return image, index, None


def collate_images(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """``(images (B, ...), indices (B,), bad)``: the decoded samples stacked, and ``bad`` = [(index, reason)]
    for the samples that failed (B = 0 when all did)."""
    good = [(image, i) for image, i, reason in batch if reason is None]
    bad = [(i, reason) for _image, i, reason in batch if reason is not None]
    images = torch.stack([image for image, _ in good]) if good else torch.empty(0)
    return images, torch.tensor([i for _, i in good], dtype=torch.long), bad
