"""The one image decoder (decode_rgb) and the one truncation rule (check_jpeg_complete) of both pipelines."""
import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import encode_jpeg

from src.data import gpu_pipeline
from src.data.decode import BadImageError, check_jpeg_complete, decode_rgb

# torchvision 0.29 flags its image codecs as deprecated (in favour of torchcodec); they still work.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")


def _jpeg(h: int = 24, w: int = 32, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    return bytes(encode_jpeg(img, quality=90).numpy())


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels and holds almost none (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [10_000, 20_000])  # above the limit, and above twice it (PIL will not open it)
def test_an_image_of_too_many_pixels_is_refused_before_decoding(side):
    data = torch.frombuffer(bytearray(_png_header(side, side)), dtype=torch.uint8)
    with pytest.raises(BadImageError, match=rf"huge.png: bad image: .*{side * side} pixels: above the limit of "
                                            rf"{Image.MAX_IMAGE_PIXELS} pixels"):
        decode_rgb(data, "huge.png")


def test_check_jpeg_complete():
    good = _jpeg()
    check_jpeg_complete(good, "x.jpg")
    check_jpeg_complete(good + b"\x00" * 16, "x.jpg")  # padding after the end marker is fine
    for cut in (len(good) - 1, len(good) // 2):
        with pytest.raises(BadImageError, match="x.jpg"):
            check_jpeg_complete(good[:cut], "x.jpg")
    with pytest.raises(BadImageError, match="empty"):
        check_jpeg_complete(b"", "x.jpg")


def test_the_cpu_and_gpu_pipelines_apply_the_same_truncation_rule():
    """A JPEG cut short fails check_jpeg_complete with one message, however it reaches the decoder."""
    good = _jpeg()
    cut = np.frombuffer(good[: len(good) // 2], dtype=np.uint8).copy()
    with pytest.raises(BadImageError) as rule:
        check_jpeg_complete(cut, "x.jpg")
    with pytest.raises(BadImageError) as cpu:  # the CPU pipeline: the dataset decodes numpy bytes
        decode_rgb(cut, "x.jpg")
    with pytest.raises(BadImageError) as gpu:  # the GPU pipeline's fallback: a tensor of file bytes
        gpu_pipeline.decode_images([torch.from_numpy(cut)], "cpu", names=["x.jpg"])
    assert "truncated" in rule.value.reason
    assert cpu.value.reason == rule.value.reason
    assert gpu.value.reason.endswith(rule.value.reason) and gpu.value.path == "x.jpg"


def _pil_bytes(mode: str, fmt: str, **save) -> bytes:
    g = np.random.default_rng(0)
    rgb = Image.fromarray((g.random((20, 24, 3)) * 255).astype(np.uint8))
    images = {"I;16": Image.fromarray((g.random((20, 24)) * 65535).astype(np.uint16)),
              "RGBA": rgb.convert("RGBA"), "P": rgb.convert("P"), "CMYK": rgb.convert("CMYK"),
              "L": rgb.convert("L"), "LA": rgb.convert("LA"), "RGB": rgb}
    buf = io.BytesIO()
    images[mode].save(buf, format=fmt, **save)
    return buf.getvalue()


@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16", "TIFF"), ("P", "PNG"), ("RGBA", "PNG"),
                                       ("RGBA", "WEBP"), ("CMYK", "JPEG"), ("L", "JPEG"), ("LA", "PNG"),
                                       ("RGB", "BMP"), ("RGB", "TIFF"), ("P", "GIF")])
def test_every_readable_image_becomes_8bit_rgb(mode, fmt):
    image = decode_rgb(np.frombuffer(_pil_bytes(mode, fmt), dtype=np.uint8).copy(), "x")
    assert image.dtype == torch.uint8 and image.shape == (3, 20, 24)
    assert 20 < image.float().mean() < 235  # real content, not a blank or clipped image
