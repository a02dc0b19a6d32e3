"""Tests for src/data/gpu_pipeline.py on the CPU, and on CUDA when present (same tests, parametrized device)."""
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.io import ImageReadMode, decode_image

from src.data import gpu_pipeline as G
from src.data.augment import OPS, BatchAugment, batch_to_float, val_transform
from src.data.decode import BadImageError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision >= 0.29 deprecates its decoders

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
SIZE = 32
# Allowed difference from the CPU reference, in grey levels: none on the CPU (same decoder, same resize kernel);
# on CUDA nvjpeg's IDCT / chroma upsampling and the float32 resize differ from libjpeg-turbo + the uint8 kernel
# (measured on an H200 for these images: mean 0.58, max 28, the max at the ellipse's hard colour edge). The mean
# bound catches real errors (swapped channels, a shifted resize); the max only gross ones.
TOLERANCE = {"cpu": (0.0, 0.0), "cuda": (1.5, 64.0)}  # (mean, max) absolute difference


def natural_array(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 (H, W, 3): smooth random colours, a shape with hard edges, mild noise (like a photo)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    ImageDraw.Draw(img).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=colour)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-4, 5, (h, w, 3))
    return arr.clip(0, 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> torch.Tensor:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}), **kw)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def jpeg(h: int, w: int, seed: int = 0, **kw) -> torch.Tensor:
    return encode(Image.fromarray(natural_array(h, w, seed)), **kw)


@pytest.fixture(scope="module")
def batch() -> list[torch.Tensor]:
    """Mixed sizes (two share one size, so the resize groups), one progressive JPEG."""
    return [jpeg(60, 80, 0), jpeg(80, 60, 1), jpeg(60, 80, 2), jpeg(45, 70, 3), jpeg(64, 64, 4, progressive=True)]


def reference(raw: list[torch.Tensor]) -> torch.Tensor:
    """The CPU pipeline: decode_image(RGB) + val_transform, per image -> float (B, 3, S, S)."""
    vt = val_transform(SIZE)
    return torch.stack([vt(decode_image(r, mode=ImageReadMode.RGB)) for r in raw])


def assert_close_levels(got: torch.Tensor, want: torch.Tensor, device: str) -> None:
    diff = (got.float().cpu().round() - want.float().cpu().round()).abs()  # both in grey levels
    mean_tol, max_tol = TOLERANCE[device]
    assert diff.mean() <= mean_tol + 1e-6 and diff.max() <= max_tol + 1e-6, \
        f"on {device}: mean diff {diff.mean():.3f}, max {diff.max():.0f} grey levels (allowed {mean_tol}, {max_tol})"


# ------------------------------------------------------------------------------------------------- decode + resize

@pytest.mark.parametrize("device", DEVICES)
def test_decode_resize_matches_decode_image_and_val_resize(batch, device):
    out = G.decode_resize(batch, SIZE, device)
    assert out.dtype == torch.uint8 and out.shape == (len(batch), 3, SIZE, SIZE) and out.device.type == device
    assert_close_levels(out, reference(batch) * 255, device)


@pytest.mark.parametrize("device", DEVICES)
def test_eval_preprocess_equals_val_transform(batch, device):
    out = G.GpuEvalPreprocess(SIZE, torch.device(device))(batch)
    assert out.dtype == torch.float32 and out.shape == (len(batch), 3, SIZE, SIZE)
    if device == "cuda":
        assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close_levels(out * 255, reference(batch) * 255, device)


@pytest.mark.parametrize("device", DEVICES)
def test_grayscale_cmyk_and_png_decode_like_the_cpu(device):
    arr = natural_array(40, 56, 7)
    grey = encode(Image.fromarray(arr[..., 0]))
    cmyk = encode(Image.fromarray(arr).convert("CMYK"))
    png = encode(Image.fromarray(arr), "PNG")
    raw = [grey, cmyk, png, jpeg(40, 56, 8)]
    assert G.jpeg_frame_info(grey)[1] == 1 and G.jpeg_frame_info(cmyk)[1] == 4 and G.jpeg_frame_info(png) is None
    out = G.decode_resize(raw, SIZE, device)
    assert torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[0, 0], out[0, 2]), "grey must fill all 3 channels"
    assert_close_levels(out, reference(raw) * 255, device)
    cmyk_out = G.decode_images([cmyk], device)[0].cpu()  # CMYK and PNG take the CPU decoder everywhere: exact
    assert torch.equal(cmyk_out, decode_image(cmyk, mode=ImageReadMode.RGB))


def test_jpeg_frame_info_reads_the_frame_header():
    assert G.jpeg_frame_info(jpeg(30, 50)) == (0xC0, 3)
    assert G.jpeg_frame_info(jpeg(30, 50, progressive=True)) == (0xC2, 3)
    assert G.jpeg_frame_info(torch.tensor([0xFF, 0xD8, 0xFF, 0xD9], dtype=torch.uint8)) is None
    assert G.jpeg_frame_info(torch.zeros(0, dtype=torch.uint8)) is None


# ---------------------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("device", DEVICES)
def test_corrupt_file_error_names_its_batch_position(batch, device):
    garbage = torch.cat([torch.tensor([0xFF, 0xD8, 0xFF, 0xE0], dtype=torch.uint8),
                         torch.randint(0, 256, (500,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))])
    raw = [batch[0], batch[1], garbage, batch[3]]
    with pytest.raises(G.ImageDecodeError, match="batch position 2") as err:
        G.decode_resize(raw, SIZE, device)
    assert err.value.position == 2 and isinstance(err.value, BadImageError)
    with pytest.raises(G.ImageDecodeError, match=r"^c\.jpg: bad image: batch position 2"):
        G.GpuTrainPreprocess(SIZE, torch.device(device))(raw, names=["a.jpg", "b.jpg", "c.jpg", "d.jpg"])


@pytest.mark.parametrize("device", DEVICES)
def test_truncated_jpeg_raises_and_trailing_bytes_are_fine(batch, device):
    """nvjpeg decodes a truncated JPEG into garbage without an error: it must go to the CPU decoder, which raises."""
    raw = [batch[0], batch[1][: len(batch[1]) // 2]]
    with pytest.raises(G.ImageDecodeError, match="batch position 1"):
        G.decode_resize(raw, SIZE, device)
    padded = torch.cat([batch[1], torch.zeros(16, dtype=torch.uint8)])  # bytes after the end-of-image marker
    out = G.decode_resize([batch[0], padded], SIZE, device)
    assert_close_levels(out, reference([batch[0], batch[1]]) * 255, device)


def test_bad_input_is_rejected_with_a_clear_error(batch):
    with pytest.raises(TypeError, match="list of 1-D uint8"):
        G.decode_resize(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), SIZE, "cpu")
    with pytest.raises(TypeError, match="batch position 1"):
        G.decode_resize([batch[0], batch[0].float()], SIZE, "cpu")
    with pytest.raises(ValueError, match="empty batch"):
        G.decode_resize([], SIZE, "cpu")
    with pytest.raises(ValueError, match="2 names for 1 images"):
        G.decode_resize([batch[0]], SIZE, "cpu", names=["a", "b"])


# ------------------------------------------------------------------------------------------------------- training

@pytest.mark.parametrize("device", DEVICES)
def test_train_preprocess_shape_range_and_determinism(batch, device):
    pre = G.GpuTrainPreprocess(SIZE, torch.device(device))
    assert pre.generator.device.type == "cpu", "draws on the CPU: the grouping by op needs no host sync"
    pre.generator.manual_seed(3)
    torch.manual_seed(100)
    a = pre(batch)
    pre.generator.manual_seed(3)
    torch.manual_seed(200)  # the global RNG plays no part
    b = pre(batch)
    c = pre(batch)  # the generator moved on
    assert a.dtype == torch.float32 and a.shape == (len(batch), 3, SIZE, SIZE) and a.device.type == device
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    if device == "cuda":
        assert a.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(a * 255, (a * 255).round(), atol=1e-3), "values must be uint8 levels / 255"


@pytest.mark.parametrize("device", DEVICES)
def test_train_preprocess_is_decode_resize_then_batch_augment(batch, device):
    dev = torch.device(device)
    pre = G.GpuTrainPreprocess(SIZE, dev)
    pre.generator.manual_seed(11)
    got = pre(batch)
    gen = torch.Generator().manual_seed(11)
    aug = BatchAugment(SIZE).to(dev)
    want = batch_to_float(aug(G.decode_resize(batch, SIZE, dev), generator=gen))
    assert torch.equal(got, want)
    assert not torch.equal(got, batch_to_float(G.decode_resize(batch, SIZE, dev))), "augmentation did nothing"


@pytest.mark.parametrize("device", DEVICES)
def test_batched_draws_follow_the_policy(device):
    """Light check (tests/test_augment.py has the thorough ones): the draws the pipeline's module makes from its
    generator pick ops uniformly, magnitudes in 1..9, each slot applied with probability 0.5."""
    pre = G.GpuTrainPreprocess(SIZE, torch.device(device))
    pre.generator.manual_seed(0)
    _cut, policy = pre.augment.sample(3000, pre.generator.device, pre.generator)
    counts = torch.bincount(policy.op.flatten().cpu(), minlength=len(OPS)).double()
    expected = counts.sum() / len(OPS)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 14 + 5 * (2 * 14) ** 0.5, f"op counts {counts.tolist()}"
    assert int(policy.magnitude.min()) == 1 and int(policy.magnitude.max()) == 9
    assert abs(float(policy.applied.float().mean()) - 0.5) < 0.03


# --------------------------------------------------------------------------------------------------- host syncs

def test_train_augmentation_never_reads_the_device():
    """GpuTrainPreprocess's augmentation on 'meta' images (no data: any host read of a device value, e.g. .tolist()
    or .item(), raises) with its CPU generator runs through every op; with draws on the images' device it fails at
    the grouping, which shows the check can fail. (On CUDA, benchmarks.gpu_check also runs it under
    torch.cuda.set_sync_debug_mode("error").)"""
    pre = G.GpuTrainPreprocess(SIZE, "cpu")
    pre.augment.to("meta")
    x = torch.empty(256, 3, SIZE, SIZE, dtype=torch.uint8, device="meta")
    pre.generator.manual_seed(0)
    _cut, policy = pre.augment.sample(256, "cpu", pre.generator)
    for slot in range(2):
        drawn = set(policy.op[:, slot][policy.applied[:, slot]].tolist())
        assert drawn == set(range(len(OPS))), "every op must be drawn in both slots for the check to cover it"
    pre.generator.manual_seed(0)
    out = pre.augment(x, generator=pre.generator)
    assert out.device.type == "meta" and out.shape == x.shape and out.dtype == torch.uint8
    with pytest.raises((NotImplementedError, RuntimeError)):
        pre.augment(x)  # draws on 'meta': the group sizes would have to be read from the device


def test_every_augment_form_gives_the_same_batch(batch):
    """The forms of gpu_pipeline.AUGMENT_FORMS differ in cost only: same seed, same output, bit for bit (CPU)."""
    outs = []
    for form in G.AUGMENT_FORMS:
        pre = G.GpuTrainPreprocess(SIZE, torch.device("cpu"), seed=5, augment_form=form)
        outs.append(pre(batch))
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    assert type(G.batch_augment(SIZE, torch.device("cpu"), "fused")).__name__ == "FusedBatchAugment"
    assert G.GpuTrainPreprocess(SIZE, "cpu").augment.__class__ is BatchAugment  # the CPU choice: per-op
    with pytest.raises(ValueError, match="augment form 'graph'"):
        G.batch_augment(SIZE, torch.device("cpu"), "graph")
