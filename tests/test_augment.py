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
    assert ac[:2].min() == 0 and ac[:2].max() >= 254  # PIL's float LUT maps hi to 254 for some (lo, hi)
    assert torch.equal(ac[2], x[2])
    # PIL's float LUT int(i * s - lo * s), not the exact (i - lo) * 255 // (hi - lo), which differs on this image
    assert torch.equal(ac, from_pil(pil_reference(to_pil(x), "AutoContrast", 0)))
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


# ------------------------------------------------------------------------------------- fused == per-op form
from src.data import augment_fused as AF  # noqa: E402


def fused_test_images(n: int, size: int) -> torch.Tensor:
    """Smooth images, plus the degenerate cases of the histogram ops: a constant channel (AutoContrast's
    hi == lo), a near-constant image (Equalize's step == 0) and a full-range one."""
    x = torch.stack([smooth_image(size, size, seed=s) for s in range(n)])
    x[1, 0] = 77
    x[2] = 5
    x[2, :, 0, :3] = 200
    x[3, :, 0, 0], x[3, :, -1, -1] = 0, 255
    return x


def every_op_draw(slot: int, size: int) -> A.PolicyDraw:
    """Sample i applies (op, magnitude, sign) number i of all 15 x 9 x 2 in ``slot``; the other slot is off."""
    cells = [(o, m, s) for o in range(len(A.OPS)) for m in A.MAGNITUDES for s in (-1.0, 1.0)]
    n = len(cells)
    op, mag, sign = (torch.tensor(c) for c in zip(*cells))
    g = torch.Generator().manual_seed(20)
    draw = A.PolicyDraw(op=torch.zeros(n, 2, dtype=torch.long), magnitude=torch.ones(n, 2, dtype=torch.long),
                        sign=torch.ones(n, 2), applied=torch.zeros(n, 2, dtype=torch.bool),
                        center=torch.randint(0, size, (n, 2, 2), generator=g))
    draw.op[:, slot], draw.magnitude[:, slot], draw.sign[:, slot], draw.applied[:, slot] = op, mag, sign.float(), True
    return draw


@pytest.mark.parametrize("slot", [0, 1])
def test_fused_equals_per_op_for_every_op_magnitude_and_sign(slot):
    """Same draws (BatchAugment.sample's dataclasses, built here by hand) -> the same uint8 images, bit for bit,
    for every (op, magnitude, sign) in either slot, on images that include the histogram ops' degenerate cases."""
    size = 20
    per_op, fused = A.BatchAugment(size), AF.FusedBatchAugment(size)
    policy = every_op_draw(slot, size)
    n = policy.op.shape[0]
    x = fused_test_images(n, size)
    cut, _ = per_op.sample(n, generator=torch.Generator().manual_seed(21))
    want, got = per_op.apply(x, cut, policy), fused.apply(x, cut, policy)
    bad = (want != got).flatten(1).any(1).nonzero().flatten().tolist()
    assert not bad, f"{len(bad)} images differ, first: op {A.OPS[int(policy.op[bad[0], slot])]}"
    assert not torch.equal(got, per_op.cutout.apply(x, cut)), "the slot did nothing"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_equals_per_op_for_random_policies(seed):
    per_op, fused = A.BatchAugment(32), AF.FusedBatchAugment(32)
    x = fused_test_images(64, 32)
    cut, policy = per_op.sample(64, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(per_op.apply(x, cut, policy), fused.apply(x, cut, policy))
    g = torch.Generator().manual_seed(seed)  # forward: the same draws from the same generator
    assert torch.equal(fused(x, generator=g), per_op(x, generator=torch.Generator().manual_seed(seed)))


def test_fused_replays_run_eager_off_cuda():
    """replay='cuda-graph' / 'compile' act on CUDA images only; elsewhere the pass runs eager, same output."""
    x = fused_test_images(8, 16)
    draws = A.BatchAugment(16).sample(8, generator=torch.Generator().manual_seed(24))
    want = A.BatchAugment(16).apply(x, *draws)
    for replay in AF.REPLAYS:
        assert torch.equal(AF.FusedBatchAugment(16, replay=replay).apply(x, *draws), want), replay
    with pytest.raises(ValueError, match="replay 'graph'"):
        AF.FusedBatchAugment(16, replay="graph")


def test_fused_and_per_op_ignore_autocast():
    """Their exact-integer conv (SMOOTH) and tap matmul stay float32 inside an autocast region."""
    per_op, fused = A.BatchAugment(24), AF.FusedBatchAugment(24)
    x = fused_test_images(32, 24)
    cut, policy = per_op.sample(32, generator=torch.Generator().manual_seed(23))
    policy.op[:, 0] = A.OPS.index("Sharpness")
    policy.applied[:, 0] = True
    want = per_op.apply(x, cut, policy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(per_op.apply(x, cut, policy), want)
        assert torch.equal(fused.apply(x, cut, policy), want)


def test_fused_pass_is_static_and_never_reads_the_device():
    """The pass on 'meta' tensors (no data: any host read raises) runs, and two different draws dispatch the same
    operator sequence: no data-dependent control flow, shapes or indexing."""
    fused = AF.FusedBatchAugment(16)
    x = fused_test_images(8, 16)
    params = [fused.params(*fused.sample(8, generator=torch.Generator().manual_seed(s))) for s in (3, 4)]
    assert not torch.equal(*params)
    meta = AF.FusedBatchAugment(16).to("meta")
    out = meta.run(x.to("meta"), params[0].to("meta"))
    assert out.device.type == "meta" and out.shape == x.shape and out.dtype == torch.uint8

    def op_sequence(p):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fused.run(x, p)
        return [e.name for e in prof.events() if e.name.startswith("aten::")]
    assert op_sequence(params[0]) == op_sequence(params[1])


def test_point_lut_table_is_apply_op_on_the_levels():
    table = AF.point_lut_table()
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256)
    for op, m, positive in [("Solarize", 4, 1), ("Posterize", 9, 0), ("Brightness", 7, 0), ("Brightness", 7, 1)]:
        want = A.apply_op(levels, op, A.magnitude_value(op, m), 1.0 if positive else -1.0)[0, 0, 0].float()
        assert torch.equal(table[AF._lut_row(A.OPS.index(op), m, positive)], want), (op, m, positive)
    assert torch.equal(table[AF._lut_row(A.OPS.index("Rotate"), 5, 1)], torch.arange(256).float())


def test_autocontrast_matches_pil_where_two_roundings_would_not():
    """PIL's scale is 255.0 / (hi - lo), one rounding; torch's `255.0 / t` is 255 * (1 / t), two, and gave other
    LUTs for 3,511 of the 32,640 (lo, hi) pairs, e.g. (0, 7) and (5, 60)."""
    for lo, hi in [(0, 7), (3, 17), (10, 35), (0, 25), (5, 60), (0, 255)]:
        x = torch.linspace(lo, hi, 3 * 64).round().to(torch.uint8).view(3, 8, 8)
        ref = from_pil(pil_reference(to_pil(x), "AutoContrast", 0))
        assert torch.equal(A.apply_op(x, "AutoContrast", 0), ref), (lo, hi)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the capture and the compile run there only")
def test_fused_on_cuda_captured_and_compiled():
    """On CUDA: eager fused == CUDA-graph replay exactly; fused within 1 level of the per-op form on almost every
    value (CUDA's float rounding, as test_batch_augment_cuda_matches_cpu allows); torch.compile(mode=
    "reduce-overhead", fullgraph=True) of the pass runs and stays within 1 level (it may fuse a*b+c into FMAs)."""
    size, n = 32, 64
    per_op, fused = A.BatchAugment(size).cuda(), AF.FusedBatchAugment(size).cuda()
    x = fused_test_images(n, size).cuda()
    cut, policy = per_op.sample(n, generator=torch.Generator().manual_seed(22))
    params = fused.params(cut, policy).cuda()
    eager = fused.run(x, params)
    replay = AF.CapturedAugment(fused)
    assert torch.equal(replay(x, params), eager) and torch.equal(replay(x, params), eager)
    graphed = AF.FusedBatchAugment(size, replay="cuda-graph").cuda()
    assert torch.equal(graphed.apply(x, cut, policy), eager) and torch.equal(graphed.apply(x, cut, policy), eager)
    to = lambda d: type(d)(*(getattr(d, f).cuda() for f in d.__dataclass_fields__))  # noqa: E731
    reference = per_op.apply(x, to(cut), to(policy))
    diff = (eager.int() - reference.int()).abs()
    assert (diff > 1).float().mean() < 0.001
    compiled = AF.FusedBatchAugment(size, replay="compile").cuda()
    for _ in range(3):
        out = compiled.apply(x, cut, policy)
    assert ((out.int() - eager.int()).abs() > 1).float().mean() < 0.001
