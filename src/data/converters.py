"""Other datasets' annotations -> the project's label lists: Pascal VOC, CUB-200-2011 attributes, and a CSV.

Each reader returns a ``Converted``: the class names (class index = position), the image lists of each split
(``LabelEntry`` lists, names relative to the image folder) and the images it left out, each with the
``file:line`` (or file) and the reason. The label-list tool (``python -m src.tools.make_missing_labels``) writes
them and prints what was left out.

**Images with no positive label are left out** of the splits, and reported: the paper's COCO lists and NUS-WIDE's
training list hold only images with at least one positive, and a single-positive list cannot be drawn for them.
CUB's test split is the exception: it keeps every image, as Cole et al.'s ``preproc/format_cub.py`` does.

``check_converted`` then checks what the lists will hold (the label-list tool calls it before writing): every
listed image is a file under the image folder (``--allow-missing``: those that are not are left out, counted and
named), every split holds an image, and no held-out split shares an image with the training split.

- **Pascal VOC** (2007 or 2012, a ``VOCdevkit/VOC20xx`` folder): the image ids of
  ``ImageSets/Main/{train,val,trainval,test}.txt`` (those present), labelled from ``Annotations/<id>.xml``: class
  c is positive when some ``<object>`` is named c. The image is ``<id>.jpg`` under ``JPEGImages/``. The 20
  classes in VOC's order (``VOC_CLASSES``). ``difficult="positive"`` (default, the common choice) counts an
  object marked ``<difficult>1</difficult>`` like any other; ``"negative"`` ignores it, which gives VOC's own
  per-class lists (``<class>_<split>.txt``) read as "1 = positive": those mark an image whose only objects of
  the class are difficult with 0, and Cole et al.'s ``preproc/format_pascal.py`` keeps only the 1s.
- **CUB-200-2011 attributes** (the multi-label task of Cole et al., CVPR 2021): 312 binary attributes, names
  from ``attributes.txt`` (in ``attributes/`` or next to ``CUB_200_2011/``), images from ``images.txt``,
  official split from ``train_test_split.txt`` (1 = train), labels from
  ``attributes/image_attribute_labels.txt`` (``image_id attribute_id is_present certainty_id time``). Attribute
  a is positive when ``is_present`` is 1 and ``certainty_id >= min_certainty`` (1 not visible, 2 guessing,
  3 probably, 4 definitely). The default ``min_certainty=1`` uses ``is_present`` alone, as Cole et al.'s
  ``preproc/format_cub.py`` does (it reads only ``attribute_id`` and ``is_present``). Fields after the fourth
  are not read.
- **CSV** of ``filename,labels``: one image per row (``csv`` module quoting), the label names separated by
  ``label_sep`` (default: whitespace). The first row of each CSV is a header with ``header=True`` and an image with
  ``header=False``; with ``header=None`` (neither ``--csv-header`` nor ``--no-csv-header``) a first row that names
  no image (no image suffix, no such file under ``images``) is an error asking to choose, and ``header=True`` on a
  first row that names an image is an error too (it would drop a real row). Class order: the given class names,
  else sorted (default, so the indices do not depend on row order) or first-seen. Names differing only in case
  are an error. The same file given for training and test is an error.
"""
from __future__ import annotations

import csv
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from src.data.labels import LabelEntry, name_problem
from src.errors import UserError
from src.io_utils import read_text_lines

__all__ = ["VOC_CLASSES", "VOC_SPLITS", "CUB_CERTAINTIES", "ConverterError", "Converted", "read_voc", "read_cub",
           "read_label_csv", "csv_class_names", "check_converted"]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_SPLITS = ("train", "val", "trainval", "test")
# The VOC splits that share images with a training split by design (trainval = train + val).
VOC_OVERLAPS = {"trainval": ("train", "val"), "train": ("trainval",), "val": ("trainval",), "test": ()}
CUB_CERTAINTIES = {1: "not visible", 2: "guessing", 3: "probably", 4: "definitely"}
CUB_NUM_ATTRIBUTES = 312


class ConverterError(UserError, ValueError):
    """An annotation file that is missing or malformed; the message names the file (and line)."""


@dataclass
class Converted:
    """What a reader found: ``splits`` (split name -> entries, in the source's order), the class names,
    which split trains (``train_split``), ``left_out`` ('file:line: reason' per image left out), ``sources``
    (split -> the file it was read from), ``image_root`` (the folder the names are relative to), ``held_out``
    (the splits that must share no image with the training split) and ``missing`` (images with no file, left
    out by ``check_converted(allow_missing=True)``)."""
    class_names: list[str]
    splits: dict[str, list[LabelEntry]]
    train_split: str
    left_out: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    image_root: Path | None = None
    held_out: tuple[str, ...] = ()
    missing: list[str] = field(default_factory=list)


def _entry(name: str, labels: Sequence[int], where: str, kept: list[LabelEntry], left_out: list[str],
           keep_empty: bool = False) -> None:
    """Append (name, labels) to ``kept``; one with no positive label is noted in ``left_out`` instead, unless
    ``keep_empty``."""
    if labels or keep_empty:
        kept.append(LabelEntry(name, tuple(labels)))
    else:
        left_out.append(f"{where}: {name}: no positive label")


def _case_clashes(names: Sequence[str], source: str) -> None:
    """ConverterError naming ``source`` when two class names differ only in case ('Cat' and 'cat')."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise ConverterError(f"{source}: the class names {other!r} and {name!r} differ only in case: spell them "
                                 "the same (or give --classes with the names in use)")


# ----------------------------------------------------------------------------- what the lists will hold

def check_converted(converted: Converted, allow_missing: bool = False) -> Converted:
    """Check what the lists will hold: every listed image is a file under ``image_root`` (with ``allow_missing``,
    those that are not are left out and named in ``missing``), every split holds an image, and no held-out split
    shares an image with the training split. A failure is a ConverterError naming the file."""
    if converted.image_root is not None:
        _drop_missing(converted, allow_missing)
    for split, entries in converted.splits.items():
        if not entries:
            raise ConverterError(f"{converted.sources.get(split, split)}: the {split} split holds no image "
                                 f"(with a positive label{' and a file' if converted.missing else ''})")
    train = {os.path.normpath(e.name) for e in converted.splits[converted.train_split]}
    for split in converted.held_out:
        shared = [e.name for e in converted.splits.get(split, []) if os.path.normpath(e.name) in train]
        if shared:
            raise ConverterError(f"{converted.sources[split]} and {converted.sources[converted.train_split]} share "
                                 f"{len(shared)} images (first: {shared[0]}): the {split} images would also train; "
                                 "give disjoint splits")
    return converted


def _drop_missing(converted: Converted, allow_missing: bool) -> None:
    root = converted.image_root
    if not root.is_dir():
        raise ConverterError(f"{root}: no such folder (the images the lists name)")
    missing = {e.name for entries in converted.splits.values() for e in entries if not (root / e.name).is_file()}
    if missing and not allow_missing:
        first = ", ".join(sorted(missing)[:3])
        raise ConverterError(f"{root}: {len(missing)} listed images have no file there (first: {first}); restore "
                             "them, or pass --allow-missing to leave them out")
    converted.missing = sorted(missing)
    converted.splits = {s: [e for e in entries if e.name not in missing] for s, entries in converted.splits.items()}


# ----------------------------------------------------------------------------- Pascal VOC

def _voc_labels(xml_path: Path, difficult: str) -> list[int]:
    """The sorted class indices of one VOC annotation file."""
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise ConverterError(f"{xml_path}: no such annotation file") from None
    except ET.ParseError as e:
        raise ConverterError(f"{xml_path}:{e.position[0]}: malformed XML ({e})") from None
    labels: set[int] = set()
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise ConverterError(f"{xml_path}: object {k + 1} has class {name!r}, not one of VOC's 20 classes")
        if difficult == "negative" and (obj.findtext("difficult") or "0").strip() == "1":
            continue
        labels.add(VOC_CLASSES.index(name))
    return sorted(labels)


def read_voc(root: str | os.PathLike, difficult: str = "positive", train_split: str | None = None) -> Converted:
    """The splits of ``ImageSets/Main/`` present under a ``VOCdevkit/VOC20xx`` folder, labelled from its XML.

    ``train_split``: the split to train on (default: 'trainval' when 'test.txt' exists, as for VOC 2007,
    else 'train', as for VOC 2012, whose val split is then the test set)."""
    root = Path(root)
    if difficult not in ("positive", "negative"):
        raise ValueError(f"difficult must be 'positive' or 'negative', got {difficult!r}")
    sets = root / "ImageSets" / "Main"
    if not sets.is_dir():
        raise ConverterError(f"{root}: no ImageSets/Main folder (expected a VOCdevkit/VOC20xx folder)")
    present = [s for s in VOC_SPLITS if (sets / f"{s}.txt").is_file()]
    if train_split is None:
        train_split = "trainval" if "test" in present else "train"
    if train_split not in present:
        raise ConverterError(f"{sets / (train_split + '.txt')}: no such image-set file (the training split)")
    held_out = tuple(s for s in present if s != train_split and s not in VOC_OVERLAPS[train_split])
    if not any(s in held_out for s in ("val", "test")):
        raise ConverterError(f"{sets}: no test split apart from the training split {train_split} (test.txt, or "
                             "val.txt when training on train.txt: trainval holds val)")
    converted = Converted(list(VOC_CLASSES), {}, train_split, image_root=root / "JPEGImages", held_out=held_out)
    left_out: dict[str, str] = {}  # image id -> its note: an image in two split files is one image left out
    for split in present:
        path = sets / f"{split}.txt"
        converted.sources[split] = str(path)
        converted.splits[split] = _voc_split(root, path, difficult, left_out)
    converted.left_out.extend(left_out.values())
    return converted


def _voc_split(root: Path, path: Path, difficult: str, left_out: dict[str, str]) -> list[LabelEntry]:
    """The labelled images of one image-set file (an id listed twice is an error naming both lines); an image
    with no positive label is noted in ``left_out`` under its id, once whatever the files that list it."""
    entries: list[LabelEntry] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(read_text_lines(path, ConverterError), 1):
        image_id = line.strip()
        if not image_id or len(image_id.split()) != 1 or name_problem(image_id + ".jpg"):
            raise ConverterError(f"{path}:{number}: expected one image id per line: {line!r}")
        if first_line.setdefault(image_id, number) != number:
            raise ConverterError(f"{path}:{number}: image id {image_id} repeats line {first_line[image_id]}")
        xml = root / "Annotations" / f"{image_id}.xml"
        notes: list[str] = []
        _entry(f"{image_id}.jpg", _voc_labels(xml, difficult), f"{path}:{number}", entries, notes)
        for note in notes:
            left_out.setdefault(image_id, note)
    return entries


# ----------------------------------------------------------------------------- CUB-200-2011

def _cub_table(path: Path, fields: int) -> list[tuple[int, list[str]]]:
    """(line number, its first ``fields`` whitespace-separated fields) for each line of ``path``."""
    rows = []
    for number, line in enumerate(read_text_lines(path, ConverterError), 1):
        parts = line.split(None, fields - 1) if fields == 2 else line.split()
        if len(parts) < fields:
            raise ConverterError(f"{path}:{number}: expected {fields} fields: {line!r}")
        rows.append((number, parts[:fields]))
    return rows


def _cub_int(path: Path, number: int, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ConverterError(f"{path}:{number}: {text!r} is not a positive integer")
    return int(text)


def _cub_attribute_names(root: Path) -> list[str]:
    """The 312 names of attributes.txt ('<id> <name>', ids 1..312 in order)."""
    candidates = [root / "attributes" / "attributes.txt", root / "attributes.txt", root.parent / "attributes.txt"]
    real_parent = root.resolve().parent  # a symlinked CUB_200_2011: next to the folder it points to, too
    if real_parent != root.parent.resolve():
        candidates.append(real_parent / "attributes.txt")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ConverterError(f"{root}: no attributes.txt (looked for {', '.join(map(str, candidates))})")
    names = []
    for number, (attr_id, name) in _cub_table(path, 2):
        if _cub_int(path, number, attr_id) != len(names) + 1:
            raise ConverterError(f"{path}:{number}: attribute id {attr_id}, expected {len(names) + 1}")
        names.append(name.strip())
    if len(names) != CUB_NUM_ATTRIBUTES:
        raise ConverterError(f"{path}: {len(names)} attributes, CUB-200-2011 has {CUB_NUM_ATTRIBUTES}")
    return names


def _cub_positives(path: Path, images: dict[int, str], min_certainty: int) -> dict[int, set[int]]:
    """image id -> its positive attribute indices (0-based) from image_attribute_labels.txt, which must hold
    each image's 312 rows, each attribute once (a file cut short is an error naming it)."""
    positives: dict[int, set[int]] = {i: set() for i in images}
    rows: dict[int, set[int]] = {i: set() for i in images}
    for number, fields in _cub_table(path, 4):
        image_id, attr_id, present, certainty = (_cub_int(path, number, f) for f in fields)
        if image_id not in images:
            raise ConverterError(f"{path}:{number}: image id {image_id} is not in images.txt")
        if not 1 <= attr_id <= CUB_NUM_ATTRIBUTES or present > 1 or certainty not in CUB_CERTAINTIES:
            raise ConverterError(f"{path}:{number}: expected attribute 1..312, is_present 0/1, certainty 1..4: "
                                 f"{' '.join(fields)}")
        if attr_id in rows[image_id]:
            raise ConverterError(f"{path}:{number}: image {image_id} has a second row for attribute {attr_id}")
        rows[image_id].add(attr_id)
        if present == 1 and certainty >= min_certainty:
            positives[image_id].add(attr_id - 1)
    short = [i for i in images if len(rows[i]) != CUB_NUM_ATTRIBUTES]
    if short:
        raise ConverterError(f"{path}: {len(short)} images lack attribute rows (image {short[0]} has "
                             f"{len(rows[short[0]])} of {CUB_NUM_ATTRIBUTES}): the file is cut short or damaged; "
                             "restore it from the CUB-200-2011 archive")
    return positives


def read_cub(root: str | os.PathLike, min_certainty: int = 1) -> Converted:
    """CUB-200-2011's 312 attributes as labels, split 'train' / 'test' by train_test_split.txt (``root`` holds
    images.txt; the image names are relative to ``root/images``)."""
    root = Path(root)
    if min_certainty not in CUB_CERTAINTIES:
        raise ValueError(f"min_certainty must be 1..4, got {min_certainty}")
    names = _cub_attribute_names(root)
    images_txt = root / "images.txt"
    images = {}
    for number, (image_id, name) in _cub_table(images_txt, 2):
        problem = name_problem(name.strip())
        if problem:
            raise ConverterError(f"{images_txt}:{number}: {problem}: {name!r}")
        images[_cub_int(images_txt, number, image_id)] = name.strip()
    split_txt = root / "train_test_split.txt"
    is_train = {}
    for number, (image_id, flag) in _cub_table(split_txt, 2):
        if flag.strip() not in ("0", "1") or _cub_int(split_txt, number, image_id) not in images:
            raise ConverterError(f"{split_txt}:{number}: expected '<image id of images.txt> 0|1'")
        is_train[int(image_id)] = flag.strip() == "1"
    if set(is_train) != set(images):
        raise ConverterError(f"{split_txt}: {len(set(images) - set(is_train))} images of images.txt have no split")
    positives = _cub_positives(root / "attributes" / "image_attribute_labels.txt", images, min_certainty)
    converted = Converted(names, {"train": [], "test": []}, "train", sources={"train": str(split_txt),
                          "test": str(split_txt)}, image_root=root / "images", held_out=("test",))
    for image_id, name in images.items():
        split = "train" if is_train[image_id] else "test"
        _entry(name, sorted(positives[image_id]), f"{images_txt} (image {image_id})", converted.splits[split],
               converted.left_out, keep_empty=split == "test")  # every test image, as Cole et al. keep them
    return converted


# ----------------------------------------------------------------------------- CSV

def _csv_records(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank row of a CSV file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConverterError(f"{path}: no such file") from None
    except (UnicodeDecodeError, OSError) as e:
        raise ConverterError(f"{path}: cannot read as UTF-8 text ({e})") from None
    reader = csv.reader(text.splitlines())
    return [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]


def _names_an_image(name: str, images: Path | None) -> bool:
    """Whether a CSV's first cell looks like an image: an image suffix, or a file under ``images``."""
    from src.data.image_files import IMAGE_SUFFIXES  # here: that module loads torch, the tool's -h does not
    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        return images is not None and bool(name) and (images / name).is_file()
    except (OSError, ValueError):
        return False


def _is_header(path: Path, number: int, row: list[str], header: bool | None, images: Path | None) -> bool:
    """Whether the first row is a header: as ``header`` says, checked against what the row looks like; with
    ``header=None``, a row that names no image is an error asking the user to choose."""
    name = row[0].strip()
    looks_like_image = _names_an_image(name, images)
    if header is None and not looks_like_image:
        where = f" and no file under {images}" if images is not None else ""
        raise ConverterError(f"{path}:{number}: the first row {','.join(row)!r} names no image (no image suffix"
                             f"{where}): pass --csv-header if it is a header row, or --no-csv-header if it is an image")
    if header and looks_like_image:
        raise ConverterError(f"{path}:{number}: --csv-header, but the first row names an image ({name!r}), which "
                             "would be dropped: pass --no-csv-header if the file has no header row")
    return bool(header)


def _csv_rows(path: Path, label_sep: str | None, header: bool | None,
              images: Path | None = None) -> list[tuple[str, str, list[str]]]:
    """(where, file name, label names) for each row of a ``filename,labels`` CSV (``header``: see _is_header)."""
    records = _csv_records(path)
    if records and _is_header(path, *records[0], header, images):
        records = records[1:]
    rows = []
    for number, row in records:
        where = f"{path}:{number}"
        if len(row) != 2:
            raise ConverterError(f"{where}: expected 2 fields 'filename,labels', got {len(row)} (separate the "
                                 "labels with --label-sep, not with a comma, or quote the field)")
        name = row[0].strip()
        problem = name_problem(name)
        if problem:
            raise ConverterError(f"{where}: {problem}: {row[0]!r}")
        labels = [s.strip() for s in (row[1].split(label_sep) if label_sep else row[1].split())]
        rows.append((where, name, [s for s in labels if s]))
    return rows


def csv_class_names(rows: Iterable[tuple[str, str, list[str]]], order: str) -> list[str]:
    """The label names of ``rows``, 'sorted' (by code point) or in 'first-seen' order."""
    seen: dict[str, None] = {}
    for _, _, labels in rows:
        seen.update(dict.fromkeys(labels))
    if order == "sorted":
        return sorted(seen)
    if order == "first-seen":
        return list(seen)
    raise ValueError(f"order must be 'sorted' or 'first-seen', got {order!r}")


def _csv_entries(rows, index: dict[str, int], classes_source: str, converted: Converted) -> list[LabelEntry]:
    entries: list[LabelEntry] = []
    first_row: dict[str, str] = {}
    for where, name, labels in rows:
        if name in first_row:
            raise ConverterError(f"{where}: {name!r} repeats {first_row[name]}")
        first_row[name] = where
        unknown = [s for s in labels if s not in index]
        if unknown:
            raise ConverterError(f"{where}: class {unknown[0]!r} is not in {classes_source}")
        if len(set(labels)) != len(labels):
            raise ConverterError(f"{where}: a class is named twice: {labels}")
        _entry(name, sorted(index[s] for s in labels), where, entries, converted.left_out)
    return entries


def read_label_csv(paths: Sequence[str | os.PathLike], label_sep: str | None = None, header: bool | None = None,
                   class_names: list[str] | None = None, classes_source: str = "",
                   order: str = "sorted", images: str | os.PathLike | None = None) -> Converted:
    """One CSV (split 'train') or two (a training and a test split, 'train' and 'test'), over one class list:
    ``class_names`` (an unknown name is an error naming file:line) or the names found in all the CSVs.
    ``images``: the folder the file names are relative to (the lists' image folder, checked by check_converted).
    ``header``: True, False, or None (detect; see _is_header)."""
    if not 1 <= len(paths) <= 2:
        raise ValueError(f"one or two CSV files, got {len(paths)}")
    if len(paths) == 2 and _same_file(*paths):
        raise ConverterError(f"{paths[0]} and {paths[1]} are the same file: the test images would also train; give "
                             "the CSV of the test images second")
    images = Path(images) if images is not None else None
    rows = [_csv_rows(Path(p), label_sep, header, images) for p in paths]
    names = class_names if class_names is not None else csv_class_names([r for part in rows for r in part], order)
    if not names:
        raise ConverterError(f"{', '.join(map(str, paths))}: no label names found")
    _case_clashes(names, classes_source or ", ".join(map(str, paths)))
    index = {n: i for i, n in enumerate(names)}
    converted = Converted(list(names), {}, "train", image_root=images, held_out=("test",) if len(paths) == 2 else ())
    for split, part, path in zip(("train", "test"), rows, paths):
        converted.sources[split] = str(path)
        converted.splits[split] = _csv_entries(part, index, classes_source or "the class names", converted)
    return converted


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()
