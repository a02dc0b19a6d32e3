"""--freeze-backbone: only the classifier trains, on backbone features computed once (the "linear" protocol of
Cole et al., CVPR 2021, and of Large Loss Matters, CVPR 2022).

The backbone stays in eval mode (BatchNorm uses and keeps its running statistics) and its parameters do not
require gradients; the classifier is the model's own ``nn.Linear`` (``src.models.classifier_prefix``), so the
checkpoints hold the full model and validate.py / infer.py read them unchanged. Features are

    f(x) = pre_logits(model, val_transform(x))   (N x D, no augmentation, at the training image size)

computed once per run and per dataset (the training list, whose held-out part --val-split evaluates on, and the
test set) and kept on the device: N x D floats (82,081 x 2048 for ResNet-50 on COCO: 0.7 GB). Training then
steps through rows of that matrix in the sampler's order, ``batch`` rows at a time; evaluation scores
classifier(f(x)), which is model(x) in eval mode, as validate.py computes it. A classifier with dropout before
it (a timm ``drop_rate`` > 0) would train without that dropout.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import nn

from src.distributed import all_reduce_sum
from src.engine import Compute
from src.models import classifier_prefix, pre_logits

__all__ = ["FrozenBackbone", "FeatureBatches", "freeze"]


def freeze(model: nn.Module) -> nn.Module:
    """Freeze ``model``'s backbone (eval mode, no gradients) and return its classifier, the module that trains.
    ValueError when the classifier is not a single nn.Linear."""
    head = model.get_submodule(classifier_prefix(model))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    return head


class FrozenBackbone:
    """The full model of a --freeze-backbone run and its datasets' features, computed on first use."""

    def __init__(self, model: nn.Module, compute: Compute):
        self.model, self.compute = model, compute
        self.prefix = classifier_prefix(model)
        self.head = model.get_submodule(self.prefix)
        self._features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def features(self, key: str, make_batches, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(N x D features, N bool: read) of the dataset ``key``, computed from ``make_batches()`` the first time
        (``src.engine.predict``'s batches: every rank its shard, the rows summed over ranks)."""
        if key not in self._features:
            self._features[key] = self._extract(make_batches(), n)
        return self._features[key]

    @torch.inference_mode()
    def _extract(self, batches, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        device = self.compute.device
        feats = torch.zeros(n, self.head.in_features, device=device)
        seen = torch.zeros(n, device=device)
        for images, _targets, indices, _skipped in batches:
            if len(indices) == 0:
                continue
            indices = indices.to(device, non_blocking=True)
            with self.compute.autocast():
                feats[indices] = pre_logits(self.model, images).float()
            seen[indices] = 1
        all_reduce_sum(feats, self.compute.info)
        all_reduce_sum(seen, self.compute.info)
        return feats, seen > 0

    def full_state(self, head: nn.Module) -> dict[str, torch.Tensor]:
        """The full model's state dict with ``head``'s tensors (e.g. the EMA classifier's) as the classifier's."""
        state = self.model.state_dict()
        state.update({f"{self.prefix}.{k}": v for k, v in head.state_dict().items()})
        return state

    def head_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The classifier's tensors of a full state dict, keyed as the classifier names them."""
        start = self.prefix + "."
        return {k[len(start):]: v for k, v in state.items() if k.startswith(start)}


class FeatureBatches:
    """(features, None, indices, num_skipped) batches of the rows ``order`` of ``features``, ``batch`` rows at a
    time (the last one shorter), at most ``steps`` batches: what a DataLoader over the same sampler yields,
    with features for images. Rows whose image could not be read (``seen`` False) are left out and counted."""

    def __init__(self, features: torch.Tensor, seen: torch.Tensor, order: Sequence[int], batch: int,
                 steps: int | None = None):
        self.features, self.order, self.batch = features, list(order), batch
        self.readable = seen.cpu().tolist()  # on the host: no device sync per batch
        self.steps = -(-len(self.order) // batch)
        if steps is not None:  # the training loader's count: --max-steps-per-epoch, a dropped one-image batch
            self.steps = min(self.steps, steps)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple]:
        device = self.features.device
        for step in range(self.steps):
            rows = self.order[step * self.batch:(step + 1) * self.batch]
            kept = [i for i in rows if self.readable[i]]
            idx = torch.tensor(kept, dtype=torch.long).to(device, non_blocking=True)
            yield self.features[idx], None, idx, len(rows) - len(kept)
