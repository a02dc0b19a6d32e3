"""Checkpoints: what train.py writes (last.ckpt, best.ckpt) and what validate.py / infer.py read.

A project checkpoint is a dict with ``format == CHECKPOINT_FORMAT``. last.ckpt holds everything needed
for an exact resume; best.ckpt holds the better of the model and its EMA (``which`` says which). Both
are written atomically (temporary file, fsync, rename) and hold only tensors and plain Python values
(dicts, lists, tuples, str, int, float, bool, None): every file is read with
``torch.load(weights_only=True)``, which cannot run code. A file that needs more (a pickled class or
function) is refused with a CheckpointError saying what it needs; a last.ckpt of this project's first
format (numpy's RNG state pickled as an ndarray) gets the one-off conversion command
(``python -m src.tools.upgrade_checkpoint OLD NEW``, which reads it safely too).

Every load checks the file before unpickling it: a zip record whose CRC-32 fails (a flipped bit) or a file that
is no torch file at all (random bytes, JSON) is a CheckpointError naming it, and torch's advice to load with
``weights_only=False`` is never passed on. A project checkpoint whose weights hold NaN or inf is refused too
(``check_finite_weights``), naming the file. A file in torch's legacy format (a bare pickle, as
``torch.save(..., _use_new_zipfile_serialization=False)`` and old torch versions write it) has no checksums: it
loads, with a warning on stderr naming it (``LEGACY_WARNING``), since a damaged one would go unnoticed.
"""
from __future__ import annotations

import json
import random
import re
import sys
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
LEGACY_WARNING = ("warning: {path} is in torch's legacy (non-zip) format, which carries no integrity check: a "
                  "damaged file would load unnoticed; re-save it with torch.save (zip format) to have it checked")
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


# What best.ckpt holds beside its weights: what validate.py and infer.py need to rebuild the model, and the run's flags.
BEST_META_KEYS = ("model_name", "num_classes", "image_size", "class_names", "args")


def best_checkpoint(last: dict[str, Any]) -> dict[str, Any]:
    """The best.ckpt of the epoch a last.ckpt state ``last`` was written at, when that epoch is the run's best
    (``last["best"]``): its model or its EMA, as ``which`` says. The trainer writes best.ckpt with it, and a
    resume rebuilds a best.ckpt that a kill left behind its last.ckpt with it."""
    best = last["best"]
    if best.get("epoch") != last["epoch"]:
        raise ValueError(f"the best epoch ({best.get('epoch')}) is not the checkpoint's ({last['epoch']})")
    weights = last["ema"] if best["which"] == "ema" else last["model"]
    meta = {k: last.get(k, last["args"].get(k)) for k in BEST_META_KEYS}  # a last.ckpt of an older version
    return {"kind": "best", **meta, "model": weights, "which": best["which"],
            "epoch": best["epoch"], "map": float(best["map"])}


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
        why = f"its pickle is not plain data ({_unpickler_reason(error)})"
    return (f"refused to load {path}: {why}; only tensors and plain Python values are loaded "
            "(torch.load weights_only=True)")


def _unpickler_reason(error: BaseException) -> str:
    """What the safe unpickler objected to, without torch's advice to load unsafely (never repeated)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        after = text.split("WeightsUnpickler error:", 1)[1]
        reason = next((line.strip() for line in after.splitlines() if line.strip()), "")
        if reason:
            return reason
    first = _first_line(error)
    return "not plain data" if "weights_only" in first else first


def _check_container(path: Path) -> bool:
    """The file's container before anything is unpickled: torch's zip format (every record's CRC-32 must
    match: torch.load does not check them, so a flipped bit would load as a silently different weight; True), or
    torch's legacy format, which is a pickle (its first byte is the PROTO opcode 0x80; False: nothing can be
    checked). Anything else is not a checkpoint."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise CheckpointError(f"{path} is corrupt ({_first_line(e)}): restore an intact copy") from None
        if bad is not None:
            raise CheckpointError(f"{path} is corrupt: its record {bad} fails its CRC-32 check (damaged on disk "
                                  "or in transfer); restore an intact copy")
        return True
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        raise CheckpointError(f"cannot read checkpoint {path}: a zip file without its end record (cut short or "
                              "damaged, e.g. an interrupted copy); restore an intact copy")
    if not head.startswith(b"\x80"):
        raise CheckpointError(f"{path} is not a checkpoint (neither a PyTorch zip file nor a PyTorch pickle; it "
                              f"starts with {head!r}): pass the .ckpt / .pth file written by torch.save")
    return False


def check_finite_weights(state_dict: Any, source: str | Path) -> None:
    """A state dict whose floating-point tensors are all finite; else a CheckpointError naming ``source`` and
    the first tensors holding NaN or inf (the weights of a run that diverged)."""
    if not isinstance(state_dict, dict):
        return
    bad = [k for k, v in state_dict.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(f"{source} holds non-finite weights (NaN or inf in {shown}): the run diverged "
                              "before it was saved; use an earlier checkpoint, or retrain with a lower --lr")


def load_file(path: str | Path, extra_safe_globals: list | None = None) -> Any:
    """torch.load(weights_only=True) on the CPU, after ``_check_container``. A missing, torn, corrupt (failed
    CRC), foreign (not a torch file) or unsafe file is a CheckpointError naming it (an unsafe one: what it
    would import). ``extra_safe_globals``: data types the safe unpickler may also build
    (torch.serialization.safe_globals), for the old-format upgrade only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not _check_container(path):
        print(LEGACY_WARNING.format(path=path), file=sys.stderr, flush=True)
    try:
        with torch.serialization.safe_globals(extra_safe_globals or []):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torn zip, truncated pickle, not a torch file, or refused by the safe unpickler
        if "Weights only load failed" in str(e) or "WeightsUnpickler" in str(e):
            raise CheckpointError(_refusal(path, e)) from None
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {_unpickler_reason(e)}") from None


def load_checkpoint(path: str | Path, required: Iterable[str] = (), kind: str | None = None) -> dict[str, Any]:
    """Load a project checkpoint (a dict tagged with CHECKPOINT_FORMAT) of ``kind`` ('last' or 'best', None:
    either) that holds every key in ``required`` and whose model (and EMA) weights are finite."""
    obj = load_file(path)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint written by this project's train.py")
    if kind == "last" and obj.get("kind") == "best":
        raise CheckpointError(f"{path} is a best.ckpt: it holds weights only, no optimizer, schedule or RNG state, "
                              f"so it cannot continue a run; resume from last.ckpt ({Path(path).parent / 'last.ckpt'})")
    if kind is not None and "kind" in obj and obj["kind"] != kind:
        raise CheckpointError(f"{path} is a {obj.get('kind')} checkpoint; a {kind}.ckpt is needed here")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is incomplete: it lacks {', '.join(missing)}")
    for key in ("model", "ema"):
        check_finite_weights(obj.get(key), f"{path}" if key == "model" else f"{path} (its EMA weights)")
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
