"""The one output rule of the project's commands: an output never destroys data.

Every file that validate.py, infer.py, the label-list tool (with its converters) and the plot tools write goes
through an ``Outputs``, which holds three rules:

1. **Never onto an input of the same command.** The inputs are collected, not listed case by case: every file
   the process opens for reading while the ``Outputs`` is open (a ``sys.addaudithook`` hook on ``open``: the
   checkpoint, annotation files, label lists, the ``--classes`` file, images decoded in the main process, ...),
   every argument value that names an existing file (``Outputs(args=...)``), and any path the command adds. An
   output that is the same file as an input (same device and inode, so a symbolic or hard link counts too) is
   refused, even with ``--overwrite``.
2. **Never over a file that the same kind of command did not write**, unless ``--overwrite`` is given. Each
   output has a ``Kind`` that recognises its own files: a JSON object whose first key ``written_by`` names the
   command (read from the file's first bytes), a scores CSV (``image,<class>...`` header, probabilities in its
   rows), a scores .npz (its three arrays), a PNG whose ``Source`` text chunk names the tool. An output folder (``--out-dir``) is taken only when it does not
   exist or is empty (``claim_folder``).
3. **Atomically**: temporary file, fsync, rename (``src.io_utils.atomic_write``).

A refusal is an ``OutputError`` (a UserError: one ``error:`` line naming the flag and the file, exit status 2),
raised before the file is touched. Commands check their outputs once before the work (what is known then) and
again just before writing (every input read since).
"""
from __future__ import annotations

import csv
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable

from src.errors import UserError
from src.io_utils import atomic_write

__all__ = ["SCORE_SUFFIXES", "OutputError", "Kind", "Outputs", "json_kind", "stamped", "png_kind", "png_metadata", "SCORES_CSV",
           "SCORES_NPZ", "ANY_NEW_FILE", "MARKER_KEY", "PNG_MARKER_KEY"]

MARKER_KEY = "written_by"  # the key of a JSON output that names the command that wrote it
PNG_MARKER_KEY = "Source"  # the PNG text chunk that names the tool that drew it


class OutputError(UserError, FileExistsError):
    """An output that would overwrite an input, or an existing file the command did not write."""


@dataclass(frozen=True)
class Kind:
    """What a command writes at one flag: ``what`` (for messages) and ``recognise(path)``: whether an existing
    file is one the same kind of command wrote (then it may be replaced without --overwrite)."""
    what: str
    recognise: Callable[[Path], bool]


def _read_head(path: Path, size: int = 1 << 20) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


_MARKER_AT_START = re.compile(r'\A\s*\{\s*"' + MARKER_KEY + r'"\s*:\s*("(?:[^"\\]|\\.)*")')


def _json_marker(path: Path) -> Any:
    """The ``written_by`` value of a JSON object that starts with it (as ``stamped`` writes it), read from the
    file's first bytes only (an annotation file can be hundreds of MB); None for any other file."""
    found = _MARKER_AT_START.match(_read_head(path, 4096).decode("utf-8", "replace"))
    return json.loads(found.group(1)) if found else None


def json_kind(command: str) -> Kind:
    """A JSON object written by ``command``: its first key is ``written_by`` (write it with ``stamped``)."""
    return Kind(f"a JSON file of {command} (with \"{MARKER_KEY}\": \"{command}\")",
                lambda p: _json_marker(p) == command)


def stamped(command: str, obj: dict) -> str:
    """``obj`` as JSON text (one line per key) with the marker of ``command`` first."""
    return json.dumps({MARKER_KEY: command, **obj}, indent=1) + "\n"


def _is_scores_csv(path: Path) -> bool:
    """The scores CSV of ``src.inference.write_scores``: header ``image,<class>...[,target:<class>...]``, then
    rows of a name, probabilities written as floats ('0.25', '1.0', '3e-05') and targets 0/1."""
    rows = list(csv.reader(_read_head(path).decode("utf-8").splitlines()[:3]))
    if len(rows) < 2 or len(rows[0]) < 2 or rows[0][0] != "image":
        return False
    return all(len(r) == len(rows[0]) and all(_score_cell(column, v) for column, v in zip(rows[0][1:], r[1:]))
               for r in rows[1:])


def _score_cell(column: str, value: str) -> bool:
    if column.startswith("target:"):
        return value in ("0", "1")
    return any(c in value for c in ".e") and 0.0 <= float(value) <= 1.0


def _is_scores_npz(path: Path) -> bool:
    import numpy as np  # lazy: only this check needs it here

    with np.load(path, allow_pickle=False) as z:
        return {"images", "class_names", "scores"} <= set(z.files)


def png_kind(tool: str) -> Kind:
    """A PNG drawn by ``tool`` (its ``Source`` text chunk; pass ``png_metadata(tool)`` to savefig)."""
    def recognise(path: Path) -> bool:
        from PIL import Image  # lazy: only this check needs it here

        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get(PNG_MARKER_KEY) == tool
    return Kind(f"a PNG drawn by {tool}", recognise)


def png_metadata(tool: str) -> dict[str, str]:
    """matplotlib's ``savefig(metadata=...)`` that marks a PNG as drawn by ``tool``."""
    return {PNG_MARKER_KEY: tool}


SCORES_CSV = Kind("a scores CSV (header image,<class names>; rows of probabilities)", _is_scores_csv)
SCORES_NPZ = Kind("a scores .npz (arrays images, class_names, scores)", _is_scores_npz)
SCORE_SUFFIXES = (".npz", ".csv")  # the file names a scores file may have (src.inference.write_scores)
ANY_NEW_FILE = Kind("a new file", lambda p: False)  # nothing existing is taken without --overwrite


# ----------------------------------------------------------------------------- collecting the inputs

_open_recorders: list["Outputs"] = []
_hook_installed = False


def _record_opened(event: str, args: tuple) -> None:
    """Audit hook: a file opened for reading while an Outputs is open is one of its command's inputs."""
    if event != "open" or not _open_recorders:
        return
    path, _mode, flags = args
    if isinstance(path, (str, bytes, os.PathLike)) and (flags or 0) & os.O_ACCMODE == os.O_RDONLY:
        recorder = _open_recorders[-1]
        if not recorder._paused:
            recorder._opened.add(os.path.abspath(os.fsdecode(path)))


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` leads to, None when there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _path_values(value: Any) -> Iterable[str]:
    if isinstance(value, (str, os.PathLike)):
        yield os.fspath(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _path_values(v)


class Outputs:
    """The output rule for one command run: ``with Outputs(overwrite, args=vars(args), skip=(...)) as out:``.

    ``args``: the parsed arguments; every value (or list item) that names an existing file is an input, except
    the values of the keys in ``skip`` (the output flags themselves). ``inputs``: more input paths."""

    def __init__(self, overwrite: bool = False, args: dict | None = None, skip: Iterable[str] = (),
                 inputs: Iterable[str | os.PathLike] = ()):
        self.overwrite = overwrite
        self._opened: set[str] = set()
        self._claimed: dict[str, str] = {}  # output path -> the flag that names it
        self._paused = False
        skip = set(skip)
        named = [p for k, v in (args or {}).items() if k not in skip for p in _path_values(v)]
        self._given: list[str] = [p for p in [*named, *map(os.fspath, inputs)] if os.path.isfile(p)]

    def __enter__(self) -> "Outputs":
        global _hook_installed
        if not _hook_installed:
            sys.addaudithook(_record_opened)
            _hook_installed = True
        _open_recorders.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _open_recorders.remove(self)

    def add_inputs(self, paths: Iterable[str | os.PathLike]) -> None:
        self._given.extend(os.fspath(p) for p in paths)

    def _is_input(self, out: Path) -> bool:
        target = _identity(out)
        return target is not None and any(_identity(p) == target for p in [*self._given, *self._opened])

    def _recognised(self, path: Path, kind: Kind) -> bool:
        self._paused = True  # reading the old output to recognise it does not make it an input
        try:
            return bool(kind.recognise(path))
        except Exception:  # unreadable or not in the kind's format (a bad zip, a bad PNG, ...): not recognised,
            return False  # so it is refused without --overwrite: the safe side
        finally:
            self._paused = False

    def check(self, flag: str, path: str | os.PathLike | None, kind: Kind) -> None:
        """OutputError unless ``path`` (given at ``flag``) may be written: not another flag's output, not an input,
        and new, of ``kind``, or --overwrite given. None: no such output."""
        if path is None:
            return
        path = Path(path)
        other = self._claimed.setdefault(os.path.abspath(path), flag)
        if other != flag:
            raise OutputError(f"{flag} {path} is also the {other} output: give each output its own file")
        if self._is_input(path):
            raise OutputError(f"{flag} {path} is one of the inputs of this command: writing it would destroy "
                              f"it; give {flag} a new file name")
        if os.path.lexists(path) and not path.is_file():
            raise OutputError(f"{flag} {path} exists and is not a regular file; give {flag} a new file name")
        if path.exists() and not self.overwrite and not self._recognised(path, kind):
            raise OutputError(f"{flag} {path} exists and is not {kind.what}: refusing to replace it; give {flag} "
                              "a new file name, or pass --overwrite to replace it")

    def write(self, flag: str, path: str | os.PathLike, kind: Kind, write: Callable[[IO[bytes]], Any]) -> Path:
        """``check`` (with every input read so far), then ``atomic_write(path, write)``."""
        self.check(flag, path, kind)
        return atomic_write(path, write)

    def write_text(self, flag: str, path: str | os.PathLike, kind: Kind, text: str) -> Path:
        return self.write(flag, path, kind, lambda f: f.write(text.encode("utf-8")))

    def claim_folder(self, flag: str, folder: str | os.PathLike) -> Path:
        """An output folder: refused when it exists and holds anything (unless --overwrite) or is a file."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{flag} {folder} is a file, not a folder")
        if folder.is_dir() and any(folder.iterdir()) and not self.overwrite:
            raise OutputError(f"{flag} {folder} exists and is not empty: refusing to write into it (its files may "
                              f"be in use, e.g. by runs trained on them); give {flag} a new folder, or pass "
                              "--overwrite to replace its files")
        return folder
