"""The label structure of a training set and its missing-label lists, as a markdown table.

For a fully labelled list of N images over C classes and the paper's lists made from it:

    classes (with positives)   C, and how many classes have at least one positive
    labels per image           (sum of labels) / N
    most / least frequent      max_c n_c / min_c n_c over the classes with n_c > 0 (n_c = positives of c);
                               classes with no positive are counted as absent, not divided by
    missing share (list L)     (positives of the full list - positives of L) / (N C - positives of L):
                               the share of L's unobserved entries that are missing positives

The missing share is the base rate a pseudo-labelling of L's unobserved entries starts from. ``make_toy_coco``
prints the table for the toy's train split beside the official COCO lists (dataset/).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from src.data.labels import LabelEntry, read_label_list

__all__ = ["MISSING_LISTS", "label_structure", "read_label_structure", "format_structure_table"]

MISSING_LISTS = ("0.4left", "singlelabel")


def _positives_per_class(entries: Sequence[LabelEntry], num_classes: int) -> np.ndarray:
    labels = [c for e in entries for c in e.labels]
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def _missing_share(full: Sequence[LabelEntry], observed: Sequence[LabelEntry], num_classes: int,
                   source: str) -> float:
    """(full positives - observed positives) / (N C - observed positives); ``observed`` must be a sub-list."""
    truth = {e.name: set(e.labels) for e in full}
    if len(observed) != len(truth):
        raise ValueError(f"{source}: {len(observed)} images, but the full list has {len(truth)}")
    for e in observed:
        if e.name not in truth or not set(e.labels) <= truth[e.name]:
            raise ValueError(f"{source}: {e.name} is not in the full list or has labels the full list lacks")
    kept = sum(len(e.labels) for e in observed)
    total = sum(len(s) for s in truth.values())
    return (total - kept) / (len(truth) * num_classes - kept)


def label_structure(full: Sequence[LabelEntry], observed: Mapping[str, Sequence[LabelEntry]],
                    num_classes: int, source: str = "") -> dict:
    """The table's numbers for one column: ``observed`` maps a list key (e.g. '0.4left') to its entries."""
    if not full:
        raise ValueError(f"{source}: empty full list")
    n_c = _positives_per_class(full, num_classes)
    present = n_c[n_c > 0]
    return {
        "images": len(full),
        "classes": num_classes,
        "present": int(present.size),
        "labels_per_image": float(n_c.sum()) / len(full),
        "most_least": float(present.max() / present.min()),
        "missing_share": {k: _missing_share(full, v, num_classes, f"{source} {k}".strip())
                          for k, v in observed.items()},
    }


def read_label_structure(folder: str | os.PathLike, num_classes: int, prefix: str = "coco") -> dict:
    """:func:`label_structure` of FOLDER/{prefix}_train_full.txt and its 0.4left and singlelabel lists."""
    path = {k: Path(folder) / f"{prefix}_train_{k}.txt" for k in ("full", *MISSING_LISTS)}
    full = read_label_list(path["full"], num_classes)
    observed = {k: read_label_list(path[k], num_classes) for k in MISSING_LISTS}
    return label_structure(full, observed, num_classes, source=str(Path(folder)))


def _classes_cell(s: dict) -> str:
    absent = s["classes"] - s["present"]
    return f"{s['classes']} ({s['present']}" + (f"; {absent} absent)" if absent else ")")


def _ratio_cell(r: float) -> str:
    return f"{r:.0f} : 1" if r >= 10 else f"{r:.1f} : 1"


def format_structure_table(columns: Mapping[str, dict]) -> str:
    """Markdown table, one column per :func:`label_structure` result (column title -> result)."""
    rows = [("images", lambda s: f"{s['images']:,}"),
            ("classes (with positives)", _classes_cell),
            ("labels per image", lambda s: f"{s['labels_per_image']:.2f}"),
            ("most / least frequent class (classes with positives)", lambda s: _ratio_cell(s["most_least"]))]
    for key in MISSING_LISTS:
        rows.append((f"missing positives / unobserved entries, {key}",
                     lambda s, key=key: f"{100 * s['missing_share'][key]:.2f}%"))
    lines = ["| | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    lines += [f"| {name} | " + " | ".join(cell(s) for s in columns.values()) + " |" for name, cell in rows]
    return "\n".join(lines)
