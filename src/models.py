"""Backbones (timm, built without downloads) and loading of local ImageNet-pretrained weights.

The official code used torchvision's ResNet-50/101 with a new ``fc`` head; timm's ``resnet50`` /
``resnet101`` have the same module names and shapes, so torchvision checkpoints load directly.
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn

__all__ = [
    "COMMON_MODELS",
    "create_model",
    "check_model_name",
    "load_pretrained",
    "strip_prefix",
    "extract_state_dict",
]

_logger = logging.getLogger(__name__)

# resnet50/101: the paper's backbones; tresnet_m/l: ASL's; resnet18: small tests.
COMMON_MODELS = ("resnet50", "resnet101", "tresnet_m", "tresnet_l", "resnet18")
# Prefixes added by nn.DataParallel / DistributedDataParallel and by torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


# ----------------------------------------------------------------------------- names

def _unknown_model_message(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), timm.list_models(), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (f"unknown model {name!r}: {hint}common choices: {', '.join(COMMON_MODELS)} "
            f"(any name from timm.list_models() works)")


def check_model_name(name: str) -> str:
    """argparse ``type=``: return the timm model name (lower-cased) or raise ArgumentTypeError."""
    if not timm.is_model(name.lower()):
        raise argparse.ArgumentTypeError(_unknown_model_message(name))
    return name.lower()


def create_model(name: str, num_classes: int, pretrained: str | os.PathLike | None = None) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=num_classes)``; nothing is downloaded.

    ``pretrained``: path of a local checkpoint loaded into the backbone by ``load_pretrained``
    (the classifier head stays freshly initialised).
    """
    if not timm.is_model(name.lower()):
        raise ValueError(_unknown_model_message(name))
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    model = timm.create_model(name.lower(), pretrained=False, num_classes=num_classes)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


# ----------------------------------------------------------------------------- state dicts

def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Copy of ``state_dict`` with ``prefix`` removed from every key that starts with it."""
    n = len(prefix)
    return {(k[n:] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The state dict in ``obj``: a state dict itself, an ``nn.Module``, or a dict holding one under
    'state_dict' or 'model' (searched in that order, nested wrappers allowed).

    Raises ValueError when none is found. Choosing between a model and its EMA copy is the caller's.
    """
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj:
                return extract_state_dict(obj[key])
        found = ", ".join(repr(k) for k in list(obj)[:8])
        raise ValueError(f"no state dict found: a dict with keys {found}, expected tensors or a "
                         f"'state_dict' / 'model' entry")
    raise ValueError(f"no state dict found in an object of type {type(obj).__name__}")


def _classifier_prefix(model: nn.Module) -> str | None:
    """Module path of ``model.get_classifier()`` (e.g. 'fc', 'head.fc'), None if absent."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if head is None:
        return None
    for name, module in model.named_modules():
        if module is head and name:
            return name
    return None


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a PyTorch checkpoint readable with torch.load(weights_only=True) "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    try:
        state_dict = extract_state_dict(obj)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state_dict):
            state_dict = strip_prefix(state_dict, prefix)
    return state_dict


def load_pretrained(model: nn.Module, path: str | os.PathLike, strict: bool = False) -> dict[str, Any]:
    """Load a local checkpoint into the backbone of ``model`` and re-initialise its classifier head.

    Accepts torchvision- or timm-format state dicts, files holding {'state_dict': ...} or
    {'model': ...}, and 'module.'-prefixed (DataParallel) keys. Checkpoint entries of the model's
    head (e.g. torchvision's 1000-class 'fc') are dropped. Raises FileNotFoundError for a missing
    file and ValueError for an unreadable file, backbone tensors of the wrong shape (naming the first
    keys), no backbone tensor in common, or (``strict``) any missing/unexpected backbone key.

    Returns a report: path, loaded (count), missing_keys, unexpected_keys, dropped_head_keys.
    """
    path = Path(path)
    state_dict = _read_checkpoint(path)
    head = _classifier_prefix(model)
    is_head = (lambda k: k == head or k.startswith(head + ".")) if head else (lambda k: False)

    dropped = sorted(k for k in state_dict if is_head(k))
    backbone = {k: v for k, v in state_dict.items() if not is_head(k)}
    own = {k: v for k, v in model.state_dict().items() if not is_head(k)}

    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in backbone.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        raise ValueError(f"{path}: {len(mismatched)} backbone tensors do not match the model's shapes "
                         f"(wrong architecture?); first: " + "; ".join(mismatched[:5]))
    matched = [k for k in backbone if k in own]
    if not matched:
        raise ValueError(f"{path}: no key in common with the model (wrong architecture?); checkpoint "
                         f"keys start {sorted(backbone)[:3]}, model keys {sorted(own)[:3]}")
    # BatchNorm's num_batches_tracked is absent from old torchvision files and unused here.
    missing = sorted(k for k in own if k not in backbone and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in backbone if k not in own)
    if strict and (missing or unexpected):
        raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")

    model.load_state_dict({k: backbone[k] for k in matched}, strict=False)
    if head:
        for module in model.get_submodule(head).modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    report = {"path": str(path), "loaded": len(matched), "missing_keys": missing,
              "unexpected_keys": unexpected, "dropped_head_keys": dropped}
    _logger.info("loaded %d tensors from %s; head %r re-initialised (dropped %s)",
                 len(matched), path, head, dropped)
    if missing:
        _logger.warning("%s: %d model keys not in the checkpoint (left as initialised): %s",
                        path, len(missing), missing[:10])
    if unexpected:
        _logger.warning("%s: %d checkpoint keys not in the model (ignored): %s",
                        path, len(unexpected), unexpected[:10])
    return report
