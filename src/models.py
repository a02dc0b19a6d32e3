"""Backbones from timm and the weights a run starts from: ImageNet, none, or a local file.

``--pretrained imagenet`` (the default) goes through timm's own pretrained machinery with the weights that
src/pretrained.py names and finds (the official code's: torchvision's ResNets, ASL's TResNets; cached in the
Hugging Face hub cache, or said to be unavailable within seconds).

``--pretrained PATH`` reads torchvision-, timm- and official/ASL-format files (``convert_state_dict`` puts
foreign key names into the model's with timm's checkpoint filter for the architecture).
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import timm
import torch
import torch.nn as nn
from huggingface_hub.errors import EntryNotFoundError
from safetensors.torch import load_file as load_safetensors
from timm.models import get_arch_pretrained_cfgs, split_model_name_tag
from timm.utils import unwrap_model

from src.checkpoint import check_finite_weights
from src.cli import pretrained_arg  # re-exported: the flag's type lives with the light command-line code
from src.checkpoint import load_file as load_torch_file
from src.pretrained import PretrainedUnavailable, locate_imagenet_weights, unavailable_message

__all__ = [
    "COMMON_MODELS",
    "MIN_BACKBONE_MATCH",
    "check_model_name",
    "pretrained_arg",
    "create_model",
    "create_model_with_weights",
    "convert_state_dict",
    "load_pretrained",
    "backbone_share",
    "strip_prefix",
    "extract_state_dict",
    "classifier_prefix",
    "pre_logits",
]

_logger = logging.getLogger(__name__)

# resnet50/101: the paper's backbones; tresnet_m/l: ASL's; resnet18: small tests.
COMMON_MODELS = ("resnet50", "resnet101", "tresnet_m", "tresnet_l", "resnet18")
# A weights file must fill at least this share of the backbone's tensors.
MIN_BACKBONE_MATCH = 0.9
# Prefixes added by nn.DataParallel / DistributedDataParallel and by torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


# ----------------------------------------------------------------------------- names and flags

def _unknown_model_message(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), timm.list_models(), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (f"unknown model {name!r}: {hint}common choices: {', '.join(COMMON_MODELS)} "
            f"(any name from timm.list_models() works, optionally with a pretrained tag: resnet50.a1_in1k)")


def check_model_name(name: str) -> str:
    """argparse ``type=``: a timm model name, optionally tagged ('resnet50.a1_in1k'), lower-cased; else
    ArgumentTypeError."""
    arch, tag = split_model_name_tag(name.lower())
    if not timm.is_model(arch):
        raise argparse.ArgumentTypeError(_unknown_model_message(arch))
    if tag and f"{arch}.{tag}" not in get_arch_pretrained_cfgs(arch):
        tags = ", ".join(sorted(get_arch_pretrained_cfgs(arch))) or "none"
        raise argparse.ArgumentTypeError(f"timm has no pretrained tag {tag!r} for {arch}; its tags: {tags}")
    return f"{arch}.{tag}" if tag else arch




def _imagenet_model(name: str, num_classes: int, image_size: int) -> tuple[nn.Module, str]:
    weights, cached = locate_imagenet_weights(name, image_size)
    if cached is not None:  # timm loads the cached file itself: no network, no hub revision check
        try:
            model = timm.create_model(weights.name, pretrained=True, num_classes=num_classes,
                                      pretrained_cfg_overlay={"file": str(cached)})
        except Exception as e:  # noqa: BLE001 - a damaged cached file fails in many ways; name it
            raise ValueError(f"the cached ImageNet weights {cached} cannot be read ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}): delete that file to download it again, "
                             "or pass --pretrained PATH or none") from None
    else:
        try:
            model = timm.create_model(weights.name, pretrained=True, num_classes=num_classes)
        except (OSError, EntryNotFoundError) as e:
            reason = f"download failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            raise PretrainedUnavailable(unavailable_message(weights, reason)) from e
        cached = weights.cached_file() or weights.download_url()
    if num_classes == model.pretrained_cfg.get("num_classes"):  # timm kept the ImageNet head: start afresh
        _reset_head(model)
    head = _head_keys(model)
    return model, (f"pretrained: ImageNet weights {weights.name} from {cached}; head re-initialised "
                   f"({num_classes} classes): {', '.join(head) or 'none'}")


# ----------------------------------------------------------------------------- models

def create_model(name: str, num_classes: int, pretrained: str | os.PathLike | None = None,
                 image_size: int = 448) -> nn.Module:
    """A timm model with ``num_classes`` outputs; weights as ``create_model_with_weights`` (None: none)."""
    return create_model_with_weights(name, num_classes, pretrained, image_size)[0]


def create_model_with_weights(name: str, num_classes: int, pretrained: str | os.PathLike | None = "imagenet",
                              image_size: int = 448) -> tuple[nn.Module, str]:
    """(model, one line saying which weights it starts from).

    ``pretrained``: 'imagenet' (timm's weights, see the module doc; PretrainedUnavailable when offline and not
    cached), 'none' or None (random initialisation), or a local file (``load_pretrained``). The classifier head
    always starts freshly initialised.
    """
    arch, _ = split_model_name_tag(name.lower())
    if not timm.is_model(arch):
        raise ValueError(_unknown_model_message(name))
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    choice = str(pretrained).lower() if pretrained is not None else "none"
    if choice == "imagenet":
        return _imagenet_model(name, num_classes, image_size)
    model = timm.create_model(name.lower(), pretrained=False, num_classes=num_classes)
    if choice == "none":
        return model, ("pretrained: none, random initialisation. warning: the paper starts from ImageNet weights "
                       "(--pretrained imagenet, the default)")
    report = load_pretrained(model, pretrained)
    dropped = report["dropped_head_keys"]
    return model, (f"pretrained: {report['path']}: {report['loaded']} of {report['backbone']} backbone tensors "
                   f"loaded; head re-initialised ({num_classes} classes): {', '.join(_head_keys(model)) or 'none'}"
                   + (f" (dropped from the file: {', '.join(dropped)})" if dropped else ""))


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


def classifier_prefix(model: nn.Module) -> str:
    """Module path of the model's classifier, which must be one ``nn.Linear`` (ResNets: 'fc'; TResNets: 'head.fc');
    ValueError otherwise. What ``pre_logits`` leaves out: model(x) == classifier(pre_logits(model, x))."""
    prefix = _classifier_prefix(model)
    if prefix is None or not isinstance(model.get_submodule(prefix), nn.Linear):
        raise ValueError(f"{type(model).__name__}: the classifier is not a single nn.Linear")
    return prefix


def pre_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The classifier's input for ``images``: timm's forward_features, then forward_head without the classifier
    (global pooling, and whatever else the head does before it, e.g. a norm)."""
    return model.forward_head(model.forward_features(images), pre_logits=True)


def _head_test(model: nn.Module) -> Callable[[str], bool]:
    head = _classifier_prefix(model)
    return (lambda k: k == head or k.startswith(head + ".")) if head else (lambda k: False)


def _head_keys(model: nn.Module) -> list[str]:
    is_head = _head_test(model)
    return [k for k in model.state_dict() if is_head(k)]


def _reset_head(model: nn.Module) -> None:
    head = _classifier_prefix(model)
    if head:
        for module in model.get_submodule(head).modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


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


def _counted(key: str) -> bool:
    """Tensors that count when matching files to models (BatchNorm's step counter is absent from many files)."""
    return not key.endswith("num_batches_tracked")


def backbone_share(model: nn.Module, state_dict: Mapping[str, Any]) -> float:
    """How well a state dict (in the model's key names) fits the model's backbone: the smaller of the share of the
    model's backbone tensors it holds with the right shape and the share of its own backbone tensors the model
    takes (classifier heads and BatchNorm step counters aside)."""
    is_head = _head_test(model)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if _counted(k) and not is_head(k)}
    theirs = {k: tuple(v.shape) for k, v in state_dict.items()
              if _counted(k) and not is_head(k) and isinstance(v, torch.Tensor)}
    same = sum(own.get(k) == shape for k, shape in theirs.items())
    return min(same / max(len(own), 1), same / max(len(theirs), 1))


def _share_present(model: nn.Module, state_dict: Mapping[str, Any]) -> float:
    own = [k for k in model.state_dict() if _counted(k)]
    return sum(k in state_dict for k in own) / max(len(own), 1)


def _timm_checkpoint_filter(model: nn.Module) -> Callable | None:
    """timm's ``checkpoint_filter_fn(state_dict, model)`` of the module defining the model's class, if any:
    the function timm's own pretrained loading applies to that architecture's foreign checkpoints."""
    module = sys.modules.get(type(unwrap_model(model)).__module__)
    fn = getattr(module, "checkpoint_filter_fn", None)
    return fn if callable(fn) else None


def convert_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` in ``model``'s key names: wrapper prefixes ('module.', '_orig_mod.') stripped, then, when
    fewer than MIN_BACKBONE_MATCH of the model's tensors are found by name, timm's checkpoint filter for the
    architecture applied (it converts e.g. ASL's TResNet names and in-place-ABN weights). Nothing is dropped:
    whether the result fits is for the caller's load to decide. BatchNorm step counters (num_batches_tracked)
    that the file lacks (old torchvision files, ASL's in-place-ABN) are taken from the model, so that a strict
    load of a complete file succeeds."""
    converted = dict(state_dict)
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if converted and all(k.startswith(prefix) for k in converted):
                converted, stripped = strip_prefix(converted, prefix), True
    if _share_present(model, converted) < MIN_BACKBONE_MATCH:
        filter_fn = _timm_checkpoint_filter(model)
        if filter_fn is not None:
            converted = dict(filter_fn(converted, unwrap_model(model)))
    for key, value in model.state_dict().items():
        if not _counted(key) and key not in converted:
            converted[key] = value.clone()
    return converted


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            obj = load_safetensors(path, device="cpu")
        else:  # the project's loader: CRC check, torch.load(weights_only=True), a CheckpointError naming the file
            obj = load_torch_file(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a weights file readable with torch.load(weights_only=True) or safetensors "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    try:
        state_dict = extract_state_dict(obj)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    check_finite_weights(state_dict, path)
    return state_dict


def load_pretrained(model: nn.Module, path: str | os.PathLike, strict: bool = False) -> dict[str, Any]:
    """Load a local weights file into the backbone of ``model`` and re-initialise its classifier head.

    Reads torchvision-, timm- and official/ASL-format files (.pth/.pt/.bin/.ckpt or .safetensors; a bare state
    dict, {'state_dict': ...} or {'model': ...}), converted by ``convert_state_dict``. The file's head entries
    (e.g. torchvision's 1000-class 'fc') are dropped. Raises FileNotFoundError for a missing file, ValueError for
    an unreadable one, backbone tensors of the wrong shape (naming the first keys), fewer than
    MIN_BACKBONE_MATCH of the backbone's tensors matched (giving the counts), or (``strict``) any
    missing/unexpected backbone key.

    Weights holding NaN or inf are a CheckpointError naming the file.

    Returns a report: path, loaded, backbone (tensors counted), missing_keys, unexpected_keys, dropped_head_keys.
    """
    path = Path(path)
    state_dict = convert_state_dict(model, _read_weights_file(path))
    is_head = _head_test(model)
    dropped = sorted(k for k in state_dict if is_head(k))
    backbone = {k: v for k, v in state_dict.items() if not is_head(k)}
    own = {k: v for k, v in model.state_dict().items() if not is_head(k)}

    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in backbone.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        raise ValueError(f"{path}: {len(mismatched)} backbone tensors do not match the model's shapes "
                         f"(wrong architecture?); first: " + "; ".join(mismatched[:5]))
    matched = [k for k in backbone if k in own]
    counted = [k for k in own if _counted(k)]
    n_matched = sum(_counted(k) for k in matched)
    missing = sorted(k for k in counted if k not in backbone)
    unexpected = sorted(k for k in backbone if k not in own)
    if n_matched < MIN_BACKBONE_MATCH * len(counted):
        raise ValueError(f"{path}: fills {n_matched} of the model's {len(counted)} backbone tensors "
                         f"({100 * n_matched / max(len(counted), 1):.0f}%, at least {MIN_BACKBONE_MATCH:.0%} needed): "
                         f"wrong architecture or an unknown format? {len(unexpected)} file keys unused, e.g. "
                         f"{unexpected[:3]}; model keys not filled, e.g. {missing[:3]}")
    if strict and (missing or unexpected):
        raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")

    model.load_state_dict({k: backbone[k] for k in matched}, strict=False)
    _reset_head(model)
    if missing:
        _logger.warning("%s: %d model keys not in the file (left as initialised): %s", path, len(missing), missing[:10])
    if unexpected:
        _logger.warning("%s: %d file keys not in the model (ignored): %s", path, len(unexpected), unexpected[:10])
    return {"path": str(path), "loaded": n_matched, "backbone": len(counted), "missing_keys": missing,
            "unexpected_keys": unexpected, "dropped_head_keys": dropped}
