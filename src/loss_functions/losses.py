"""Multi-label losses for learning with missing labels.

The paper's losses (Zhang et al., "Simple and Robust Loss Design for Multi-Label Learning with
Missing Labels", arXiv 2112.07368): Hill, SPLC; the baselines it compares with: BCE, Focal, ASL
(all three via AsymmetricLoss); and the missing-label baselines WAN, BCE-LS, EPR (Cole et al.,
CVPR 2021) and Large Loss LL-R / LL-Ct / LL-Cp (Kim et al., CVPR 2022).

This file imports only torch and the standard library: copy it alone into another project.

Conventions shared by every loss:
  * ``forward(logits, targets, epoch=None)``; logits and targets are (B, C); targets hold 0/1 as
    float, integer or bool; ``epoch`` (0-based) is used by SPLC and LargeLoss, ignored by the rest.
  * p = sigmoid(logits); y = targets. fp16/bf16 logits are computed in float32 (the loss is float32),
    float64 stays float64.
  * log p and log(1 - p) are computed as logsigmoid(x) and logsigmoid(-x), and focusing weights
    (1 - p)^g, p^g as exp(g * logsigmoid(.)), so that loss and gradient are finite for every logit with
    |x| <= FINITE_LOGIT_BOUND (1e6; all of float16's range), in float16, bfloat16, float32 and float64,
    for every loss and reduction (tested). Far beyond it, near the float32 maximum (~3.4e38), per-element
    losses of order |x| overflow when summed. At x = +-inf, wherever the loss is finite its gradient is finite
    too (each branch of a per-target ``torch.where`` is computed on its own elements only, so the branch not
    taken cannot turn 0 * inf into NaN); where the loss is +inf (e.g. a positive at -inf) the trainer's
    non-finite-loss check stops the run.
  * A NaN logit gives a NaN loss in every loss (never a finite loss with a NaN gradient), so the trainer's
    non-finite-loss check stops the run instead of training on NaN gradients.
  * reduction: 'none' -> (B, C) elementwise loss, 'mean' -> mean over the B*C elements, 'sum'.
    An empty batch (B = 0) gives 0 for 'sum' and 'mean' and a (0, C) tensor for 'none', in every loss.
  * ``updates_labels``: False everywhere except LargeLoss(mode='permanent'), whose forward returns
    ``(loss, flip_mask)``; flip_mask is a bool (B, C) tensor of labels the trainer should set to 1.
  * ``build_loss(name, **hyperparameters)`` builds a loss by its --loss name (case-insensitive).
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "MultiLabelLoss", "Hill", "SPLC", "AsymmetricLoss", "WAN", "BCELS", "EPR", "LargeLoss",
    "LOSS_NAMES", "build_loss", "canonical_loss_name", "loss_hyperparameters", "FINITE_LOGIT_BOUND",
]

REDUCTIONS = ("none", "mean", "sum")
FINITE_LOGIT_BOUND = 1e6  # loss and gradient are finite for |logit| <= this, in every dtype (see above)


def _pow_of_log(log_base: torch.Tensor, gamma: float) -> torch.Tensor | float:
    """base ** gamma from log(base), as exp(gamma * log_base): finite gradient even where base -> 0."""
    if gamma == 0:
        return 1.0
    return torch.exp(gamma * log_base)


def _safe_pow(base: torch.Tensor, gamma: float) -> torch.Tensor | float:
    """base ** gamma for base >= 0 whose gradient stays finite at base = 0 also for 0 < gamma < 1."""
    if gamma == 0:
        return 1.0
    tiny = torch.finfo(base.dtype).tiny
    return torch.where(base > 0, base.clamp(min=tiny) ** gamma, torch.zeros_like(base))


def _split(x: torch.Tensor, take: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x where ``take`` else 0, x where not ``take`` else 0): inputs for the two branches of
    ``torch.where(take, f(x_take), g(x_other))``, so that neither branch sees a logit it does not use and an
    infinite logit cannot give the unused branch an inf whose zero gradient becomes NaN (0 * inf)."""
    zero = torch.zeros_like(x)
    return torch.where(take, x, zero), torch.where(take, zero, x)


def _check_nonnegative(owner: str, **values: float) -> None:
    for key, value in values.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{owner}: {key} must be a finite number >= 0, got {value!r}")


class MultiLabelLoss(nn.Module):
    """Base class: input checks, float32 promotion of half logits, reduction."""

    updates_labels: bool = False

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def _inputs(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate (B, C) logits and 0/1 targets; return (x, y) as floats of one dtype (>= float32)."""
        name = type(self).__name__
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
            raise TypeError(f"{name}: logits must be a floating-point tensor, got {getattr(logits, 'dtype', type(logits))}")
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"{name}: targets must be a tensor, got {type(targets).__name__}")
        if logits.ndim != 2:
            raise ValueError(f"{name}: logits must be (batch, classes), got shape {tuple(logits.shape)}")
        if targets.shape != logits.shape:
            raise ValueError(f"{name}: targets shape {tuple(targets.shape)} != logits shape {tuple(logits.shape)}")
        if targets.device != logits.device:
            raise ValueError(f"{name}: targets on {targets.device} but logits on {logits.device}")
        if targets.is_complex():
            raise TypeError(f"{name}: targets must be float, integer or bool, got {targets.dtype}")
        if targets.dtype != torch.bool:
            bad = (targets != 0) & (targets != 1)
            if targets.device.type == "cpu":
                if bool(bad.any()):
                    example = targets[bad][0].item()
                    raise ValueError(f"{name}: targets must be 0/1, found {int(bad.sum())} other values "
                                     f"(e.g. {example})")
            else:  # checked on the device, without a host sync in the training step
                torch._assert_async(~bad.any(), f"{name}: targets must be 0/1")
        x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        return x, targets.to(x.dtype)

    def _reduce(self, loss: torch.Tensor) -> torch.Tensor:
        if self.reduction == "sum":
            return loss.sum()
        if self.reduction == "mean":
            return loss.mean() if loss.numel() else loss.sum()  # an empty batch: 0, not mean()'s NaN
        return loss

    def extra_repr(self) -> str:
        params = inspect.signature(type(self).__init__).parameters
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in params if k != "self" and hasattr(self, k))


def _check_epoch(owner: str, epoch: int | None) -> None:
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        raise ValueError(f"{owner}: epoch must be None or an int >= 0 (0-based), got {epoch!r}")


class Hill(MultiLabelLoss):
    """Hill loss (Zhang et al.), p = sigmoid(x), p_m = sigmoid(x - margin):

        y=1: -(1 - p_m)^gamma * log(p_m)        (focal margin loss)
        y=0: (lamb - p) * p^2                   (hill-shaped negative loss)

    The negative term's gradient w.r.t. x, (2*lamb*p - 3*p^2) * p * (1 - p), is 0 at p = 0 and
    p = 1, so confident negatives (likely missing positives) are down-weighted.
    """

    def __init__(self, lamb: float = 1.5, margin: float = 1.0, gamma: float = 2.0, reduction: str = "sum") -> None:
        super().__init__(reduction)
        _check_nonnegative("Hill", gamma=gamma)
        if not (math.isfinite(lamb) and math.isfinite(margin)):
            raise ValueError(f"Hill: lamb and margin must be finite, got lamb={lamb!r}, margin={margin!r}")
        self.lamb, self.margin, self.gamma = lamb, margin, gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int | None = None) -> torch.Tensor:
        x, y = self._inputs(logits, targets)
        x_pos, x_neg = _split(x, y > 0.5)
        z = x_pos - self.margin
        loss_pos = -_pow_of_log(F.logsigmoid(-z), self.gamma) * F.logsigmoid(z)
        p = torch.sigmoid(x_neg)
        loss_neg = (self.lamb - p) * p * p
        return self._reduce(torch.where(y > 0.5, loss_pos, loss_neg))


class SPLC(MultiLabelLoss):
    """Self-paced loss correction with the focal margin loss (Zhang et al.):

        1. x' = x - margin where y = 1 (annotated positives only);
        2. from epoch >= change_epoch: y' = 1 where sigmoid(x') > tau, else y' = y
           (recomputed every call, nothing stored);
        3. q = sigmoid(x'):  y'=1: -(1 - q)^gamma * log(q);   y'=0: -q^gamma * log(1 - q).

    Epochs are 0-based; epoch=None means no correction. As in the official code, the focal
    weight is not detached (gradient flows through it).
    """

    def __init__(self, tau: float = 0.6, change_epoch: int = 1, margin: float = 1.0, gamma: float = 2.0,
                 reduction: str = "sum") -> None:
        super().__init__(reduction)
        if not 0 < tau < 1:
            raise ValueError(f"SPLC: tau must be in (0, 1), got {tau!r}")
        if isinstance(change_epoch, bool) or not isinstance(change_epoch, int) or change_epoch < 0:
            raise ValueError(f"SPLC: change_epoch must be an int >= 0, got {change_epoch!r}")
        _check_nonnegative("SPLC", gamma=gamma)
        if not math.isfinite(margin):
            raise ValueError(f"SPLC: margin must be finite, got {margin!r}")
        self.tau, self.change_epoch, self.margin, self.gamma = tau, change_epoch, margin, gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int | None = None) -> torch.Tensor:
        _check_epoch("SPLC", epoch)
        x, y = self._inputs(logits, targets)
        positive = y > 0.5
        x = torch.where(positive, x - self.margin, x)
        if epoch is not None and epoch >= self.change_epoch:
            positive = positive | (torch.sigmoid(x.detach()) > self.tau)
        x_pos, x_neg = _split(x, positive)
        loss_pos = -_pow_of_log(F.logsigmoid(-x_pos), self.gamma) * F.logsigmoid(x_pos)
        loss_neg = -_pow_of_log(F.logsigmoid(x_neg), self.gamma) * F.logsigmoid(-x_neg)
        return self._reduce(torch.where(positive, loss_pos, loss_neg))


class AsymmetricLoss(MultiLabelLoss):
    """Asymmetric loss (Ridnik et al., ICCV 2021); also BCE (0, 0, 0) and Focal (g, g, 0).

    p = sigmoid(x), p_neg = min(1 - p + clip, 1) if clip > 0 else 1 - p:

        y=1: -(1 - p)^gamma_pos * log(max(p, eps))
        y=0: -(1 - p_neg)^gamma_neg * log(max(p_neg, eps))

    Unlike the official code this returns the loss itself (not its negative sum), reduced by
    ``reduction``. ``detach_focal_weight=True`` (default) stops the gradient through the focusing
    weights, as the official ``disable_torch_grad_focal_loss=True`` does, which is how the paper's
    BCE/Focal/ASL baselines were trained; it is done with ``.detach()``, never by switching the
    global grad mode.
    """

    def __init__(self, gamma_neg: float = 4, gamma_pos: float = 1, clip: float = 0.05, eps: float = 1e-8,
                 reduction: str = "sum", detach_focal_weight: bool = True) -> None:
        super().__init__(reduction)
        _check_nonnegative("AsymmetricLoss", gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, eps=eps)
        if clip >= 1 or eps >= 1:
            raise ValueError(f"AsymmetricLoss: clip and eps must be < 1, got clip={clip!r}, eps={eps!r}")
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps
        self.detach_focal_weight = detach_focal_weight

    def _weight(self, w: torch.Tensor | float) -> torch.Tensor | float:
        return w.detach() if self.detach_focal_weight and isinstance(w, torch.Tensor) else w

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int | None = None) -> torch.Tensor:
        x, y = self._inputs(logits, targets)
        log_eps = math.log(self.eps) if self.eps > 0 else -math.inf
        # positives: log(max(p, eps)) = max(log p, log eps)
        log_p = F.logsigmoid(x).clamp(min=log_eps)
        loss_pos = -self._weight(_pow_of_log(F.logsigmoid(-x), self.gamma_pos)) * log_p
        # negatives
        if self.clip > 0:
            p = torch.sigmoid(x)
            p_neg = (torch.sigmoid(-x) + self.clip).clamp(max=1.0)
            log_p_neg = torch.log(p_neg.clamp(min=self.eps))  # finite: p_neg >= clip > 0
            w_neg = self._weight(_safe_pow((p - self.clip).clamp(min=0.0), self.gamma_neg))  # 1 - p_neg
        else:
            log_p_neg = F.logsigmoid(-x).clamp(min=log_eps)
            w_neg = self._weight(_pow_of_log(F.logsigmoid(x), self.gamma_neg))
        loss_neg = -w_neg * log_p_neg
        return self._reduce(torch.where(y > 0.5, loss_pos, loss_neg))


class WAN(MultiLabelLoss):
    """Weak assume-negative loss (Cole et al., CVPR 2021), C classes:

        y=1: -log p;    y=0: -log(1 - p) / (C - 1)
    """

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__(reduction)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int | None = None) -> torch.Tensor:
        x, y = self._inputs(logits, targets)
        num_classes = x.shape[1]
        if num_classes < 2:
            raise ValueError(f"WAN: needs at least 2 classes (weight 1/(C-1)), got C={num_classes}")
        loss = torch.where(y > 0.5, -F.logsigmoid(x), -F.logsigmoid(-x) / (num_classes - 1))
        return self._reduce(loss)


class BCELS(MultiLabelLoss):
    """BCE with label smoothing, unobserved labels assumed negative ('BCE-LS'):

        y=1: (1 - eps) * (-log p) + eps * (-log(1 - p))
        y=0: (1 - eps) * (-log(1 - p)) + eps * (-log p)
    """

    def __init__(self, eps: float = 0.1, reduction: str = "sum") -> None:
        super().__init__(reduction)
        if not 0 <= eps <= 1:
            raise ValueError(f"BCELS: eps must be in [0, 1], got {eps!r}")
        self.eps = eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int | None = None) -> torch.Tensor:
        x, y = self._inputs(logits, targets)
        nll_pos, nll_neg = -F.logsigmoid(x), -F.logsigmoid(-x)
        e = self.eps
        loss = torch.where(y > 0.5, (1 - e) * nll_pos + e * nll_neg, (1 - e) * nll_neg + e * nll_pos)
        return self._reduce(loss)


class EPR(MultiLabelLoss):
    """Expected positive regularisation (Cole et al., CVPR 2021), k = expected_positives:

        data term  y=1: -log p;   y=0: 0
        regulariser R = (mean over the batch of sum_c p - k)^2 / C^2

    'sum' / 'mean' return the reduced data term + R (R added once); 'none' returns the (B, C)
    data term + R / (B*C), so that its sum equals the 'sum' result.
    """

    def __init__(self, expected_positives: float = 2.9, reduction: str = "sum") -> None:
        super().__init__(reduction)
        _check_nonnegative("EPR", expected_positives=expected_positives)
        self.expected_positives = expected_positives

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, epoch: int | None = None) -> torch.Tensor:
        x, y = self._inputs(logits, targets)
        data = torch.where(y > 0.5, -F.logsigmoid(x), torch.zeros_like(x))
        if data.numel() == 0:  # an empty batch: no data term and no batch mean to regularise
            return self._reduce(data)
        reg = (torch.sigmoid(x).sum(dim=1).mean() - self.expected_positives) ** 2 / x.shape[1] ** 2
        if self.reduction == "none":
            return data + reg / data.numel()
        return self._reduce(data) + reg


class LargeLoss(MultiLabelLoss):
    """Large loss rejection / correction (Kim et al., CVPR 2022): LL-R, LL-Ct, LL-Cp.

    Elementwise BCE with unobserved labels (y=0) assumed negative. From the second epoch
    (0-based epoch t >= 1), among the unobserved labels of the batch, the k with the largest
    BCE are modified, k = ceil(B*C*delta*t) ('reject', 'temporary') or ceil(B*C*delta)
    ('permanent'), at most the number of unobserved labels:

        reject:    their loss is set to 0                                  (LL-R)
        temporary: their loss becomes the BCE towards 1, -log p            (LL-Ct)
        permanent: as temporary, and forward returns (loss, flip_mask)     (LL-Cp)
                   so that the trainer sets those labels to 1 for good.

    Default reduction 'mean' (over all B*C elements, as in that paper).
    """

    MODES = ("reject", "temporary", "permanent")

    def __init__(self, mode: str = "reject", delta: float = 0.002, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if mode not in self.MODES:
            raise ValueError(f"LargeLoss: mode must be one of {self.MODES}, got {mode!r}")
        if not (math.isfinite(delta) and delta > 0):
            raise ValueError(f"LargeLoss: delta must be a finite number > 0, got {delta!r}")
        self.mode, self.delta = mode, delta
        self.updates_labels = mode == "permanent"  # instance value shadows the class default False

    def num_modified(self, batch_size: int, num_classes: int, epoch: int | None) -> int:
        """k before clamping to the number of unobserved labels (0 before the second epoch)."""
        if epoch is None or epoch < 1:
            return 0
        rate = self.delta if self.mode == "permanent" else self.delta * epoch
        # round() absorbs float noise: 80 * (0.05 * 3) = 12.000000000000002
        return math.ceil(round(batch_size * num_classes * rate, 9))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                epoch: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        _check_epoch("LargeLoss", epoch)
        x, y = self._inputs(logits, targets)
        unobserved = y < 0.5
        nll_pos, nll_neg = -F.logsigmoid(x), -F.logsigmoid(-x)
        loss = torch.where(unobserved, nll_neg, nll_pos)
        selected = torch.zeros_like(unobserved)
        k = min(self.num_modified(x.shape[0], x.shape[1], epoch), unobserved.numel())
        if k > 0:
            scores = nll_neg.detach().masked_fill(~unobserved, -math.inf).flatten()
            top = torch.topk(scores, k, sorted=False).indices
            # with fewer than k unobserved labels, topk also returns observed ones: mask them out
            selected = selected.flatten().index_fill(0, top, True).view_as(unobserved) & unobserved
            if self.mode == "reject":
                loss = loss.masked_fill(selected, 0.0)
            else:
                loss = torch.where(selected, nll_pos, loss)
            # topk ranks a NaN first, and rejecting it would hide it (finite loss, NaN gradient): keep it NaN
            loss = torch.where(torch.isnan(x), x.detach(), loss)
        loss = self._reduce(loss)
        return (loss, selected) if self.updates_labels else loss


# ----------------------------------------------------------------------------- registry
# Each builder's signature is the one place where a --loss name's hyperparameters and defaults live.

def _bce(reduction: str = "sum") -> AsymmetricLoss:
    """BCE: AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)."""
    return AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0, reduction=reduction)


def _focal(gamma: float = 2.0, reduction: str = "sum") -> AsymmetricLoss:
    """Focal: AsymmetricLoss(gamma_neg=gamma, gamma_pos=gamma, clip=0)."""
    return AsymmetricLoss(gamma_neg=gamma, gamma_pos=gamma, clip=0, reduction=reduction)


def _asl(gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8,
         reduction: str = "sum") -> AsymmetricLoss:
    """Asl: the official training script's AsymmetricLoss(gamma_neg=4, gamma_pos=0, clip=0.05)."""
    return AsymmetricLoss(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, eps=eps, reduction=reduction)


def _ll_r(delta: float = 0.002, reduction: str = "mean") -> LargeLoss:
    return LargeLoss(mode="reject", delta=delta, reduction=reduction)


def _ll_ct(delta: float = 0.002, reduction: str = "mean") -> LargeLoss:
    return LargeLoss(mode="temporary", delta=delta, reduction=reduction)


def _ll_cp(delta: float = 0.002, reduction: str = "mean") -> LargeLoss:
    return LargeLoss(mode="permanent", delta=delta, reduction=reduction)


_BUILDERS: dict[str, Callable[..., MultiLabelLoss]] = {
    "BCE": _bce,
    "Focal": _focal,
    "Asl": _asl,
    "Hill": Hill,
    "SPLC": SPLC,
    "WAN": WAN,
    "BCE-LS": BCELS,
    "EPR": EPR,
    "LL-R": _ll_r,
    "LL-Ct": _ll_ct,
    "LL-Cp": _ll_cp,
}

LOSS_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def canonical_loss_name(name: str) -> str:
    """The canonical spelling of a --loss name, matched case-insensitively; ValueError if unknown."""
    if isinstance(name, str):
        for known in LOSS_NAMES:
            if known.lower() == name.strip().lower():
                return known
    raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSS_NAMES)}")


def loss_hyperparameters(name: str) -> dict[str, Any]:
    """{hyperparameter: default} that ``build_loss(name, ...)`` accepts."""
    builder = _BUILDERS[canonical_loss_name(name)]
    return {k: p.default for k, p in inspect.signature(builder).parameters.items()}


def build_loss(name: str, **hyperparameters: Any) -> MultiLabelLoss:
    """Build the loss called ``name`` (case-insensitive, one of LOSS_NAMES).

    Hyperparameters not given keep the defaults of loss_hyperparameters(name); one the loss
    does not take raises ValueError.
    """
    canonical = canonical_loss_name(name)
    accepted = loss_hyperparameters(canonical)
    unknown = [k for k in hyperparameters if k not in accepted]
    if unknown:
        raise ValueError(f"loss {canonical} does not take hyperparameter(s) {', '.join(unknown)}; "
                         f"{canonical} accepts: {', '.join(f'{k} (default {v!r})' for k, v in accepted.items())}")
    return _BUILDERS[canonical](**hyperparameters)
