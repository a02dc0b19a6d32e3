"""The image decoder of both input pipelines: file bytes -> uint8 RGB (3, H, W), or a BadImageError naming the file.

``decode_rgb`` decodes with torchvision (libjpeg-turbo, libpng, libwebp, GIF), else PIL (BMP, TIFF, ...), and turns
every depth and mode into 8-bit RGB. The CPU pipeline (``src.data.datasets.MultiLabelImages``, inference's
``ImageFiles``) decodes every image with it; the GPU pipeline (``src.data.gpu_pipeline``) with it every image nvjpeg
cannot take. ``check_jpeg_complete`` is the one truncation rule: ``decode_rgb`` applies it first, and the dataset
applies it to the undecoded bytes it hands to the GPU pipeline.
"""
from __future__ import annotations

import io
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import to_dtype

from src.errors import UserError

__all__ = ["BadImageError", "check_jpeg_complete", "check_pixel_count", "decode_rgb", "max_pixels"]

_log = logging.getLogger(__name__)


class BadImageError(UserError, RuntimeError):
    """An image file that exists but cannot be decoded (corrupt, truncated, empty, not an image).

    ``BadImageError(path, reason)``; a single argument is taken as the whole message (how a DataLoader
    worker re-raises it in the main process).
    """

    def __init__(self, path: str | os.PathLike, reason: str | None = None):
        super().__init__(f"{path}: bad image: {reason}" if reason is not None else str(path))
        self.path = str(path)
        self.reason = reason if reason is not None else str(path)


def check_jpeg_complete(data: np.ndarray | torch.Tensor | bytes, path: str | os.PathLike) -> None:
    """The one truncation rule of both pipelines, cheap enough for undecoded bytes: the file is not empty, and a
    JPEG (FF D8 FF ...) holds an end-of-image marker (FF D9) after its last start-of-scan marker (FF DA), i.e. it
    is not cut short. Other formats pass; the decoder judges them. ``decode_rgb`` applies it before decoding,
    ``MultiLabelImages(raw=True)`` to the bytes it hands to the GPU pipeline."""
    buf = data.numpy().tobytes() if isinstance(data, torch.Tensor) else bytes(data)
    if not buf:
        raise BadImageError(path, "empty file")
    if buf[:3] == b"\xff\xd8\xff" and buf.rfind(b"\xff\xd9") < buf.rfind(b"\xff\xda"):
        raise BadImageError(path, "JPEG has no end-of-image marker after its last scan (truncated)")


# libjpeg(-turbo) warnings that mean the pixels are not what the file was meant to hold: a scan cut short
# (often a truncated file closed with FF D9) or damaged entropy-coded data. libjpeg decodes such files with
# grey or garbage blocks and only prints the warning. Junk bytes between segments ("extraneous bytes before
# marker") leave the pixels intact and are only logged.
_CORRUPT_JPEG = re.compile(r"Premature end of JPEG file|Corrupt JPEG data(?!: \d+ extraneous bytes)")
_TORCHVISION_PREFIX = re.compile(r"^\w+, \S+:\d+, ")  # "decode_jpeg, /path/decode_jpeg.cpp:171, "
_stderr_sinks: dict[int, tuple[threading.Lock, object]] = {}  # per process: a forked worker gets its own


@contextmanager
def _native_messages() -> Iterator[list[str]]:
    """Capture what native code (libjpeg) prints on file descriptor 2 meanwhile; the yielded list holds
    its lines afterwards. libjpeg prints its warnings there and returns normally. Captures are serialised
    within a process (the redirection is process-wide; the GPU pipeline may decode on a second thread)."""
    pid = os.getpid()
    if pid not in _stderr_sinks:
        _stderr_sinks.setdefault(pid, (threading.Lock(), tempfile.TemporaryFile()))
    lock, sink = _stderr_sinks[pid]
    lines: list[str] = []
    with lock:
        sink.seek(0)
        sink.truncate()
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a daemon): nothing to listen to
            yield lines
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())


def _pil_rgb(data: torch.Tensor, path) -> torch.Tensor:
    """PIL's decode of the formats torchvision does not read (BMP, TIFF, ...), as uint8 RGB (3, H, W)."""
    with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
        im.load()
        if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit grey: keep the top 8 bits
            grey = (np.asarray(im).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
            rgb = np.repeat(grey[:, :, None], 3, axis=2)
        elif im.mode == "F":
            raise BadImageError(path, "floating-point pixels (PIL mode F) have no 8-bit meaning")
        else:
            rgb = np.array(im.convert("RGB"))
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()


def max_pixels() -> int:
    """The most pixels an image may have: PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``,
    about 89 million: 268 MB as 8-bit RGB), applied to every decoder."""
    return int(Image.MAX_IMAGE_PIXELS or 0)


def check_pixel_count(data: torch.Tensor, path: str | os.PathLike) -> None:
    """BadImageError naming ``path`` when its header declares more than ``max_pixels()`` pixels, read from the
    header alone (PIL), before any decoder allocates them: a 432 KB PNG can declare 20000 x 20000. A file PIL
    cannot identify is left to the decoders."""
    limit = max_pixels()
    if not limit:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
                width, height = im.size
    except Image.DecompressionBombError as e:  # more than twice the limit: PIL will not even open it
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{found.group(1)} pixels" if found else "its size"
    except Exception:  # noqa: BLE001 - not identifiable by PIL: the decoders judge it
        return
    else:
        if width * height <= limit:
            return
        size = f"{width} x {height} = {width * height} pixels"
    raise BadImageError(path, f"{size}: above the limit of {limit} pixels (PIL.Image.MAX_IMAGE_PIXELS), decoding it "
                              "would take gigabytes of memory; shrink the image, or leave it out")


def decode_rgb(data: np.ndarray | torch.Tensor, path: str | os.PathLike) -> torch.Tensor:
    """File bytes -> uint8 RGB tensor (3, H, W): torchvision (JPEG, PNG, WebP, GIF), else PIL.

    16-bit images keep their top 8 bits; palette, alpha, CMYK and grey images become RGB (alpha dropped).
    BadImageError names ``path`` for an empty file, a JPEG cut short (``check_jpeg_complete``), an image of more
    than ``max_pixels()`` pixels (``check_pixel_count``, before decoding), a file neither
    decoder reads, and a JPEG libjpeg reports corrupt data in (e.g. "Premature end of JPEG file" for a file cut
    short and closed with FF D9). The decoder's other messages are logged with the file name.
    """
    data = torch.from_numpy(data) if isinstance(data, np.ndarray) else data
    check_jpeg_complete(data, path)
    check_pixel_count(data, path)
    messages: list[str] = []
    try:
        if data.numel() >= 2 and data[0] == 0xFF and data[1] == 0xD8:  # JPEG: listen for libjpeg's warnings
            with _native_messages() as messages:
                image = decode_image(data, mode=ImageReadMode.RGB)
        else:
            image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as e:
        reason = _TORCHVISION_PREFIX.sub("", str(e).strip())
        if not reason.startswith("Unsupported image file"):
            raise BadImageError(path, reason) from None
        try:
            image = _pil_rgb(data, path)
        except BadImageError:
            raise
        except Exception as pil_error:  # PIL raises OSError, ValueError, SyntaxError, ... on bad files
            raise BadImageError(path, f"{reason.split('. ')[0]}, and PIL cannot read it either "
                                      f"({pil_error})") from None
    for line in messages:
        if _CORRUPT_JPEG.search(line):
            raise BadImageError(path, f"corrupt data: {line.strip()}")
        _log.warning("%s: decoder: %s", path, line.strip())
    return to_dtype(image, torch.uint8, scale=True) if image.dtype != torch.uint8 else image
