"""A model for scoring, what its file says about it, and writing its scores (shared by validate.py and infer.py).

A model file is either
  * a project checkpoint (best.ckpt / last.ckpt, see src.checkpoint): weights (with ``use_ema``, a last.ckpt's
    EMA weights) plus model_name, num_classes, image_size and class_names (checkpoints written before names
    were stored lack them); or
  * any other file ``src.checkpoint.load_file`` reads that holds a state dict: a bare state dict, one saved
    from nn.DataParallel ('module.' keys, the official code's format), or ASL's / the official code's
    {'model': ...} / {'state_dict': ...} files. Such "foreign" weights go through
    ``src.models.convert_state_dict`` (wrapper prefixes, ASL's TResNet keys) before a strict load; their class
    count is read from the classifier's weight when no flag gives it.

Nothing is downloaded: the model is built without pretrained weights and takes the file's.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from timm.models import get_pretrained_cfg
from torch import nn

from src.checkpoint import CHECKPOINT_FORMAT, CheckpointError, check_finite_weights, load_file, load_weights
from src.data.class_names import ClassNamesError, check_class_names, index_names
from src.data.datasets import coco_category_names
from src.io_utils import atomic_write
from src.metrics import threshold_metrics
from src.cli import OFFICIAL
from src.outputs import SCORE_SUFFIXES, SCORES_CSV, SCORES_NPZ, Outputs
from src.models import (COMMON_MODELS, MIN_BACKBONE_MATCH, backbone_share, convert_state_dict, create_model,
                        extract_state_dict)

__all__ = ["OFFICIAL", "META_KEYS", "ModelFile", "load_model_file", "resolve", "head_classes", "build_model",
           "choose_class_names", "coco_class_names", "SCORE_SUFFIXES", "write_scores", "asl_meta", "fitting_models",
           "scores_json", "THRESHOLD_GRID", "best_thresholds"]

# OFFICIAL (src.cli): what the official code used when a file does not say: ResNet-50 at 448 px.
META_KEYS = ("model_name", "num_classes", "image_size", "class_names")


@dataclass
class ModelFile:
    """Weights read from ``path`` and what the file records about the model (``meta``: a subset of META_KEYS)."""
    path: str
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    project: bool = False  # a checkpoint written by this project's train.py


def load_model_file(path: str | os.PathLike, use_ema: bool = False) -> ModelFile:
    """Read a project checkpoint or a foreign state dict; CheckpointError names the file when it fails, or when
    its weights hold NaN or inf. An ASL model-zoo file's class names (``idx_to_class``) become meta's
    class_names."""
    obj = load_file(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        meta = {k: obj[k] for k in META_KEYS if obj.get(k) is not None}
        if use_ema and "ema" not in obj:
            raise CheckpointError(f"{path} holds no EMA weights (only a last.ckpt does)")
        model_file = ModelFile(str(path), obj["ema"] if use_ema else obj["model"], meta, project=True)
    elif use_ema:
        raise CheckpointError(f"{path} is not a project last.ckpt: --ema needs one")
    else:
        try:
            state_dict = extract_state_dict(obj)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
        model_file = ModelFile(str(path), state_dict, asl_meta(obj, path), project=False)
    check_finite_weights(model_file.state_dict, path)
    return model_file


def asl_meta(obj: Any, path: str | os.PathLike) -> dict[str, Any]:
    """{"class_names": [...]} from an ASL model-zoo file's ``idx_to_class`` ({index: name}, indices 0..C-1),
    else {}."""
    table = obj.get("idx_to_class") if isinstance(obj, dict) else None
    if table is None:
        return {}
    try:
        by_index = {int(k): str(v) for k, v in dict(table).items()}
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: its idx_to_class is not a table of class index -> name") from None
    if sorted(by_index) != list(range(len(by_index))):
        raise CheckpointError(f"{path}: its idx_to_class does not number the classes 0..{len(by_index) - 1}")
    return {"class_names": [by_index[i] for i in range(len(by_index))]}


def resolve(flag: str, given, meta: dict, fallback, parser: argparse.ArgumentParser):
    """A flag's value: the checkpoint's, unless the user gave a different one (an argparse error)."""
    saved = meta.get(flag)
    if given is not None and saved is not None and given != saved:
        parser.error(f"--{flag.replace('_', '-')} {given} disagrees with the checkpoint, which has {saved}")
    return given if given is not None else saved if saved is not None else fallback


def head_classes(model_name: str, state_dict: dict[str, torch.Tensor]) -> int | None:
    """Rows of the classifier weight of ``model_name`` in a foreign state dict, None when it is not there."""
    cfg = get_pretrained_cfg(model_name)
    classifier = getattr(cfg, "classifier", None) if cfg is not None else None
    if not classifier:
        return None
    for prefix in ("", "module.", "_orig_mod.", "module._orig_mod."):
        weight = state_dict.get(f"{prefix}{classifier}.weight")
        if isinstance(weight, torch.Tensor) and weight.dim() >= 1:
            return int(weight.shape[0])
    return None


def build_model(model_file: ModelFile, model_name: str, num_classes: int) -> nn.Module:
    """``model_name`` with ``num_classes`` outputs, built without pretrained weights, holding the file's weights
    (strict load; CheckpointError names the file and the first mismatching keys)."""
    model = create_model(model_name, num_classes, pretrained=None)
    state_dict = model_file.state_dict if model_file.project else convert_state_dict(model, model_file.state_dict)
    try:
        load_weights(model, state_dict, model_file.path)
    except CheckpointError as e:
        hint = _mismatch_hint(model_file, model_name)
        if hint is None:
            raise
        raise CheckpointError(f"{model_file.path} does not fit {model_name}: {hint}") from e
    return model


def _mismatch_hint(model_file: ModelFile, model_name: str) -> str | None:
    """What to pass when a file's weights do not fit ``model_name``: the model a project checkpoint does not
    name, or the common models whose tensors the file fills."""
    if model_file.project and "model_name" not in model_file.meta:
        return (f"the file records no model_name, so {model_name} was tried: pass --model-name with the model it "
                "was trained with")
    fits = fitting_models(model_file.state_dict, exclude=model_name)
    if fits:
        return "its weights fit " + " or ".join(f"--model-name {name}" for name in fits) + "; pass that flag"
    return None


def fitting_models(state_dict: dict[str, torch.Tensor], exclude: str = "") -> list[str]:
    """The models of COMMON_MODELS (but ``exclude``) at least MIN_BACKBONE_MATCH of whose backbone tensors the
    state dict holds with the right shapes (after ``convert_state_dict``). Built on the meta device: no memory,
    no initialisation."""
    found = []
    for name in COMMON_MODELS:
        if name == exclude.split(".")[0]:
            continue
        with torch.device("meta"):
            model = create_model(name, 1, pretrained=None)
        if backbone_share(model, convert_state_dict(model, state_dict)) >= MIN_BACKBONE_MATCH:
            found.append(name)
    return found


def coco_class_names(data: str | os.PathLike) -> list[str]:
    """Category names (sorted by id) of a COCO root's annotations/instances_val2014.json, or of a .json file."""
    path = Path(data)
    ann = path if path.suffix == ".json" else path / "annotations" / "instances_val2014.json"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress; stdout is for results
            return coco_category_names(ann)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise ClassNamesError(str(e)) from None


def choose_class_names(num_classes: int,
                       candidates: Sequence[tuple[str, list[str] | None]]) -> tuple[list[str], str | None]:
    """The class names, and a note when they are plain indices.

    ``candidates``: (source, names or None) in order of preference, e.g. the checkpoint's, --classes, --data's.
    Every given list must fit ``num_classes`` and all given lists must agree (ClassNamesError naming the sources);
    with none given the names are '0', '1', ... and the note says so.
    """
    given = [(source, check_class_names(names, num_classes, source)) for source, names in candidates
             if names is not None]
    for source, names in given[1:]:
        first_source, first = given[0]
        if names != first:
            i = next(k for k, (a, b) in enumerate(zip(first, names)) if a != b)
            raise ClassNamesError(f"{source} and {first_source} name the classes differently "
                                  f"(class {i}: {names[i]!r} vs {first[i]!r})")
    if given:
        return given[0][1], None
    return index_names(num_classes), (f"no class names known (not in the checkpoint; give --classes FILE or "
                                      f"--data): classes are shown as their indices 0..{num_classes - 1}")


# ----------------------------------------------------------------------------- scores on disk



def _float_text(values: np.ndarray) -> list[str]:
    """Shortest decimal text that reads back as the same float32 values."""
    return [str(v) for v in values.astype(np.float32)]


def write_scores(path: str | os.PathLike, image_names: Sequence[str], scores: np.ndarray | torch.Tensor,
                 class_names: Sequence[str], targets: np.ndarray | torch.Tensor | None = None,
                 fmt: str | None = None, outputs: Outputs | None = None, flag: str = "--save-scores") -> Path:
    """Write the N x C ``scores`` (probabilities) with the image names, atomically, as ``fmt`` ('npz' or 'csv';
    default: by ``path``'s suffix); through ``outputs`` (the output rule, ``path`` given at ``flag``) when given.

    .npz: arrays ``images`` (N,), ``class_names`` (C,), ``scores`` float32 (N, C), and ``targets`` uint8 (N, C)
    when given. .csv: a header ``image,<class name>...[,target:<class name>...]`` and one row per image.
    """
    path = Path(path)
    scores = np.asarray(scores, dtype=np.float32)
    n, c = scores.shape
    if len(image_names) != n or len(class_names) != c:
        raise ValueError(f"{n} x {c} scores for {len(image_names)} images and {len(class_names)} classes")
    if targets is not None:
        targets = np.asarray(targets).astype(np.uint8)
        if targets.shape != scores.shape:
            raise ValueError(f"targets {targets.shape} do not match scores {scores.shape}")
    fmt = fmt or path.suffix.lower().lstrip(".")
    if fmt == "npz":
        arrays = {"images": np.asarray(image_names, dtype=str), "class_names": np.asarray(class_names, dtype=str),
                  "scores": scores}
        if targets is not None:
            arrays["targets"] = targets
        kind, write = SCORES_NPZ, lambda f: np.savez_compressed(f, **arrays)
    elif fmt == "csv":
        text = _scores_csv(image_names, scores, class_names, targets).encode("utf-8")
        kind, write = SCORES_CSV, lambda f: f.write(text)
    else:
        raise ValueError(f"{path}: unknown scores format {path.suffix!r} (use {' or '.join(SCORE_SUFFIXES)})")
    return atomic_write(path, write) if outputs is None else outputs.write(flag, path, kind, write)


def _scores_csv(image_names: Sequence[str], scores: np.ndarray, class_names: Sequence[str],
                targets: np.ndarray | None) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", *class_names, *([f"target:{c}" for c in class_names] if targets is not None else [])])
    for i, name in enumerate(image_names):
        writer.writerow([name, *_float_text(scores[i]), *(targets[i].tolist() if targets is not None else [])])
    return text.getvalue()


def scores_json(image_names: Sequence[str], scores: np.ndarray, class_names: Sequence[str],
                extra: dict[str, Any]) -> str:
    """JSON text: ``extra`` plus class_names and, per image, its name and full score vector."""
    images = [{"image": name, "scores": [float(v) for v in _float_text(row)]}
              for name, row in zip(image_names, np.asarray(scores, dtype=np.float32))]
    return json.dumps({**extra, "class_names": list(class_names), "images": images}) + "\n"


# ----------------------------------------------------------------------------- thresholds

# Candidate thresholds for --thre auto: 0.01, 0.02, ..., 0.99.
THRESHOLD_GRID = tuple(round(k / 100, 2) for k in range(1, 100))


def best_thresholds(targets: Any, scores: Any, grid: Sequence[float] = THRESHOLD_GRID) -> dict[str, dict[str, float]]:
    """For "cf1" and "of1": the threshold of ``grid`` that maximises it on these scores (the lowest one on a
    tie), with the six threshold metrics there. Chosen on the scored set itself, so optimistic for that set."""
    targets = np.asarray(targets, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    table = [(float(t), threshold_metrics(targets, scores, t)) for t in grid]
    best = {}
    for key in ("cf1", "of1"):
        t, metrics = max(table, key=lambda row: row[1][key])  # max keeps the first of equal values
        best[key] = {"threshold": t, **metrics}
    return best
