"""The label lists shipped in dataset/ (those named in dataset/SHA256SUMS): no tool may write over them.

Writing a generated list onto an official one would silently replace the paper's list, and its checksum would
then fail. ``refuse_shipped`` compares resolved paths, so ``./dataset/x``, ``dataset/../dataset/x`` and a
symbolic link to the folder are all caught.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from src.errors import UserError

__all__ = ["SHIPPED_DIR", "ShippedListError", "shipped_lists", "refuse_shipped"]

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "dataset"


class ShippedListError(UserError, FileExistsError):
    """An output path that is one of the shipped lists."""


def shipped_lists(folder: str | os.PathLike | None = None) -> set[Path]:
    """The resolved paths of the files named in ``folder/SHA256SUMS`` ('<sha256>  <name>' lines; default folder:
    ``SHIPPED_DIR``, the repository's dataset/); empty without that file."""
    folder = Path(SHIPPED_DIR if folder is None else folder).resolve()
    try:
        lines = (folder / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return set()
    return {(folder / line.split(None, 1)[1].lstrip("*")).resolve() for line in lines if len(line.split()) >= 2}


def refuse_shipped(paths: Iterable[str | os.PathLike], folder: str | os.PathLike | None = None) -> None:
    """ShippedListError naming the first of ``paths`` that is a shipped list (call it before writing any)."""
    folder = Path(SHIPPED_DIR if folder is None else folder)
    shipped = shipped_lists(folder)
    for path in paths:
        if Path(path).resolve() in shipped:
            raise ShippedListError(f"{path} is an official list shipped in {folder}/ (listed in its SHA256SUMS): "
                                   "refusing to overwrite it; give another --out-dir, e.g. --out-dir my_lists")
