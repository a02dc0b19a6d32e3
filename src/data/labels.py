"""Label lists in the official code's format: the one place that reads and writes them.

One image per line::

    COCO_train2014_000000480023.jpg,0 52
    COCO_train2014_000000050518.jpg, 0 8 13 41 52 60

The file is UTF-8 text; a leading byte-order mark and CRLF line ends (as some editors write) read the same
as without. ``name,i j k``: an image file name (relative to the image folder; it may hold sub-folders but no
comma, as in the official code, which splits the line at its first comma), then 0-based class
indices separated by whitespace. A space after the comma is allowed (43,185 of the 82,081 official
COCO lines have one). A line ``name,`` with no indices is allowed: an image with no annotated
positive label. Blank lines are allowed only at the end of the file. COCO indices follow the 80
categories sorted by category id (0 = person); NUS-WIDE lists use 81 classes.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from src.data.shipped import refuse_shipped
from src.errors import UserError
from src.io_utils import atomic_write_text, read_text_lines

__all__ = [
    "LabelListError",
    "LabelEntry",
    "parse_label_line",
    "read_label_list",
    "write_label_list",
    "format_label_line",
    "label_stats",
    "name_problem",
    "escape_problem",
    "list_fingerprint",
    "describe_list_change",
]


class LabelListError(UserError, ValueError):
    """A label list (or entry) that does not follow the format; the message names ``path:line``."""


@dataclass(frozen=True)
class LabelEntry:
    """One image: its file name relative to the image folder and its positive class indices."""

    name: str
    labels: tuple[int, ...]


def escape_problem(name: str) -> str | None:
    """Why the file name ``name``, read from a data file, would leave its image folder, or None: it must be
    non-empty and relative, with no '..' part and no control character (NUL, tab, ...) or byte-order mark (checked
    on the text, before any file is opened)."""
    if not name:
        return "empty file name"
    control = next((c for c in name if ord(c) < 0x20 or c in "\x7f\ufeff"), None)
    if control is not None:  # NUL cannot be in a path at all; the others are invisible and almost surely a typo
        return f"file name holds the control character {control!r}, which no image file name should"
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        return "file name must be relative to the image folder"
    if ".." in name.replace("\\", "/").split("/"):
        return "file name must not leave the image folder ('..')"
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a label-list file name, or None: it stays inside the image folder
    (``escape_problem``) and holds no comma, line break or surrounding whitespace."""
    if name and name != name.strip():
        return "file name has leading or trailing whitespace"
    if "," in name or "\n" in name or "\r" in name:
        return "file name holds a comma or a line break"
    return escape_problem(name)


def _check_labels(labels: Iterable[int], num_classes: int | None) -> str | None:
    """Return why ``labels`` are not valid class indices, or None when they are."""
    seen: set[int] = set()
    for i in labels:
        if i < 0 or (num_classes is not None and i >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            return f"class index {i} out of range {bound}"
        if i in seen:
            return f"class index {i} repeated"
        seen.add(i)
    return None


def parse_label_line(line: str, num_classes: int | None = None) -> LabelEntry:
    """Parse one ``name,i j k`` line (without its line break); raise LabelListError saying why not."""
    name, comma, rest = line.partition(",")
    if not comma:
        raise LabelListError("no comma: expected 'name,i j k'")
    problem = name_problem(name)
    if problem:
        raise LabelListError(problem)
    labels = []
    for tok in rest.split():
        # int() would also take '+1', '٣' or '1_0'; only plain ASCII digits (optional '-') are indices.
        digits = tok[1:] if tok.startswith("-") else tok
        if not (digits.isascii() and digits.isdigit()):
            raise LabelListError(f"class index {tok!r} is not an integer")
        labels.append(int(tok))
    problem = _check_labels(labels, num_classes)
    if problem:
        raise LabelListError(problem)
    return LabelEntry(name, tuple(labels))


def read_label_list(path: str | os.PathLike, num_classes: int | None = None) -> list[LabelEntry]:
    """Read and validate a label list.

    Checks every line: it parses, indices are integers >= 0 (and < ``num_classes`` when given), no
    index repeats within a line, the name is non-empty and relative, and no name repeats in the file.
    Errors are LabelListError naming ``path:line`` and quoting the line.
    """
    path = Path(path)
    lines = read_text_lines(path, LabelListError)
    entries: list[LabelEntry] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        try:
            if not line.strip():
                raise LabelListError("blank line")
            entry = parse_label_line(line, num_classes)
            if entry.name in first_line:
                raise LabelListError(f"file name repeated (first on line {first_line[entry.name]})")
        except LabelListError as e:
            raise LabelListError(f"{path}:{lineno}: {e}: {line!r}") from None
        first_line[entry.name] = lineno
        entries.append(entry)
    return entries


def format_label_line(entry: LabelEntry) -> str:
    """The official format without a space after the comma: ``name,i j k``."""
    return entry.name + "," + " ".join(str(i) for i in entry.labels)


def write_label_list(path: str | os.PathLike, entries: Iterable[LabelEntry]) -> Path:
    """Write ``entries`` as ``name,i j k`` lines, atomically; validate them first so the file reads back.
    A list shipped in dataset/ (named in its SHA256SUMS) is never overwritten (``src.data.shipped``)."""
    refuse_shipped([path])
    lines = []
    seen: set[str] = set()
    for k, e in enumerate(entries):
        problem = name_problem(e.name) or _check_labels(e.labels, None)
        if problem is None and e.name in seen:
            problem = "file name repeated"
        if problem is None and any(type(i) is not int for i in e.labels):
            problem = "class indices must be Python ints"
        if problem:
            raise LabelListError(f"{path}: entry {k} {e!r}: {problem}")
        seen.add(e.name)
        lines.append(format_label_line(e) + "\n")
    return atomic_write_text(path, "".join(lines))


def label_stats(entries: Iterable[LabelEntry]) -> dict:
    """Dataset-table numbers: samples, labels (positives), avg_labels (labels / samples),
    max_index (largest class index, -1 when there is none) and classes_present (distinct indices)."""
    samples = labels = 0
    present: set[int] = set()
    for e in entries:
        samples += 1
        labels += len(e.labels)
        present.update(e.labels)
    return {
        "samples": samples,
        "labels": labels,
        "avg_labels": labels / samples if samples else 0.0,
        "max_index": max(present, default=-1),
        "classes_present": len(present),
    }


def list_fingerprint(entries: Iterable[LabelEntry]) -> dict:
    """What identifies a training list, for checking a resume: its image count and sha256 digests of its
    names in order, of its names as a set (sorted), and of its lines (name and sorted labels) in order."""
    lines, names = hashlib.sha256(), hashlib.sha256()
    all_names = []
    for e in entries:
        names.update(e.name.encode("utf-8") + b"\n")
        lines.update(format_label_line(LabelEntry(e.name, tuple(sorted(e.labels)))).encode("utf-8") + b"\n")
        all_names.append(e.name)
    name_set = hashlib.sha256("".join(n + "\n" for n in sorted(all_names)).encode("utf-8"))
    return {"images": len(all_names), "sha256": lines.hexdigest(), "names_sha256": names.hexdigest(),
            "name_set_sha256": name_set.hexdigest()}


def describe_list_change(saved: dict, current: dict, used: str = "trained on") -> str | None:
    """How the list of fingerprint ``current`` differs from the one of ``saved`` (which the run was ``used``);
    None when it is the same."""
    if saved.get("sha256") == current["sha256"]:
        return None
    if saved.get("images") != current["images"]:
        return f"it has {current['images']} images, the run was {used} {saved.get('images')}"
    if saved.get("name_set_sha256") != current["name_set_sha256"]:
        return "it names other image files"
    if saved.get("names_sha256") != current["names_sha256"]:
        return "the same images are in another order (each image's labels would move to another image)"
    return "the same images in the same order have other labels"
