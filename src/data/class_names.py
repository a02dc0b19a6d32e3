"""Class names: MS-COCO 2014's 80 categories, NUS-WIDE's 81 concepts, plain index names, and reading a
``--classes FILE``.

MS-COCO 2014's categories are listed as (category id, name), as in instances_{train,val}2014.json: ids run
1..90 with 10 gaps, and the class index of the official label lists is the rank of the id (0 = person,
79 = toothbrush). The names and ids are facts about the dataset (Lin et al., ECCV 2014).

NUS-WIDE's concepts are listed in the order of the dataset's Concepts81.txt (alphabetical), which is the
class-index order of the official label lists (nus_val.txt: index 55 = sky, 13 = clouds, 42 = person are
its most frequent labels, as NUS-WIDE's published statistics say). The names are facts about the dataset
(NUS-WIDE, National University of Singapore, CIVR 2009); no code is taken from elsewhere.

A ``--classes`` file holds one class name per line, in class-index order (line 1 = class 0). Surrounding
whitespace is stripped and a final newline is optional; an empty line or a repeated name is an error
naming the file and line.
"""
from __future__ import annotations

import os
from pathlib import Path

from src.data.shipped import refuse_shipped
from src.errors import UserError
from src.io_utils import atomic_write_text, read_text_lines

__all__ = ["COCO_2014_CATEGORIES", "NUS_WIDE_CLASSES", "ClassNamesError", "read_class_names", "read_classes_flag",
           "index_names", "check_class_names", "write_class_names"]

# id -> name, None where COCO 2014 has no category (ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83).
_COCO_NAMES_BY_ID: tuple[str | None, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", None, "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", None, "backpack", "umbrella", None, None, "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", None, "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", None, "dining table", None, None, "toilet", None, "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", None,
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
# The 80 MS-COCO 2014 categories (id, name) in id order: position = class index of the official lists.
COCO_2014_CATEGORIES: tuple[tuple[int, str], ...] = tuple(
    (i, n) for i, n in enumerate(_COCO_NAMES_BY_ID, start=1) if n is not None)

NUS_WIDE_CLASSES: tuple[str, ...] = (
    "airport", "animal", "beach", "bear", "birds", "boats", "book", "bridge", "buildings", "cars",
    "castle", "cat", "cityscape", "clouds", "computer", "coral", "cow", "dancing", "dog", "earthquake",
    "elk", "fire", "fish", "flags", "flowers", "food", "fox", "frost", "garden", "glacier",
    "grass", "harbor", "horses", "house", "lake", "leaf", "map", "military", "moon", "mountain",
    "nighttime", "ocean", "person", "plane", "plants", "police", "protest", "railroad", "rainbow", "reflection",
    "road", "rocks", "running", "sand", "sign", "sky", "snow", "soccer", "sports", "statue",
    "street", "sun", "sunset", "surf", "swimmers", "tattoo", "temple", "tiger", "tower", "town",
    "toys", "train", "tree", "valley", "vehicle", "water", "waterfall", "wedding", "whales", "window",
    "zebra",
)


class ClassNamesError(UserError, ValueError):
    """A class-name file that is missing, unreadable or malformed, or names that do not fit the model."""


def read_class_names(path: str | os.PathLike, num_classes: int | None = None) -> list[str]:
    """The names in ``path``, one per line; with ``num_classes``, their count must equal it."""
    path = Path(path)
    lines = read_text_lines(path, ClassNamesError)  # trailing blank lines are not names
    names: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            raise ClassNamesError(f"{path}, line {number}: empty class name")
        if name in first_line:
            raise ClassNamesError(f"{path}, line {number}: {name!r} repeats line {first_line[name]}")
        first_line[name] = number
        names.append(name)
    if not names:
        raise ClassNamesError(f"{path}: no class names (one per line expected)")
    if num_classes is not None and len(names) != num_classes:
        raise ClassNamesError(f"{path}: {len(names)} class names, but the model has {num_classes} classes")
    return names


def read_classes_flag(path: str | os.PathLike | None, num_classes: int | None = None) -> list[str] | None:
    """The names of a ``--classes FILE`` (None without one); the error names the flag, file and line."""
    if path is None:
        return None
    try:
        return read_class_names(path, num_classes)
    except ClassNamesError as e:
        raise ClassNamesError(f"--classes {e}") from None


def index_names(num_classes: int) -> list[str]:
    """'0', '1', ...: the names used when the real ones are unknown."""
    return [str(i) for i in range(num_classes)]


def check_class_names(names: list[str], num_classes: int, source: str) -> list[str]:
    """``names`` as a list of str, or ClassNamesError naming ``source`` when they do not fit."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ClassNamesError(f"{source}: class names must be a list of strings")
    if len(names) != num_classes:
        raise ClassNamesError(f"{source}: {len(names)} class names for {num_classes} classes")
    return list(names)


def write_class_names(path: str | os.PathLike, names: list[str]) -> Path:
    """Write ``names`` one per line (the ``--classes`` format), atomically; each must read back as itself."""
    refuse_shipped([path])
    seen: set[str] = set()
    for k, name in enumerate(names):
        if not name or name != name.strip() or "\n" in name or "\r" in name or name in seen:
            raise ClassNamesError(f"{path}: class {k} name {name!r} is empty, repeated, or has surrounding "
                                  "whitespace or a line break")
        seen.add(name)
    return atomic_write_text(path, "".join(n + "\n" for n in names))
