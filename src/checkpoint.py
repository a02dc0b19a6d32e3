"""Checkpoints: what train.py writes (last.ckpt, best.ckpt) and what validate.py / infer.py read.

A project checkpoint is a dict with ``format == CHECKPOINT_FORMAT``. last.ckpt holds everything needed
for an exact resume; best.ckpt holds the better of the model and its EMA (``which`` says which). Both
are written atomically (temporary file, fsync, rename) and hold only tensors and plain Python values
(dicts, lists, tuples, str, int, float, bool, None): every file is read with
``torch.load(weights_only=True)``, which cannot run code. A file that needs more (a pickled class or
function) is refused with a CheckpointError saying what it needs; a last.ckpt of this project's first
format (numpy's RNG state pickled as an ndarray) gets the one-off conversion command
(``python -m src.tools.upgrade_checkpoint OLD NEW``, which reads it safely too).
"""
from __future__ import annotations

import json
import random
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from src.errors import UserError
from src.io_utils import atomic_torch_save

CHECKPOINT_FORMAT = "robust-loss-mlml/1"
# What a last.ckpt of the first format needs beyond plain types: numpy's RNG state as an ndarray (and
# numpy scalars in its metrics). Only this decides which message a refused file gets; nothing is loaded.
_OLD_FORMAT_GLOBALS = re.compile(r"numpy\.(_core|core)\.multiarray\.(_reconstruct|scalar)|numpy\.ndarray|numpy\.dtype"
                                 r"|numpy\.dtypes\.\w+DType")
UPGRADE_COMMAND = "python -m src.tools.upgrade_checkpoint"
# The exact numpy types the upgrade allows the safe unpickler to build (arrays, dtypes and scalars are data).
_OLD_FORMAT_NUMPY_GLOBALS = [
    np.ndarray, np.dtype, *{type(np.dtype(c)) for c in "?bhilqBHILQefdgSU"},
    *[(fn, f"numpy.{core}.multiarray.{fn.__name__}") for core in ("_core", "core")
      for fn in (np._core.multiarray._reconstruct, np._core.multiarray.scalar)],
]


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, torn, corrupt, unsafe, incomplete, or does not match the model or run."""


def plain(value: Any) -> Any:
    """``value`` as JSON's plain types (dicts, lists, str, numbers, bool, None); other objects become str.
    For args, metrics and history, so that a checkpoint never pickles anything but plain values."""
    return json.loads(json.dumps(value, default=str))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` (tagged with the format) atomically to ``path``."""
    return atomic_torch_save({"format": CHECKPOINT_FORMAT, **state}, path)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _unsafe_globals(path: Path, error: BaseException) -> list[str]:
    """The classes and functions the file's pickle imports beyond plain types, read without running it."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # torch < 2.5, or a bare pickle rather than a torch zip file
        return re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(error))


def _is_old_format(path: Path, needed: list[str]) -> bool:
    """A last.ckpt of this project's first format: the format tag, and nothing unsafe beyond numpy's arrays."""
    if not needed or not all(_OLD_FORMAT_GLOBALS.fullmatch(g) for g in needed):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            pickled = next(n for n in z.namelist() if n.endswith("data.pkl"))
            return CHECKPOINT_FORMAT.encode() in z.read(pickled)
    except (OSError, zipfile.BadZipFile, StopIteration):
        return False


def _refusal(path: Path, error: BaseException) -> str:
    needed = _unsafe_globals(path, error)
    if _is_old_format(path, needed):
        return (f"{path} is a last.ckpt in this project's old format (numpy's RNG state pickled as an array, "
                f"which plain safe loading refuses); convert it once (safely): "
                f"{UPGRADE_COMMAND} {path} NEW.ckpt")
    if needed:
        shown = ", ".join(needed[:3]) + (f" and {len(needed) - 3} more" if len(needed) > 3 else "")
        why = f"its pickle imports {shown}, which could run code"
    else:
        why = f"its pickle is not plain data ({_first_line(error).replace('WeightsUnpickler error: ', '')})"
    return (f"refused to load {path}: {why}; only tensors and plain Python values are loaded "
            "(torch.load weights_only=True)")


def load_file(path: str | Path, extra_safe_globals: list | None = None) -> Any:
    """torch.load(weights_only=True) on the CPU. A missing, torn, corrupt or unsafe file is a CheckpointError
    naming it (an unsafe one: what it would import). ``extra_safe_globals``: data types the safe unpickler may
    also build (torch.serialization.safe_globals), for the old-format upgrade only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(extra_safe_globals or []):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torn zip, truncated pickle, not a torch file, or refused by the safe unpickler
        if "Weights only load failed" in str(e) or "WeightsUnpickler" in str(e):
            raise CheckpointError(_refusal(path, e)) from None
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {_first_line(e)}") from None


def load_checkpoint(path: str | Path, required: Iterable[str] = ()) -> dict[str, Any]:
    """Load a project checkpoint (a dict tagged with CHECKPOINT_FORMAT) that holds every key in ``required``."""
    obj = load_file(path)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint written by this project's train.py")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is incomplete: it lacks {', '.join(missing)}")
    return obj


def load_weights(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict load_state_dict whose failure names the file and the first offending keys."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).splitlines()
        raise CheckpointError(f"{source} does not match the model: " + " ".join(first[:3])[:600]) from e


def rng_state() -> dict[str, Any]:
    """The RNG states of Python, numpy and torch (CPU and every CUDA device), as tensors and plain values."""
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state(saved: Any) -> tuple:
    if isinstance(saved, dict):
        return ("MT19937", saved["keys"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"],
                saved["cached_gaussian"])
    return saved  # numpy's own tuple (a state taken in this process, or an old-format file being upgraded)


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def upgrade_checkpoint(old: str | Path, new: str | Path) -> Path:
    """Rewrite a first-format checkpoint so that it loads with weights_only=True.

    The old file is read with weights_only=True too, allowing just the numpy array, dtype and scalar types its
    numpy RNG state and metrics need (nothing that can run code). numpy's RNG state becomes a tensor; args,
    history and best become plain values.
    """
    obj = load_file(old, extra_safe_globals=_OLD_FORMAT_NUMPY_GLOBALS)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{old} is not a checkpoint written by this project's train.py")
    if isinstance(obj.get("rng"), dict) and isinstance(obj["rng"].get("numpy"), tuple):
        _, keys, pos, has_gauss, cached = obj["rng"]["numpy"]
        obj["rng"]["numpy"] = {"keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos),
                               "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    for key in ("args", "history", "best"):
        if key in obj:
            obj[key] = plain(obj[key])
    path = atomic_torch_save(obj, new)
    load_file(path)  # the result must load safely
    return path
