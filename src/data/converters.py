"""Other datasets' annotations -> the project's label lists: Pascal VOC, CUB-200-2011 attributes, and a CSV.

Each reader returns a ``Converted``: the class names (class index = position), the image lists of each split
(``LabelEntry`` lists, names relative to the image folder) and the images it left out, each with the
``file:line`` (or file) and the reason. The label-list tool (``python -m src.tools.make_missing_labels``) writes
them and prints what was left out.

**Images with no positive label are left out** of every split, and reported: the paper's COCO lists, NUS-WIDE's
training list and Cole et al.'s formatted datasets all hold only images with at least one positive, and a
single-positive list cannot be drawn for them.

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
  ``label_sep`` (default: whitespace); with ``header``, the first row of every CSV is skipped. Class order:
  the given class names, else sorted (default, so the indices do not depend on row order) or first-seen.
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
           "read_label_csv", "csv_class_names"]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_SPLITS = ("train", "val", "trainval", "test")
CUB_CERTAINTIES = {1: "not visible", 2: "guessing", 3: "probably", 4: "definitely"}
CUB_NUM_ATTRIBUTES = 312


class ConverterError(UserError, ValueError):
    """An annotation file that is missing or malformed; the message names the file (and line)."""


@dataclass
class Converted:
    """What a reader found: ``splits`` (split name -> entries, in the source's order), the class names,
    which split trains (``train_split``) and ``left_out`` ('file:line: reason' per image left out)."""
    class_names: list[str]
    splits: dict[str, list[LabelEntry]]
    train_split: str
    left_out: list[str] = field(default_factory=list)


def _entry(name: str, labels: Sequence[int], where: str, kept: list[LabelEntry], left_out: list[str]) -> None:
    """Append (name, labels) to ``kept``, or note it in ``left_out`` when it has no positive label."""
    if labels:
        kept.append(LabelEntry(name, tuple(labels)))
    else:
        left_out.append(f"{where}: {name}: no positive label")


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
    if not any(s in present for s in ("val", "test") if s != train_split):
        raise ConverterError(f"{sets}: neither val.txt nor test.txt (a test split is needed)")
    converted = Converted(list(VOC_CLASSES), {}, train_split)
    for split in present:
        path = sets / f"{split}.txt"
        entries: list[LabelEntry] = []
        for number, line in enumerate(read_text_lines(path, ConverterError), 1):
            image_id = line.strip()
            if not image_id or len(image_id.split()) != 1 or name_problem(image_id + ".jpg"):
                raise ConverterError(f"{path}:{number}: expected one image id per line: {line!r}")
            xml = root / "Annotations" / f"{image_id}.xml"
            _entry(f"{image_id}.jpg", _voc_labels(xml, difficult), f"{path}:{number}", entries,
                   converted.left_out)
        converted.splits[split] = entries
    return converted


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
    """image id -> its positive attribute indices (0-based) from image_attribute_labels.txt."""
    positives: dict[int, set[int]] = {i: set() for i in images}
    for number, fields in _cub_table(path, 4):
        image_id, attr_id, present, certainty = (_cub_int(path, number, f) for f in fields)
        if image_id not in images:
            raise ConverterError(f"{path}:{number}: image id {image_id} is not in images.txt")
        if not 1 <= attr_id <= CUB_NUM_ATTRIBUTES or present > 1 or certainty not in CUB_CERTAINTIES:
            raise ConverterError(f"{path}:{number}: expected attribute 1..312, is_present 0/1, certainty 1..4: "
                                 f"{' '.join(fields)}")
        if present == 1 and certainty >= min_certainty:
            positives[image_id].add(attr_id - 1)
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
    converted = Converted(names, {"train": [], "test": []}, "train")
    for image_id, name in images.items():
        split = "train" if is_train[image_id] else "test"
        _entry(name, sorted(positives[image_id]), f"{images_txt} (image {image_id})", converted.splits[split],
               converted.left_out)
    return converted


# ----------------------------------------------------------------------------- CSV

def _csv_rows(path: Path, label_sep: str | None, header: bool) -> list[tuple[str, str, list[str]]]:
    """(where, file name, label names) for each row of a ``filename,labels`` CSV."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConverterError(f"{path}: no such file") from None
    except (UnicodeDecodeError, OSError) as e:
        raise ConverterError(f"{path}: cannot read as UTF-8 text ({e})") from None
    rows = []
    reader = csv.reader(text.splitlines())
    for row in reader:
        number = reader.line_num
        if (header and number == 1) or not any(cell.strip() for cell in row):
            continue
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


def read_label_csv(paths: Sequence[str | os.PathLike], label_sep: str | None = None, header: bool = False,
                   class_names: list[str] | None = None, classes_source: str = "",
                   order: str = "sorted") -> Converted:
    """One CSV (split 'train') or two (a training and a test split, 'train' and 'test'), over one class list:
    ``class_names`` (an unknown name is an error naming file:line) or the names found in all the CSVs."""
    if not 1 <= len(paths) <= 2:
        raise ValueError(f"one or two CSV files, got {len(paths)}")
    rows = [_csv_rows(Path(p), label_sep, header) for p in paths]
    names = class_names if class_names is not None else csv_class_names([r for part in rows for r in part], order)
    if not names:
        raise ConverterError(f"{', '.join(map(str, paths))}: no label names found")
    index = {n: i for i, n in enumerate(names)}
    converted = Converted(list(names), {}, "train")
    for split, part in zip(("train", "test"), rows):
        converted.splits[split] = _csv_entries(part, index, classes_source or "the class names", converted)
    return converted
