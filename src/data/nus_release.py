"""The full NUS-WIDE training list, read from the dataset's release files.

The paper's NUS-WIDE training lists are not public; they were made from the release's 81-concept ground
truth. The release (NUS-WIDE, National University of Singapore, 2009) lays it out as::

    Concepts81.txt                              the 81 concepts, one per line (also ConceptsList/Concepts81.txt)
    ImageList/TrainImagelist.txt                the training images, one per line: 'actor\\0001_2124494179.jpg'
    Groundtruth/TrainTestLabels/Labels_<concept>_Train.txt
                                                one 0/1 per line, aligned with TrainImagelist.txt

Class k is the k-th line of Concepts81.txt (0-based; alphabetical, as nus_val.txt's indices are). An image
keeps the concepts whose file says 1; a value other than 0 or 1 is reported and read as 0. Images with none
of the 81 concepts are left out (and counted), as in the official lists, which only hold labelled images.

Image names are the image list's, with '/' for '\\'. With an image folder, each image is instead named by
the file of that folder holding the same Flickr photo id, the second '_'-separated field of a file name
('0001_2124494179.jpg' and '123940_2124494179_5f0a2b91c3_m.jpg' both hold photo 2124494179; the second form
is nus_val.txt's); images with no file there are left out (and counted).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from src.data.labels import LabelEntry
from src.errors import UserError

__all__ = ["NusReleaseError", "NusTrainList", "read_concepts", "photo_id", "read_nus_release"]

CONCEPT_FILES = ("Concepts81.txt", "ConceptsList/Concepts81.txt")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


class NusReleaseError(UserError, ValueError):
    """A release file that is missing or does not fit the layout; the message names it."""


@dataclass
class NusTrainList:
    """The full training list read from a release, and what was left out on the way."""
    entries: list[LabelEntry]
    concepts: list[str]
    unlabelled: int = 0  # images with none of the concepts
    no_image: int = 0  # images with no file in the image folder
    odd_values: list[str] = field(default_factory=list)  # 'file:line: value' of values other than 0/1


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise NusReleaseError(f"{path}: no such file (expected the NUS-WIDE release layout, see dataset/README.md)")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def read_concepts(release: Path) -> list[str]:
    """The concept names, in file order, from RELEASE/Concepts81.txt or RELEASE/ConceptsList/Concepts81.txt."""
    for name in CONCEPT_FILES:
        if (release / name).is_file():
            concepts = _lines(release / name)
            if not concepts or len(set(concepts)) != len(concepts) or "" in concepts:
                raise NusReleaseError(f"{release / name}: expected one distinct concept name per line")
            return concepts
    raise NusReleaseError(f"{release}: no {' or '.join(CONCEPT_FILES)} (expected the NUS-WIDE release layout)")


def photo_id(file_name: str) -> str | None:
    """The Flickr photo id in an image file name (its second '_'-separated field), None if there is none."""
    parts = Path(file_name.replace("\\", "/")).stem.split("_")
    return parts[1] if len(parts) >= 2 and parts[1].isdigit() else None


def _files_by_photo_id(images: Path) -> dict[str, str]:
    if not images.is_dir():
        raise NusReleaseError(f"{images}: no such image folder")
    found: dict[str, str] = {}
    for root, _, files in os.walk(images):
        for name in files:
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES or (pid := photo_id(name)) is None:
                continue
            rel = Path(root, name).relative_to(images).as_posix()
            if pid in found:
                raise NusReleaseError(f"{images}: photo id {pid} is in two files, {found[pid]} and {rel}")
            found[pid] = rel
    return found


def read_nus_release(release: str | os.PathLike, images: str | os.PathLike | None = None,
                     split: str = "Train") -> NusTrainList:
    """The full label list of ``split`` ('Train' or 'Test') from the release folder (layout: module doc)."""
    release = Path(release)
    concepts = read_concepts(release)
    names = [n.replace("\\", "/") for n in _lines(release / "ImageList" / f"{split}Imagelist.txt")]
    labels: list[list[int]] = [[] for _ in names]
    odd: list[str] = []
    for k, concept in enumerate(concepts):
        path = release / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_{split}.txt"
        values = _lines(path)
        if len(values) != len(names):
            raise NusReleaseError(f"{path}: {len(values)} lines, but ImageList/{split}Imagelist.txt lists "
                                  f"{len(names)} images")
        for i, value in enumerate(values):
            if value == "1":
                labels[i].append(k)
            elif value != "0":
                odd.append(f"{path}:{i + 1}: {value!r}")
    out = NusTrainList([], concepts, odd_values=odd)
    by_id = _files_by_photo_id(Path(images)) if images is not None else None
    for name, positives in zip(names, labels):
        if not positives:
            out.unlabelled += 1
            continue
        if by_id is not None:
            name = by_id.get(photo_id(name) or "")
            if name is None:
                out.no_image += 1
                continue
        out.entries.append(LabelEntry(name, tuple(positives)))
    return out
