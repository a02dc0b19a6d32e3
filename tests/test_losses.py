"""Tests for src/loss_functions/losses.py against naive float64 references written from the formulas."""
from __future__ import annotations

import ast
import inspect
import math
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from src.loss_functions.losses import (
    BCELS,
    EPR,
    FINITE_LOGIT_BOUND,
    LOSS_NAMES,
    SPLC,
    WAN,
    AsymmetricLoss,
    Hill,
    LargeLoss,
    build_loss,
    canonical_loss_name,
    loss_hyperparameters,
)

LOSSES_PY = Path(__file__).resolve().parents[1] / "src" / "loss_functions" / "losses.py"
REDUCTIONS = ("none", "mean", "sum")
TARGET_DTYPES = (torch.float32, torch.long, torch.bool)


# ----------------------------------------------------------------------------- naive float64 references

def sig(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-x))


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def ref_hill(x, y, lamb=1.5, margin=1.0, gamma=2.0):
    pm, p = sig(x - margin), sig(x)
    return y * (-(1 - pm) ** gamma * torch.log(pm)) + (1 - y) * (lamb - p) * p ** 2


def ref_splc(x, y, epoch, tau=0.6, change_epoch=1, margin=1.0, gamma=2.0):
    xs = torch.where(y == 1, x - margin, x)
    yy = y.clone()
    if epoch is not None and epoch >= change_epoch:
        yy = torch.where(sig(xs) > tau, torch.ones_like(y), y)
    q = sig(xs)
    return yy * (-(1 - q) ** gamma * torch.log(q)) + (1 - yy) * (-q ** gamma * torch.log(1 - q))


def ref_asl(x, y, gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-8, detach=False):
    p = sig(x)
    p_neg = torch.clamp(1 - p + clip, max=1.0) if clip > 0 else 1 - p
    w_pos, w_neg = (1 - p) ** gamma_pos, (1 - p_neg) ** gamma_neg
    if detach:
        w_pos, w_neg = w_pos.detach(), w_neg.detach()
    return (y * (-w_pos * torch.log(torch.clamp(p, min=eps)))
            + (1 - y) * (-w_neg * torch.log(torch.clamp(p_neg, min=eps))))


def ref_wan(x, y):
    p, c = sig(x), x.shape[1]
    return y * -torch.log(p) + (1 - y) * -torch.log(1 - p) / (c - 1)


def ref_bcels(x, y, eps=0.1):
    p = sig(x)
    lp, ln = -torch.log(p), -torch.log(1 - p)
    return y * ((1 - eps) * lp + eps * ln) + (1 - y) * ((1 - eps) * ln + eps * lp)


def ref_epr(x, y, reduction, k=2.9):
    p = sig(x)
    data = y * -torch.log(p)
    reg = (p.sum(1).mean() - k) ** 2 / x.shape[1] ** 2
    return data + reg / data.numel() if reduction == "none" else reduce(data, reduction) + reg


def ref_large_loss(x, y, epoch, mode, delta, reduction="mean"):
    """Brute force: python lists, sort all unobserved BCE losses, exact rational k."""
    B, C = x.shape
    xs, ys = x.tolist(), y.tolist()
    nll_neg = [[math.log1p(math.exp(v)) for v in row] for row in xs]   # -log(1 - p)
    nll_pos = [[math.log1p(math.exp(-v)) for v in row] for row in xs]  # -log p
    loss = [[nll_pos[i][j] if ys[i][j] == 1 else nll_neg[i][j] for j in range(C)] for i in range(B)]
    unobserved = [(nll_neg[i][j], i, j) for i in range(B) for j in range(C) if ys[i][j] == 0]
    chosen = set()
    if epoch is not None and epoch >= 1:
        rate = Fraction(str(delta)) * (1 if mode == "permanent" else epoch)
        k = min(math.ceil(B * C * rate), len(unobserved))
        chosen = {(i, j) for _, i, j in sorted(unobserved, reverse=True)[:k]}
    for i, j in chosen:
        loss[i][j] = 0.0 if mode == "reject" else nll_pos[i][j]
    mask = torch.zeros(B, C, dtype=torch.bool)
    for i, j in chosen:
        mask[i, j] = True
    return reduce(torch.tensor(loss, dtype=torch.float64), reduction), mask


def random_batch(seed: int, b: int = 6, c: int = 7, scale: float = 3.0, pos_rate: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    y = (torch.rand(b, c, generator=g) < pos_rate).double()
    return x, y


def as_dtype(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return y.bool() if dtype == torch.bool else y.to(dtype)


def check_against_reference(loss_fn, ref_fn, x, y, **call) -> None:
    """float32 module output vs float64 reference, and float64 module output vs reference."""
    expected = ref_fn(x, y.double())  # the reference always sees float64 targets
    got64 = loss_fn(x, y, **call)
    torch.testing.assert_close(got64, expected, rtol=1e-10, atol=1e-12)
    got32 = loss_fn(x.float(), y, **call)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), expected, rtol=2e-5, atol=2e-5)


HAND_PICKED = torch.tensor([[-8.0, -3.0, -1.0, -0.25, 0.0, 0.3, 1.0, 2.5, 6.0, 12.0]], dtype=torch.float64)


# ----------------------------------------------------------------------------- Part A values

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tdtype", TARGET_DTYPES)
def test_hill_matches_formula(reduction, tdtype):
    for seed, hp in enumerate([{}, {"lamb": 1.2, "margin": 0.5, "gamma": 1.0}, {"gamma": 0.0, "margin": 0.0}]):
        loss_fn = Hill(reduction=reduction, **hp)
        x, y = random_batch(seed)
        check_against_reference(loss_fn, lambda a, b: reduce(ref_hill(a, b, **hp), reduction), x, as_dtype(y, tdtype))
    for yv in (0.0, 1.0):
        y = torch.full_like(HAND_PICKED, yv)
        check_against_reference(Hill(reduction=reduction), lambda a, b: reduce(ref_hill(a, b), reduction),
                                HAND_PICKED, as_dtype(y, tdtype))


def test_hill_hand_value():
    # negative at p = 0.5: (1.5 - 0.5) * 0.25; positive at x = 1 (margin 1): -(1 - 0.5)^2 log 0.5
    got = Hill(reduction="none")(torch.tensor([[0.0, 1.0]]), torch.tensor([[0, 1]]))
    torch.testing.assert_close(got, torch.tensor([[0.25, 0.25 * math.log(2)]]))


def test_hill_positive_far_negative_logit_is_finite():
    # the official Hill gives inf here (log(sigmoid(-201)) underflows in fp32)
    x = torch.tensor([[-200.0]], requires_grad=True)
    loss = Hill()(x, torch.ones(1, 1))
    loss.backward()
    assert math.isclose(loss.item(), 201.0, rel_tol=1e-6)
    assert math.isclose(x.grad.item(), -1.0, rel_tol=1e-6)


def test_hill_negative_gradient_shape():
    p = torch.linspace(0, 1, 20001, dtype=torch.float64)[1:-1]
    x = torch.logit(p).reshape(-1, 1).requires_grad_(True)
    Hill()(x, torch.zeros_like(x)).backward()
    g = x.grad.flatten()
    torch.testing.assert_close(g, 3 * p ** 2 * (1 - p) ** 2)  # (2*lamb*p - 3p^2) p (1-p), lamb = 1.5
    assert g[0] < 1e-7 and g[-1] < 1e-7  # 0 at p = 0 and p = 1
    assert abs(g.max().item() - 0.1875) < 1e-9
    assert abs(p[g.argmax()].item() - 0.5) < 1e-4
    assert (g >= 0).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tdtype", TARGET_DTYPES)
@pytest.mark.parametrize("epoch", [None, 0, 1, 5])
def test_splc_matches_formula(reduction, tdtype, epoch):
    for seed, hp in enumerate([{}, {"tau": 0.7, "change_epoch": 2, "margin": 0.5, "gamma": 1.5}]):
        x, y = random_batch(100 + seed)
        xs = torch.where(y == 1, x - hp.get("margin", 1.0), x)
        keep = (sig(xs) - hp.get("tau", 0.6)).abs() > 1e-4  # stay off the threshold's discontinuity
        x = torch.where(keep, x, x + 0.01)
        loss_fn = SPLC(reduction=reduction, **hp)
        check_against_reference(loss_fn, lambda a, b: reduce(ref_splc(a, b, epoch, **hp), reduction),
                                x, as_dtype(y, tdtype), epoch=epoch)


def test_splc_behaviour():
    splc = SPLC(reduction="none")  # tau 0.6, change_epoch 1, margin 1, gamma 2
    low, high = math.log(0.5 / 0.5), math.log(0.8 / 0.2)  # negatives at p = 0.5 and p = 0.8
    x = torch.tensor([[low, high, high]], dtype=torch.float64)
    y = torch.tensor([[0, 0, 1]])
    neg = lambda p: -p ** 2 * math.log(1 - p)  # noqa: E731
    pos = lambda p: -(1 - p) ** 2 * math.log(p)  # noqa: E731
    pm = 1 / (1 + math.exp(-(high - 1)))  # annotated positive: margin applied
    for epoch in (None, 0):  # before change_epoch: negative-side loss for both negatives
        torch.testing.assert_close(splc(x, y, epoch=epoch), torch.tensor([[neg(0.5), neg(0.8), pos(pm)]],
                                                                           dtype=torch.float64))
    for epoch in (1, 7):  # above tau the negative becomes a positive, with its un-shifted logit
        torch.testing.assert_close(splc(x, y, epoch=epoch), torch.tensor([[neg(0.5), pos(0.8), pos(pm)]],
                                                                           dtype=torch.float64))
    late = SPLC(change_epoch=3, reduction="none")
    assert late(x, y, epoch=2)[0, 1].item() == pytest.approx(neg(0.8))
    assert late(x, y, epoch=3)[0, 1].item() == pytest.approx(pos(0.8))
    # the gradient of the pseudo-positive flips sign (pushes the logit up)
    xg = x.clone().requires_grad_(True)
    splc(xg, y, epoch=1).sum().backward()
    assert xg.grad[0, 0] > 0 and xg.grad[0, 1] < 0
    # nothing is stored between calls
    assert splc(x, y, epoch=0)[0, 1].item() == pytest.approx(neg(0.8))


def test_splc_margin_only_on_annotated_positives():
    # x = 1.3: an annotated positive has q = sigmoid(0.3) < tau and is not flipped; a negative at
    # the same logit has sigmoid(1.3) > tau and is flipped, keeping x = 1.3.
    x = torch.tensor([[1.3, 1.3]], dtype=torch.float64)
    got = SPLC(reduction="none")(x, torch.tensor([[1, 0]]), epoch=1)
    q_pos, q_neg = 1 / (1 + math.exp(-0.3)), 1 / (1 + math.exp(-1.3))
    torch.testing.assert_close(got, torch.tensor([[-(1 - q_pos) ** 2 * math.log(q_pos),
                                                   -(1 - q_neg) ** 2 * math.log(q_neg)]], dtype=torch.float64))


def test_splc_focal_weight_not_detached():
    x = torch.tensor([[0.4]], dtype=torch.float64, requires_grad=True)
    SPLC()(x, torch.zeros(1, 1, dtype=torch.float64)).backward()
    q = 1 / (1 + math.exp(-0.4))
    full = q ** 2 * (q - 2 * (1 - q) * math.log(1 - q))  # d/dx[-q^2 log(1-q)]
    assert x.grad.item() == pytest.approx(full, rel=1e-10)


ASL_CONFIGS = [
    {},  # class defaults (4, 1, 0.05, 1e-8)
    {"gamma_neg": 0, "gamma_pos": 0, "clip": 0},  # BCE
    {"gamma_neg": 2, "gamma_pos": 2, "clip": 0},  # Focal
    {"gamma_neg": 4, "gamma_pos": 0, "clip": 0.05},  # Asl
    {"gamma_neg": 0.5, "gamma_pos": 1.5, "clip": 0.2, "eps": 0.3},  # eps clamp active
    {"gamma_neg": 3, "gamma_pos": 0.5, "clip": 0, "eps": 0.01},
]


@pytest.mark.parametrize("hp", ASL_CONFIGS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tdtype", TARGET_DTYPES)
def test_asl_matches_formula(hp, reduction, tdtype):
    x, y = random_batch(7, scale=4.0, pos_rate=0.5)
    loss_fn = AsymmetricLoss(reduction=reduction, **hp)
    check_against_reference(loss_fn, lambda a, b: reduce(ref_asl(a, b, **hp), reduction), x, as_dtype(y, tdtype))
    y = torch.ones_like(HAND_PICKED)
    check_against_reference(loss_fn, lambda a, b: reduce(ref_asl(a, b, **hp), reduction),
                            HAND_PICKED, as_dtype(y, tdtype))
    check_against_reference(loss_fn, lambda a, b: reduce(ref_asl(a, b, **hp), reduction),
                            HAND_PICKED, as_dtype(1 - y, tdtype))


@pytest.mark.parametrize("hp", ASL_CONFIGS)
@pytest.mark.parametrize("detach", [True, False])
def test_asl_gradient_detach(hp, detach):
    x, y = random_batch(8, scale=4.0, pos_rate=0.5)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    AsymmetricLoss(detach_focal_weight=detach, **hp)(xa, y).backward()
    ref_asl(xb, y, detach=detach, **hp).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-9, atol=1e-12)


def test_asl_detach_changes_gradient_and_keeps_grad_mode():
    x, y = random_batch(9, scale=2.0, pos_rate=0.5)
    grads = []
    for detach in (True, False):
        xg = x.clone().requires_grad_(True)
        AsymmetricLoss(detach_focal_weight=detach)(xg, y).backward()
        grads.append(xg.grad)
        assert torch.is_grad_enabled()
    assert not torch.allclose(grads[0], grads[1])
    with torch.no_grad():  # global grad mode is left as the caller set it
        AsymmetricLoss()(x, y)
        assert not torch.is_grad_enabled()


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("hp", [(4, 1, 0.05), (0, 0, 0), (2, 2, 0), (4, 0, 0.05), (3, 2, 0.1)])
def test_asl_matches_timm(hp, detach):
    timm_loss = pytest.importorskip("timm.loss")
    gamma_neg, gamma_pos, clip = hp
    x, y = random_batch(11, b=8, c=20, scale=3.0, pos_rate=0.3)
    x = x.float()
    ours_x, timm_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours = AsymmetricLoss(gamma_neg, gamma_pos, clip, reduction="sum", detach_focal_weight=detach)(ours_x, y)
    kwargs = {"disable_torch_grad_focal_loss": detach}
    if "reduction" in inspect.signature(timm_loss.AsymmetricLossMultiLabel).parameters:
        kwargs["reduction"] = "sum"  # older timm has no reduction argument and always sums
    # timm returns the loss itself (official ASL's -loss.sum() with the sign already applied)
    theirs = timm_loss.AsymmetricLossMultiLabel(gamma_neg, gamma_pos, clip, **kwargs)(timm_x, y.float())
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_x.grad, timm_x.grad, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Part B values

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tdtype", TARGET_DTYPES)
def test_wan_bcels_epr_match_formulas(reduction, tdtype):
    x, y = random_batch(21)
    yt = as_dtype(y, tdtype)
    check_against_reference(WAN(reduction=reduction), lambda a, b: reduce(ref_wan(a, b), reduction), x, yt)
    for eps in (0.1, 0.0, 0.3):
        check_against_reference(BCELS(eps=eps, reduction=reduction),
                                lambda a, b: reduce(ref_bcels(a, b, eps), reduction), x, yt)
    for k in (2.9, 0.0, 5.0):
        check_against_reference(EPR(expected_positives=k, reduction=reduction),
                                lambda a, b: ref_epr(a, b, reduction, k), x, yt)


def test_epr_none_sums_to_sum():
    x, y = random_batch(22)
    torch.testing.assert_close(EPR(reduction="none")(x, y).sum(), EPR(reduction="sum")(x, y))


def test_wan_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        WAN()(torch.zeros(3, 1), torch.zeros(3, 1))


@pytest.mark.parametrize("mode", LargeLoss.MODES)
@pytest.mark.parametrize("epoch", [None, 1, 3, 6])
@pytest.mark.parametrize("delta", [0.002, 0.05, 0.13])
def test_large_loss_matches_brute_force(mode, epoch, delta):
    for seed, (b, c) in enumerate([(8, 10), (5, 7), (3, 40)]):
        x, y = random_batch(300 + seed, b=b, c=c)
        for reduction in REDUCTIONS:
            out = LargeLoss(mode, delta, reduction=reduction)(x, y, epoch=epoch)
            expected, mask = ref_large_loss(x, y, epoch, mode, delta, reduction)
            if mode == "permanent":
                out, flip = out
                assert flip.dtype == torch.bool and flip.shape == (b, c)
                assert torch.equal(flip, mask)
            torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def test_large_loss_k_schedule_and_clamp():
    ll = LargeLoss("temporary", 0.05)
    assert ll.num_modified(8, 10, 3) == 12  # 80 * (0.05 * 3) is 12.000000000000002 in floats
    assert ll.num_modified(8, 10, 0) == 0 and ll.num_modified(8, 10, None) == 0
    assert LargeLoss("permanent", 0.05).num_modified(8, 10, 3) == 4
    # k larger than the number of unobserved labels: every unobserved label is modified
    x = torch.randn(2, 3, dtype=torch.float64)
    y = torch.tensor([[1, 1, 0], [1, 0, 1]])
    loss = LargeLoss("reject", 0.9, reduction="none")(x, y, epoch=5)
    assert loss[0, 2] == 0 and loss[1, 1] == 0 and (loss[y == 1] > 0).all()


def test_large_loss_permanent_flip_mask():
    x = torch.tensor([[5.0, -2.0, 1.0, 9.0], [0.5, 3.0, -1.0, 4.0]])
    y = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0]])
    ll = build_loss("LL-Cp", delta=0.25)  # k = ceil(8 * 0.25) = 2 every epoch from the second
    assert ll.updates_labels and not build_loss("LL-Ct").updates_labels and not Hill.updates_labels
    loss, flip = ll(x, y, epoch=1)
    # largest unobserved losses are the largest unobserved logits: 5.0 and 4.0 (9.0 is observed)
    assert flip.tolist() == [[True, False, False, False], [False, False, False, True]]
    _, flip_later = ll(x, y, epoch=4)
    assert torch.equal(flip_later, flip)  # fixed k, not growing
    _, flip0 = ll(x, y, epoch=0)
    assert not flip0.any()
    expected = torch.where(flip | (y == 1), torch.nn.functional.softplus(-x), torch.nn.functional.softplus(x))
    torch.testing.assert_close(loss, expected.mean())


def test_large_loss_reject_gradient_is_zero_on_rejected():
    x = torch.tensor([[5.0, -2.0, 1.0]], requires_grad=True)
    LargeLoss("reject", 0.3)(x, torch.zeros(1, 3), epoch=1).backward()  # k = ceil(0.9) = 1
    assert x.grad[0, 0] == 0 and x.grad[0, 1] > 0 and x.grad[0, 2] > 0


# ----------------------------------------------------------------------------- every loss: stability, grads

ALL_LOSSES = [
    ("Hill", Hill()), ("Hill g0.5", Hill(gamma=0.5)),
    ("SPLC", SPLC()), ("SPLC g0.5", SPLC(gamma=0.5)),
    ("ASL", AsymmetricLoss()), ("BCE", build_loss("BCE")), ("Focal", build_loss("Focal")),
    ("Asl", build_loss("Asl")),
    ("ASL frac grad", AsymmetricLoss(0.5, 0.5, 0.05, detach_focal_weight=False)),
    ("Focal frac grad", AsymmetricLoss(0.5, 0.5, 0, detach_focal_weight=False)),
    ("ASL eps0", AsymmetricLoss(2, 1, 0, eps=0.0, detach_focal_weight=False)),
    ("WAN", WAN()), ("BCE-LS", BCELS()), ("EPR", EPR()),
    ("LL-R", LargeLoss("reject", 0.1)), ("LL-Ct", LargeLoss("temporary", 0.1)),
    ("LL-Cp", LargeLoss("permanent", 0.1)),
]
EXTREMES = [-1e4, -3e3, -200.0, -60.0, -17.0, -1.0, 0.0, 1.0, 17.0, 60.0, 200.0, 3e3, 1e4]


def scalar_loss(loss_fn, x, y, epoch=None):
    out = loss_fn(x, y, epoch=epoch)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name,loss_fn", ALL_LOSSES, ids=[n for n, _ in ALL_LOSSES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_extreme_logits_finite(name, loss_fn, dtype):
    v = torch.tensor(EXTREMES)
    x = torch.stack([v, v, v.flip(0)]).to(dtype)
    y = torch.stack([torch.ones_like(v), torch.zeros_like(v), (torch.arange(len(v)) % 2).float()])
    for reduction in REDUCTIONS:
        loss_fn.reduction = reduction
        try:
            xg = x.clone().requires_grad_(True)
            loss = scalar_loss(loss_fn, xg, y, epoch=3)
            assert loss.dtype == torch.float32
            assert torch.isfinite(loss).all(), (name, reduction, loss)
            loss.sum().backward()
            assert xg.grad.dtype == dtype
            assert torch.isfinite(xg.grad).all(), (name, reduction, xg.grad)
        finally:
            loss_fn.reduction = "sum"
    # half logits are computed in float32: same value as float32 logits of the same numbers
    torch.testing.assert_close(scalar_loss(loss_fn, x, y, epoch=3), scalar_loss(loss_fn, x.float(), y, epoch=3))


GRADCHECK_LOSSES = [
    ("Hill", Hill()), ("SPLC", SPLC()), ("ASL full grad", AsymmetricLoss(detach_focal_weight=False)),
    ("Focal full grad", AsymmetricLoss(2, 2, 0, detach_focal_weight=False)), ("BCE", build_loss("BCE")),
    ("WAN", WAN()), ("BCE-LS", BCELS()), ("EPR", EPR()), ("LL-R", LargeLoss("reject", 0.1)),
    ("LL-Ct", LargeLoss("temporary", 0.1)), ("LL-Cp", LargeLoss("permanent", 0.1)),
]


@pytest.mark.parametrize("name,loss_fn", GRADCHECK_LOSSES, ids=[n for n, _ in GRADCHECK_LOSSES])
def test_gradcheck(name, loss_fn):
    x, y = random_batch(41, b=4, c=5, scale=2.0, pos_rate=0.4)
    # keep SPLC off its threshold and ASL off its clip kink so the finite differences are smooth
    x = torch.where((sig(x) - 0.6).abs() < 0.02, x + 0.3, x)
    x = torch.where((sig(x) - 0.05).abs() < 0.02, x - 0.5, x).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: scalar_loss(loss_fn, t, y, epoch=2), (x,))


@pytest.mark.parametrize("name,loss_fn", ALL_LOSSES[:1] + ALL_LOSSES[2:3] + ALL_LOSSES[4:5] + ALL_LOSSES[11:],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_runs_on_each_available_device(name, loss_fn):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    x, y = random_batch(51)
    results = []
    for device in devices:
        xd = x.float().to(device).requires_grad_(True)
        out = scalar_loss(loss_fn, xd, y.bool().to(device), epoch=2)
        out.backward()
        assert out.device.type == device and xd.grad.device.type == device
        results.append(out.item())
    assert all(math.isclose(r, results[0], rel_tol=1e-5) for r in results)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_finite_at_the_stated_logit_bound(name, dtype):
    """The module docstring's promise: finite loss and gradient for |logit| <= FINITE_LOGIT_BOUND, every dtype
    (float16 cannot hold 1e6: its largest finite value stands in), every reduction, a 64 x 80 batch."""
    b = min(FINITE_LOGIT_BOUND, torch.finfo(dtype).max)
    g = torch.Generator().manual_seed(5)
    x = (torch.randint(-1, 2, (64, 80), generator=g).double() * b).to(dtype)  # -b, 0, b
    x[0, :3] = torch.tensor([-b, b, 1.0], dtype=torch.float64).to(dtype)
    y = (torch.rand(64, 80, generator=g) < 0.3).float()
    for reduction in REDUCTIONS:
        loss_fn = build_loss(name, reduction=reduction)
        xg = x.clone().requires_grad_(True)
        loss = scalar_loss(loss_fn, xg, y, epoch=3)
        loss.sum().backward()
        assert torch.isfinite(loss).all(), (name, dtype, reduction)
        assert torch.isfinite(xg.grad).all(), (name, dtype, reduction)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_empty_batch_gives_zero_for_every_reduction(name):
    for reduction in REDUCTIONS:
        x = torch.zeros(0, 6, requires_grad=True)
        loss = scalar_loss(build_loss(name, reduction=reduction), x, torch.zeros(0, 6), epoch=3)
        if reduction == "none":
            assert loss.shape == (0, 6)
        else:
            assert loss.shape == () and loss.item() == 0.0, (name, reduction, loss)
        loss.sum().backward()  # still part of the graph
        assert x.grad.shape == (0, 6)


# ----------------------------------------------------------------------------- input checks

def test_bad_inputs_raise():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="targets must be 0/1"):
        Hill()(x, torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="targets must be 0/1"):
        SPLC()(x, torch.tensor([[0, 1, 2], [0, 0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        WAN()(x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(batch, classes\)"):
        Hill()(torch.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match="floating-point"):
        Hill()(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="reduction"):
        Hill(reduction="avg")
    with pytest.raises(ValueError, match="epoch"):
        SPLC()(x, torch.zeros(2, 3), epoch=-1)
    with pytest.raises(ValueError, match="mode"):
        LargeLoss("forever")
    with pytest.raises(ValueError, match="tau"):
        SPLC(tau=1.5)


# ----------------------------------------------------------------------------- registry

def test_build_loss_names_case_insensitive():
    assert LOSS_NAMES == ("BCE", "Focal", "Asl", "Hill", "SPLC", "WAN", "BCE-LS", "EPR", "LL-R", "LL-Ct", "LL-Cp")
    for name in LOSS_NAMES:
        for spelling in (name, name.lower(), name.upper()):
            assert canonical_loss_name(spelling) == name
            assert isinstance(build_loss(spelling), torch.nn.Module)
    assert isinstance(build_loss("hill"), Hill) and isinstance(build_loss("bce-ls"), BCELS)
    assert build_loss("ll-r", delta=0.05).delta == 0.05 and build_loss("LL-R").mode == "reject"
    assert build_loss("LL-Ct").mode == "temporary" and build_loss("LL-Cp").mode == "permanent"


def test_build_loss_official_mappings():
    bce, focal, asl = build_loss("BCE"), build_loss("Focal"), build_loss("Asl")
    assert (bce.gamma_neg, bce.gamma_pos, bce.clip) == (0, 0, 0)
    assert (focal.gamma_neg, focal.gamma_pos, focal.clip) == (2, 2, 0)
    assert (asl.gamma_neg, asl.gamma_pos, asl.clip) == (4, 0, 0.05)
    f3 = build_loss("focal", gamma=3)
    assert (f3.gamma_neg, f3.gamma_pos) == (3, 3)
    assert build_loss("SPLC", tau=0.7).tau == 0.7 and build_loss("Hill").reduction == "sum"
    assert loss_hyperparameters("Focal") == {"gamma": 2.0, "reduction": "sum"}
    assert loss_hyperparameters("hill") == {"lamb": 1.5, "margin": 1.0, "gamma": 2.0, "reduction": "sum"}
    assert loss_hyperparameters("LL-Cp") == {"delta": 0.002, "reduction": "mean"}
    assert loss_hyperparameters("SPLC")["change_epoch"] == 1


def test_build_loss_errors():
    with pytest.raises(ValueError) as err:
        build_loss("Hilll")
    assert all(n in str(err.value) for n in LOSS_NAMES)
    with pytest.raises(ValueError) as err:
        canonical_loss_name("nope")
    assert "SPLC" in str(err.value)
    with pytest.raises(ValueError) as err:
        build_loss("Hill", tau=0.6)
    msg = str(err.value)
    assert "tau" in msg and "Hill" in msg and all(k in msg for k in ("lamb", "margin", "gamma", "reduction"))
    with pytest.raises(ValueError, match="gamma_neg"):
        build_loss("Focal", gamma_neg=3)


# ----------------------------------------------------------------------------- self-containment, figure

def test_losses_py_imports_only_torch_and_stdlib():
    tree = ast.parse(LOSSES_PY.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in losses.py"
            modules.add(node.module.split(".")[0])
    assert "torch" in modules
    assert all(m == "torch" or m in sys.stdlib_module_names for m in modules), modules


def test_plot_gradients_writes_png(tmp_path):
    from src.tools import plot_gradients

    out = tmp_path / "figs" / "g.png"
    plot_gradients.main(["--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_gradients_curves():
    from src.tools.plot_gradients import negative_gradient

    p = torch.tensor([0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    torch.testing.assert_close(negative_gradient(build_loss("BCE"), p), p)  # BCE: dL/dx = p
    splc = negative_gradient(build_loss("SPLC"), p, epoch=1)
    assert (splc[:2] > 0).all() and (splc[2:] < 0).all()  # sign flips above tau = 0.6


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("epoch", [None, 0, 3])
def test_infinite_logits_give_a_finite_gradient_wherever_the_loss_is_finite(name, epoch):
    """Every (logit, target) pair with a logit of +-inf, one element at a time among finite ones: an element whose
    loss is finite has a finite gradient (Hill and SPLC gave NaN through the branch of torch.where not taken)."""
    for value in (math.inf, -math.inf):
        for target in (0.0, 1.0):
            x = torch.linspace(-3, 3, 12).view(3, 4).clone()
            x[1, 2] = value
            y = torch.zeros(3, 4)
            y[:, 0] = 1.0
            y[1, 2] = target
            xg = x.requires_grad_(True)
            loss = scalar_loss(build_loss(name, reduction="none"), xg, y, epoch=epoch)
            if not torch.isfinite(loss[1, 2]):
                continue  # a +inf loss: the trainer stops on it
            loss.sum().backward()
            assert torch.isfinite(xg.grad).all(), (name, value, target, xg.grad)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("epoch", [0, 3])
def test_a_nan_logit_gives_a_nan_loss(name, epoch):
    """A NaN logit never hides behind a finite loss (LL-R rejected it: finite loss, NaN gradient); the NaN loss
    is what the trainer's non-finite-loss check stops on."""
    x = torch.linspace(-3, 3, 40).view(4, 10).clone()
    x[2, 5] = math.nan
    y = torch.zeros(4, 10)
    y[:, 0] = 1.0
    loss = scalar_loss(build_loss(name), x.requires_grad_(True), y, epoch=epoch)
    assert torch.isnan(loss).all(), name


def test_plot_gradients_never_replaces_a_file_it_did_not_draw(tmp_path, capsys):
    from src.tools import plot_gradients

    out = tmp_path / "notes.txt"
    out.write_text("keep me\n")
    with pytest.raises(SystemExit) as e:
        plot_gradients.main(["--out", str(out)])
    assert e.value.code == 2 and f"--out {out} exists and is not a PNG drawn by" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"
    png = tmp_path / "g.png"
    plot_gradients.main(["--out", str(png)])
    plot_gradients.main(["--out", str(png)])  # its own figure is replaced
    assert png.read_bytes()[:4] == b"\x89PNG"
