"""Tests for src/data/augment.py: policy table, sampling distributions, op semantics, PIL fidelity, batched == per-sample."""
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from src.data import augment as A
from src.data.official_reference import pil_op as pil_reference  # the randaugment package's PIL calls

# ------------------------------------------------------------------------------------------------------ fixtures


def smooth_image(h=40, w=48, seed=0) -> torch.Tensor:
    """A natural-ish uint8 (3, H, W) image: upsampled noise (smooth regions and edges, all channels differ)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (1, 3, h // 4, w // 4), generator=g).float()
    big = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return big[0].round().clamp(0, 255).to(torch.uint8)


def marker_image(size=32, row=16, col=16) -> torch.Tensor:
    """Grey 60 background with a 2x2 white marker at (row, col)."""
    x = torch.full((3, size, size), 60, dtype=torch.uint8)
    x[:, row:row + 2, col:col + 2] = 255
    return x


def marker_pos(x: torch.Tensor) -> tuple[float, float]:
    ys, xs = torch.nonzero(x[0] == 255, as_tuple=True)
    assert len(ys) > 0, "marker vanished"
    return ys.float().mean().item(), xs.float().mean().item()


def chi_square(counts: torch.Tensor) -> tuple[float, int]:
    counts = counts.double().flatten()
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum()), counts.numel() - 1


def assert_uniform(counts: torch.Tensor, what: str) -> None:
    stat, dof = chi_square(counts)
    limit = dof + 5 * math.sqrt(2 * dof)
    assert stat < limit, f"{what}: chi-square {stat:.1f} over {dof} dof (limit {limit:.1f}), counts {counts.tolist()}"


# ----------------------------------------------------------------------------------------------------- the table

def test_policy_table_matches_the_package():
    assert A.OPS == ("Invert", "Cutout", "Sharpness", "AutoContrast", "Posterize", "ShearX", "TranslateX",
                     "TranslateY", "ShearY", "Rotate", "Equalize", "Contrast", "Color", "Solarize", "Brightness")
    assert list(A.MAGNITUDES) == list(range(1, 10))
    assert [A.magnitude_value("Posterize", m) for m in A.MAGNITUDES] == [8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert [A.magnitude_value("Cutout", m) for m in A.MAGNITUDES] == [2, 4, 7, 9, 11, 13, 16, 18, 20]
    for op, lo, hi in [("ShearX", 0, 0.3), ("ShearY", 0, 0.3), ("TranslateX", 0, 150 / 331),
                       ("TranslateY", 0, 150 / 331), ("Rotate", 0, 30), ("Color", 0, 0.9), ("Contrast", 0, 0.9),
                       ("Sharpness", 0, 0.9), ("Brightness", 0, 0.9), ("Solarize", 256, 0)]:
        expected = np.linspace(lo, hi, 10)[1:]
        got = [A.magnitude_value(op, m) for m in A.MAGNITUDES]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, err_msg=op)
    for op in ("Invert", "AutoContrast", "Equalize"):
        assert A.magnitude_value(op, 5) == 0
    table = A.value_table()
    assert table.shape == (15, 10)
    assert table[A.OPS.index("Rotate"), 9].item() == pytest.approx(30.0)
    with pytest.raises(ValueError, match="unknown RandAugment op"):
        A.magnitude_value("Blur", 3)
    with pytest.raises(ValueError, match="outside 1..9"):
        A.magnitude_value("Rotate", 0)


# ------------------------------------------------------------------------------------------------ distributions

def check_policy_draw(draw: A.PolicyDraw, h: int, w: int) -> None:
    n = draw.op.shape[0]
    pairs = torch.bincount(draw.op[:, 0] * 15 + draw.op[:, 1], minlength=225)
    assert_uniform(pairs, "ordered op pairs")
    for slot in range(2):
        assert_uniform(torch.bincount(draw.op[:, slot], minlength=15), f"op slot {slot}")
        mags = draw.magnitude[:, slot]
        assert mags.min() == 1 and mags.max() == 9
        assert_uniform(torch.bincount(mags - 1, minlength=9), f"magnitudes slot {slot}")
        p = draw.applied[:, slot].float().mean().item()
        assert abs(p - 0.5) < 5 * math.sqrt(0.25 / n), f"apply probability {p}"
        assert set(draw.sign[:, slot].tolist()) == {-1.0, 1.0}
        assert abs(draw.sign[:, slot].mean().item()) < 5 / math.sqrt(n)
    # magnitude independent of the op: uniform over op x magnitude cells
    assert_uniform(torch.bincount(draw.op[:, 0] * 9 + draw.magnitude[:, 0] - 1, minlength=135), "op x magnitude")
    rows, cols = draw.center[..., 0], draw.center[..., 1]
    assert rows.min() == 0 and rows.max() == h - 1 and cols.min() == 0 and cols.max() == w - 1
    assert_uniform(torch.bincount(rows.flatten(), minlength=h), "cutout-op centre rows")


def test_batched_sampler_distribution():
    aug = A.BatchAugment(16)
    cut, policy = aug.sample(40_000, generator=torch.Generator().manual_seed(1))
    check_policy_draw(policy, 16, 16)
    assert cut.color.min() == 0 and cut.color.max() == 255
    assert_uniform(torch.bincount(cut.color.flatten(), minlength=256), "cutout colour")
    assert_uniform(torch.bincount(cut.center[:, 0], minlength=16), "cutout centre rows")
    assert_uniform(torch.bincount(cut.center[:, 1], minlength=16), "cutout centre cols")


def test_per_sample_policy_distribution_and_dispatch(monkeypatch):
    """Run RandAugmentPolicy.forward many times, recording its draws and the ops it actually applies."""
    draws, calls = [], []
    real_sample = A.sample_policy

    def spy_sample(*args, **kwargs):
        d = real_sample(*args, **kwargs)
        draws.append(d)
        return d

    def spy_apply(img, op, value, sign=1.0, **kwargs):
        calls.append((op, value, sign))
        return img

    monkeypatch.setattr(A, "sample_policy", spy_sample)
    monkeypatch.setattr(A, "apply_op", spy_apply)
    policy = A.RandAugmentPolicy()
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    gen = torch.Generator().manual_seed(2)
    n = 9000
    for _ in range(n):
        policy(img, generator=gen)
    draw = A.PolicyDraw(*(torch.cat([getattr(d, f) for d in draws]) for f in
                          ("op", "magnitude", "sign", "applied", "center")))
    check_policy_draw(draw, 8, 8)
    expected = [(A.OPS[o], A.magnitude_value(A.OPS[o], m), s)
                for ops, mags, signs, app in zip(draw.op.tolist(), draw.magnitude.tolist(), draw.sign.tolist(),
                                                 draw.applied.tolist())
                for o, m, s, a in zip(ops, mags, signs, app) if a]
    assert calls == expected  # applied exactly when drawn, in order, with the table's value and the drawn sign
    assert abs(len(calls) / (2 * n) - 0.5) < 0.02


# ----------------------------------------------------------------------------------------------- op semantics

def test_pixel_ops_semantics():
    x = smooth_image()
    assert torch.equal(A.apply_op(x, "Invert", 0), 255 - x)
    assert torch.equal(A.apply_op(x, "Posterize", 4), x & 0xF0)
    assert torch.equal(A.apply_op(x, "Posterize", 8), x)
    sol = A.apply_op(x, "Solarize", 128.0)
    assert torch.equal(sol, torch.where(x >= 128, 255 - x, x))
    assert torch.equal(A.apply_op(x, "Solarize", 256.0), x)
    assert torch.equal(A.apply_op(x, "Solarize", 0.0), 255 - x)


def test_enhance_ops_semantics():
    x = smooth_image()
    mean = x.float().mean()
    assert A.apply_op(x, "Brightness", 0.5, 1).float().mean() > mean + 10
    assert A.apply_op(x, "Brightness", 0.5, -1).float().mean() < mean - 10
    grey = A.apply_op(x, "Color", 1.0, -1)  # factor 0: the L image in every channel
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert (A.apply_op(x, "Color", 0.9, 1).float().std(0).mean() > x.float().std(0).mean())  # more saturated
    flat = A.apply_op(x, "Contrast", 1.0, -1)  # factor 0: one grey level = round(mean L)
    assert flat.unique().numel() == 1
    assert abs(flat[0, 0, 0].item() - A._luma(x).float().mean().item()) <= 0.5
    assert A.apply_op(x, "Contrast", 0.9, 1).float().std() > x.float().std()
    hf = lambda t: (t.float()[:, 1:, :] - t.float()[:, :-1, :]).abs().mean()  # noqa: E731
    assert hf(A.apply_op(x, "Sharpness", 0.9, 1)) > hf(x) > hf(A.apply_op(x, "Sharpness", 0.9, -1))
    blurred = A.apply_op(x, "Sharpness", 1.0, -1)
    assert torch.equal(blurred[:, 0], x[:, 0]) and torch.equal(blurred[:, :, -1], x[:, :, -1])  # border kept


def test_autocontrast_and_equalize():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(50, 101, (3, 32, 32), generator=g, dtype=torch.uint8)
    x[2] = 77  # a constant channel stays as is
    ac = A.apply_op(x, "AutoContrast", 0)
    assert ac[:2].min() == 0 and ac[:2].max() == 255
    assert torch.equal(ac[2], x[2])
    expected = ((x[:2].int() - x[:2].int().amin((1, 2), keepdim=True)) * 255) // (
        x[:2].int().amax((1, 2), keepdim=True) - x[:2].int().amin((1, 2), keepdim=True))
    assert torch.equal(ac[:2].int(), expected)
    eq = A.apply_op(x, "Equalize", 0)
    hist_before = torch.histc(x[0].float(), bins=8, min=0, max=255)
    hist_after = torch.histc(eq[0].float(), bins=8, min=0, max=255)
    assert hist_after.std() < 0.5 * hist_before.std()  # flatter histogram over the full range
    assert eq[0].max() >= 240 and eq[0].min() <= 20


def test_geometric_ops_move_a_marker():
    x = marker_image()
    r0, c0 = marker_pos(x)
    # PIL affine maps output -> input, so a positive translate moves the content left / up by v * size.
    r, c = marker_pos(A.apply_op(x, "TranslateX", 0.25, 1))
    assert (r, c) == (r0, c0 - 8)
    r, c = marker_pos(A.apply_op(x, "TranslateX", 0.25, -1))
    assert (r, c) == (r0, c0 + 8)
    r, c = marker_pos(A.apply_op(x, "TranslateY", 0.25, 1))
    assert (r, c) == (r0 - 8, c0)
    # ShearX +v: row y reads input column x + v*y, so the marker (row ~16.5) moves left by ~v*16.5.
    r, c = marker_pos(A.apply_op(x, "ShearX", 0.3, 1))
    assert r == r0 and c == pytest.approx(c0 - 0.3 * (r0 + 0.5), abs=1.0)
    r, c = marker_pos(A.apply_op(x, "ShearY", 0.3, -1))
    assert c == c0 and r == pytest.approx(r0 + 0.3 * (c0 + 0.5), abs=1.0)
    # Rotate is counter-clockwise whatever the sign: a marker right of the centre moves up.
    xr = marker_image(row=15, col=26)
    for sign in (1, -1):
        r, c = marker_pos(A.apply_op(xr, "Rotate", 90.0, sign))
        assert r == pytest.approx(16 - (26.5 + 0.5 - 16), abs=1.0) and c == pytest.approx(15.5 + 0.5, abs=1.0)
    # Uncovered area takes the fill 128.
    moved = A.apply_op(x, "TranslateX", 0.25, 1)
    assert (moved[:, :, -8:] == 128).all() and (moved[:, :, :-8] != 128).all()


def test_randaugment_cutout_op():
    x = torch.zeros(3, 32, 32, dtype=torch.uint8)
    out = A.apply_op(x, "Cutout", 7, center=torch.tensor([[10, 20]]))
    box = (out != 0).any(0)
    assert box.sum() == 36 and box[7:13, 17:23].all()  # [c - 3, c + 3): 6 x 6
    assert out[:, 10, 20].tolist() == [125, 122, 113]
    corner = A.apply_op(x, "Cutout", 20, center=torch.tensor([[0, 31]]))
    assert (corner != 0).any(0).sum() == 10 * 11  # rows [0, 10), cols [21, 41) clipped to [21, 32)
    assert (corner != 0).any(0)[:10, 21:].all()


def test_cutout_module_box_and_colour():
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    cut = A.Cutout(0.5)
    draw = A.CutoutDraw(center=torch.tensor([[16, 16]]), color=torch.tensor([[1, 2, 3]]))
    out = cut.apply(x, draw)[0]
    box = (out != 0).any(0)
    assert box.sum() == 17 * 17 and box[8:25, 8:25].all()  # PIL rectangle [c - 8, c + 8], both ends inclusive
    assert out[:, 8, 8].tolist() == [1, 2, 3]
    edge = cut.apply(x, A.CutoutDraw(torch.tensor([[31, 0]]), torch.tensor([[9, 9, 9]])))[0]
    assert (edge != 0).any(0).sum() == 9 * 9  # clipped: rows 23..31, cols 0..8
    gen = torch.Generator().manual_seed(4)
    sizes = set()
    for _ in range(50):
        o = cut(torch.zeros(3, 32, 32, dtype=torch.uint8), generator=gen)
        m = (o != 0).any(0)
        rows, cols = m.any(1).nonzero(), m.any(0).nonzero()
        if m.sum() == 0:  # colour drawn as (0, 0, 0)
            continue
        assert m.sum() == len(rows) * len(cols)  # one rectangle
        colour = o[:, rows[0, 0], cols[0, 0]]
        assert (o[:, m] == colour[:, None]).all()  # one colour
        sizes.add((len(rows), len(cols)))
    assert (17, 17) in sizes and max(max(s) for s in sizes) == 17


# --------------------------------------------------------------------------------------- fidelity against PIL

def to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(x.permute(1, 2, 0).numpy())


def from_pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


EXACT_OPS = ["Invert", "Sharpness", "AutoContrast", "Posterize", "TranslateX", "TranslateY", "Equalize",
             "Contrast", "Color", "Solarize", "Brightness"]


@pytest.mark.parametrize("op", [o for o in A.OPS if o != "Cutout"])
def test_ops_match_pil_package(op):
    x = smooth_image(40, 48, seed=5)  # non-square: X uses the width, Y the height
    pil = to_pil(x)
    for m, sign in [(3, 1), (9, -1), (6, -1)]:
        v = A.magnitude_value(op, m)
        ref = from_pil(pil_reference(pil, op, v, sign)).int()
        ours = A.apply_op(x, op, v, sign).int()
        diff = (ours - ref).abs()
        where = f"{op} m={m} sign={sign}"
        if op in EXACT_OPS:
            assert diff.max() == 0, f"{where}: {int((diff > 0).sum())} pixels differ"
        else:  # geometric: float32 coordinates vs PIL's double / fixed point flip a few boundary pixels
            assert (diff > 0).float().mean() < 0.005 and (op == "Rotate" or diff.max() <= 1), where
            white = torch.full_like(x, 255)  # constant image: 255 where sampled, 128 where filled
            ref_white = from_pil(pil_reference(to_pil(white), op, v, sign))
            assert torch.equal(A.apply_op(white, op, v, sign), ref_white), f"{where}: fill region differs"


def test_cutout_ops_match_pil_drawing():
    x = smooth_image(32, 32, seed=6)
    for cy, cx in [(0, 0), (16, 5), (31, 31), (3, 28)]:
        img = to_pil(x)
        h = int(0.5 * 32 + 0.5)
        y1, y2 = np.clip(cy - h // 2, 0, 32), np.clip(cy + h // 2, 0, 32)
        x1, x2 = np.clip(cx - h // 2, 0, 32), np.clip(cx + h // 2, 0, 32)
        ImageDraw.Draw(img).rectangle([x1, y1, x2, y2], fill=(10, 20, 30))
        ours = A.Cutout(0.5).apply(x[None], A.CutoutDraw(torch.tensor([[cy, cx]]), torch.tensor([[10, 20, 30]])))
        assert torch.equal(ours[0], from_pil(img)), (cy, cx)
        # the package's Cutout op: numpy-slice box [c - s//2, c + s//2), fill (125, 122, 113)
        ref = x.clone()
        s = 9
        ref[:, max(0, cy - s // 2):min(32, cy + s // 2), max(0, cx - s // 2):min(32, cx + s // 2)] = \
            torch.tensor([125, 122, 113], dtype=torch.uint8)[:, None, None]
        assert torch.equal(A.apply_op(x, "Cutout", s, center=torch.tensor([[cy, cx]])), ref)


def test_val_resize_close_to_pil():
    x = smooth_image(60, 90, seed=7)
    ours = A.val_transform(32)(x)
    ref = from_pil(to_pil(x).resize((32, 32), Image.BILINEAR)).float() / 255
    assert (ours - ref).abs().max() <= 2 / 255 + 1e-6


# ---------------------------------------------------------------------------------------- batched == per sample

@pytest.mark.parametrize("op", A.OPS)
def test_batched_op_equals_per_sample(op):
    g = torch.Generator().manual_seed(8)
    x = torch.stack([smooth_image(24, 20, seed=s) for s in range(6)])
    mags = torch.randint(1, 10, (6,), generator=g)
    values = torch.tensor([float(A.magnitude_value(op, m)) for m in mags.tolist()], dtype=torch.float64)
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
    centers = A.sample_centers(6, 24, 20, generator=g)
    batched = A.apply_op(x, op, values, signs, center=centers)
    for i in range(6):
        single = A.apply_op(x[i], op, A.magnitude_value(op, mags[i].item()), signs[i].item(),
                            center=centers[i:i + 1])
        assert torch.equal(batched[i], single), f"{op} sample {i}"


@pytest.mark.parametrize("sync_free", [False, True])
def test_batch_augment_equals_per_sample_pipeline(sync_free):
    aug = A.BatchAugment(24, sync_free=sync_free)
    x = torch.stack([smooth_image(24, 24, seed=s) for s in range(96)])
    cut, policy = aug.sample(96, generator=torch.Generator().manual_seed(9))
    policy.applied[:, 0] = True  # exercise every op in the first slot
    batched = aug.apply(x, cut, policy)
    per_cut, per_policy = A.Cutout(0.5), A.RandAugmentPolicy()
    for i in range(96):
        one = per_cut.apply(x[i:i + 1], A.CutoutDraw(cut.center[i:i + 1], cut.color[i:i + 1]))[0]
        one = per_policy.apply(one, A.PolicyDraw(*(getattr(policy, f)[i:i + 1] for f in
                                                   ("op", "magnitude", "sign", "applied", "center"))))
        assert torch.equal(batched[i], one), f"sample {i}: ops {policy.op[i].tolist()}"
    assert len(set(policy.op[:, 0].tolist())) == 15


def test_batch_augment_forward_contract():
    aug = A.BatchAugment(16)
    x = torch.stack([smooth_image(16, 16, seed=s) for s in range(8)])
    y1 = aug(x, generator=torch.Generator().manual_seed(10))
    y2 = aug(x, generator=torch.Generator().manual_seed(10))
    y3 = aug(x, generator=torch.Generator().manual_seed(11))
    assert y1.dtype == torch.uint8 and y1.shape == x.shape
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    assert not torch.equal(y1, x)
    with pytest.raises(ValueError, match="size"):
        aug(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        aug(x.float())
    f = A.batch_to_float(y1)
    assert f.dtype == torch.float32 and torch.allclose(f * 255, y1.float())
    with pytest.raises(ValueError, match="uint8"):
        A.batch_to_float(f)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("sync_free", [False, True])
def test_batch_augment_cuda_matches_cpu(sync_free):
    aug = A.BatchAugment(32, sync_free=sync_free)
    x = torch.stack([smooth_image(32, 32, seed=s) for s in range(64)])
    cut, policy = aug.sample(64, generator=torch.Generator().manual_seed(12))
    cpu = aug.apply(x, cut, policy)
    to = lambda d: type(d)(*(getattr(d, f).cuda() for f in d.__dataclass_fields__))  # noqa: E731
    gpu = aug.apply(x.cuda(), to(cut), to(policy)).cpu()
    diff = (gpu.int() - cpu.int()).abs()
    assert (diff > 1).float().mean() < 0.001, f"{int((diff > 1).sum())} pixels differ by more than 1"
    y = aug(x.cuda(), generator=torch.Generator(device="cuda").manual_seed(0))
    assert y.is_cuda and y.dtype == torch.uint8


# --------------------------------------------------------------------------------------------- the transforms

def test_train_and_val_transforms():
    x = smooth_image(50, 70, seed=13)
    torch.manual_seed(0)
    t = A.train_transform(32)
    outs = [t(x) for _ in range(4)]
    for y in outs:
        assert y.dtype == torch.float32 and y.shape == (3, 32, 32)
        assert y.min() >= 0 and y.max() <= 1
    assert not all(torch.equal(outs[0], y) for y in outs[1:])
    v = A.val_transform(32)
    assert torch.equal(v(x), v(x))
    assert v(x).dtype == torch.float32 and v(x).shape == (3, 32, 32) and v(x).max() <= 1
    for bad in (x.float(), x[:1], x[None]):
        with pytest.raises(ValueError, match="uint8 RGB"):
            t(bad)
        with pytest.raises(ValueError, match="uint8 RGB"):
            v(bad)
