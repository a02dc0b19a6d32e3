"""How a model is set up to score images: one setup for validate.py, infer.py and the trainer's evaluation.

Three decisions, made here and nowhere else:
  * the model on the device, in channels_last memory format on CUDA (what cuDNN's convolutions run fastest on);
  * the DataLoader's worker count: the flag's, capped at the CPU count;
  * where images become model input: in the workers (the CPU transform ``val_transform``, then a copy to the
    device) or on the device (``--gpu-pipeline``: the workers read file bytes; ``GpuEvalPreprocess`` decodes
    and resizes). ``auto`` is on with CUDA.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from src.data.augment import val_transform
from src.engine import Preprocess, to_device

__all__ = ["GPU_PIPELINE_CHOICES", "ScoringSetup", "scoring_setup", "decode_on_device", "loader_workers",
           "place_model"]

GPU_PIPELINE_CHOICES = ("auto", "on", "off")


def decode_on_device(gpu_pipeline: str, device: torch.device) -> bool:
    """--gpu-pipeline: 'on', 'off', or 'auto' (on with CUDA)."""
    if gpu_pipeline not in GPU_PIPELINE_CHOICES:
        raise ValueError(f"gpu_pipeline must be one of {', '.join(GPU_PIPELINE_CHOICES)}, got {gpu_pipeline!r}")
    return gpu_pipeline == "on" or (gpu_pipeline == "auto" and device.type == "cuda")


def loader_workers(requested: int) -> int:
    """--workers, capped at this machine's CPU count."""
    return min(requested, os.cpu_count() or 1)


def place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` on ``device``, channels_last on CUDA."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


@dataclass(frozen=True)
class ScoringSetup:
    """The setup's decisions (equal setups score alike); ``transform``, ``preprocess`` and ``place`` apply them."""
    device: torch.device
    image_size: int
    workers: int  # already capped (loader_workers)
    on_device: bool  # decode and resize on the device; the dataset then yields raw file bytes

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def transform(self) -> Callable | None:
        """The dataset's per-image transform: ``val_transform``, or None when the device decodes."""
        return None if self.on_device else val_transform(self.image_size)

    def preprocess(self) -> Preprocess:
        """The batch preprocess on the device: decode and resize, or a copy of the workers' tensors."""
        if self.on_device:
            from src.data.gpu_pipeline import GpuEvalPreprocess  # lazy: loads the GPU decode

            return GpuEvalPreprocess(self.image_size, self.device)
        return to_device(self.device)

    def place(self, model: nn.Module) -> nn.Module:
        return place_model(model, self.device)


def scoring_setup(device: torch.device, image_size: int, workers: int, gpu_pipeline: str = "off") -> ScoringSetup:
    """The setup for scoring ``image_size`` px images on ``device`` with --workers and --gpu-pipeline."""
    device = torch.device(device)
    return ScoringSetup(device, image_size, loader_workers(workers), decode_on_device(gpu_pipeline, device))
