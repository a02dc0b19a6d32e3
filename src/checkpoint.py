"""Checkpoints: what train.py writes (last.ckpt, best.ckpt) and what validate.py reads.

A project checkpoint is a dict with ``format == CHECKPOINT_FORMAT``. last.ckpt holds everything needed
for an exact resume; best.ckpt holds the better of the model and its EMA (``which`` says which).
Both are written atomically (temporary file, fsync, rename).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.io_utils import atomic_torch_save

CHECKPOINT_FORMAT = "robust-loss-mlml/1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, torn, corrupt, or does not match the model."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` (tagged with the format) atomically to ``path``."""
    return atomic_torch_save({"format": CHECKPOINT_FORMAT, **state}, path)


def load_file(path: str | Path) -> Any:
    """torch.load on the CPU, turning a missing, torn or corrupt file into a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torn zip, truncated pickle, not a torch file at all
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a project checkpoint (a dict tagged with CHECKPOINT_FORMAT)."""
    obj = load_file(path)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint written by this project's train.py")
    return obj


def load_weights(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict load_state_dict whose failure names the file and the first offending keys."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()
        raise CheckpointError(f"{source} does not match the model: " + " ".join(first[:3])[:600]) from e


def rng_state() -> dict[str, Any]:
    """The RNG states of Python, numpy and torch (CPU and every CUDA device)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
