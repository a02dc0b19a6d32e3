"""Input pipeline on the training device: DataLoader workers only read file bytes, the device decodes and augments.

    raw bytes (list of 1-D uint8 CPU tensors, ``MultiLabelImages(raw=True)`` + ``collate_multilabel``)
      -> decode: one batched nvjpeg call on CUDA (``torchvision.io.decode_jpeg(list, RGB, device)``);
         per image with the CPU pipeline's decoder (``src.data.decode.decode_rgb``) on the CPU
      -> Resize((S, S)), antialiased bilinear, per group of images of one input size   -> uint8 (B, 3, S, S)
      -> train only: Cutout + RandAugment, batched (``batch_augment``: the form AUGMENT_FORM_BY_DEVICE picks;
         draws from ``GpuTrainPreprocess.generator``)
      -> ``batch_to_float`` (x / 255), channels_last on CUDA                            -> float32 (B, 3, S, S)

``GpuTrainPreprocess`` / ``GpuEvalPreprocess`` are the ``preprocess`` callables of ``src.engine``.

Equivalence with the CPU pipeline (``train_transform`` / ``val_transform`` in ``src.data.augment``):
  * on the CPU the output equals ``val_transform`` exactly (same decoder, same uint8 resize kernel);
  * on CUDA nvjpeg's IDCT and chroma upsampling differ from libjpeg-turbo's, and the CUDA resize runs in float32
    and rounds: measured on an H200 at 448 px on synthetic photos, mean |diff| 0.8 grey levels, 1.5% of values off
    by more than 4, up to ~80 at hard edges between saturated colours (chroma upsampling);
  * the augmentation is one distribution with the per-sample policy (shared draws and ops), not the same stream.

Decoding is never silently lossy. Images nvjpeg cannot take (CMYK / YCCK JPEGs, arithmetic-coded or lossless
JPEGs, PNG and other formats) and JPEGs that do not end in their end-of-image marker (nvjpeg decodes a truncated
file into garbage without an error) are routed to the CPU decoder by a header check; a batch that nvjpeg still
rejects is retried image by image, each failure falling back to the CPU decoder; a file no decoder reads raises
``ImageDecodeError`` naming its file (``names``, or the ``RawBatch.names`` of a collated batch). Seen on the GPU
machine of an earlier round (H200): nvjpeg raises on CMYK and returns garbage for a JPEG cut in half.

Host waits: nvjpeg decodes on its own stream into memory taken from the caller's stream's pool, and
``decode_jpeg`` returns when it is done; so ``decode_images`` first waits for the caller's stream to finish the
work that may still read memory it freed (the last batch's decode and resize). Nothing after the decode waits: the
resize groups are formed from the decoded tensors' shapes, which the host knows; ``GpuTrainPreprocess`` draws its
augmentation on the CPU, so ``BatchAugment`` groups the samples by op on the host; every small host-to-device copy
goes through pinned memory with ``non_blocking=True``. ``src.data.prefetch.Prefetcher`` runs all of this on its
own thread and side stream, so these waits never hold up the training thread, and batch k+1 is prepared while
batch k trains.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from src.data.augment import BatchAugment, batch_to_float, to_device_nonblocking
from src.data.augment_fused import FusedBatchAugment
from src.data.decode import BadImageError, decode_rgb

__all__ = ["ImageDecodeError", "jpeg_frame_info", "decode_images", "resize_batch", "decode_resize",
           "GpuTrainPreprocess", "GpuEvalPreprocess", "AUGMENT_FORMS", "AUGMENT_FORM_BY_DEVICE", "batch_augment"]

# The one place that chooses the batched augmentation's form (same draws, same results; docs/performance.md has
# the measurements): "per-op" is BatchAugment (each op on the samples that drew it, the reference), "masked" is
# BatchAugment(sync_free=True), "fused" is FusedBatchAugment (one static-shape pass), "fused-graph" and
# "fused-compiled" replay that pass on CUDA as a CUDA graph / torch.compile(mode="reduce-overhead"). A form is
# used on a device only where `python -m benchmarks.bench_augment --device ...` measured it faster there: on the
# CPU the per-op form is (the fused one is 8 to 50x slower per batch); on CUDA nothing is measured yet, so the
# reference stays.
AUGMENT_FORMS = ("per-op", "masked", "fused", "fused-graph", "fused-compiled")
_REPLAY = {"fused": None, "fused-graph": "cuda-graph", "fused-compiled": "compile"}
AUGMENT_FORM_BY_DEVICE = {"cpu": "per-op", "cuda": "per-op"}


def batch_augment(image_size: int, device: torch.device, form: str | None = None) -> BatchAugment:
    """The batched augmentation module for ``device`` in ``form`` (default: AUGMENT_FORM_BY_DEVICE's choice)."""
    form = form or AUGMENT_FORM_BY_DEVICE.get(device.type, "per-op")
    if form not in AUGMENT_FORMS:
        raise ValueError(f"augment form {form!r} is not one of {AUGMENT_FORMS}")
    if form in _REPLAY:
        return FusedBatchAugment(image_size, replay=_REPLAY[form]).to(device)
    return BatchAugment(image_size, sync_free=form == "masked").to(device)

# Start-of-frame markers: baseline, extended and progressive Huffman JPEGs are what nvjpeg decodes.
_SOF_NVJPEG = frozenset({0xC0, 0xC1, 0xC2})
_SOF_OTHER = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})  # lossless, arithmetic, ...
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length field (TEM, RST0..7)


class ImageDecodeError(BadImageError):
    """An image of a batch that no decoder reads; ``position`` is its index in the batch.

    The caller maps it to a file: ``dataset.path(int(indices[err.position]))`` (``indices`` from the collate),
    or passes ``names`` to the decode so that the message names the file directly.
    """

    def __init__(self, position: int, reason: str, name: str | None = None):
        self.position = position
        super().__init__(name if name is not None else f"<image at batch position {position}>",
                         f"batch position {position}: {reason}")


def jpeg_frame_info(data: torch.Tensor) -> tuple[int, int] | None:
    """(start-of-frame marker, number of colour components) from a JPEG's headers; None if it is not a JPEG
    or its headers end before a frame header. Walks the marker segments only (a few per file)."""
    b = memoryview(data.numpy())
    n = len(b)
    if n < 4 or b[0] != 0xFF or b[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if b[i] != 0xFF:
            return None  # not at a marker: corrupt headers; let the decoder say so
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _STANDALONE:
            i += 2
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        elif marker in _SOF_NVJPEG or marker in _SOF_OTHER:
            return (marker, b[i + 9]) if i + 9 < n else None  # FF Cx Lh Ll P Yh Yl Xh Xl Nf
        else:
            i += 2 + ((b[i + 2] << 8) | b[i + 3])
    return None


def _nvjpeg_can_decode(data: torch.Tensor) -> bool:
    """A Huffman-coded JPEG with 1 (grey) or 3 (YCbCr / RGB) components that ends in its end-of-image marker.

    nvjpeg refuses CMYK / YCCK ("Failed to decode jpeg stream") and decodes a truncated file into garbage without
    an error; those, files with bytes after the marker, and every other kind go to the CPU decoder
    (``src.data.decode.decode_rgb``), which converts CMYK to RGB and applies the one truncation rule
    (``check_jpeg_complete``, which a file ending in its end-of-image marker always passes).
    """
    b = memoryview(data.numpy())
    if len(b) < 4 or b[-2] != 0xFF or b[-1] != 0xD9:
        return False
    info = jpeg_frame_info(data)
    return info is not None and info[0] in _SOF_NVJPEG and info[1] in (1, 3)


def _check_raw(raw_images: Sequence[torch.Tensor], names: Sequence[str] | None) -> None:
    if not isinstance(raw_images, (list, tuple)):
        shape = tuple(raw_images.shape) if isinstance(raw_images, torch.Tensor) else ""
        raise TypeError("expected a list of 1-D uint8 byte tensors (MultiLabelImages(raw=True) batches), got "
                        f"{type(raw_images).__name__}{shape}")
    if len(raw_images) == 0:
        raise ValueError("empty batch: nothing to decode")
    for k, t in enumerate(raw_images):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.ndim != 1 or t.device.type != "cpu":
            what = f"{t.dtype} {tuple(t.shape)} on {t.device}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"batch position {k}: expected a 1-D uint8 CPU tensor of file bytes, got {what}")
    if names is not None and len(names) != len(raw_images):
        raise ValueError(f"{len(names)} names for {len(raw_images)} images")


def _name(names: Sequence[str] | None, k: int) -> str | None:
    return None if names is None else str(names[k])


def _decode_cpu(data: torch.Tensor, k: int, names: Sequence[str] | None) -> torch.Tensor:
    """The CPU pipeline's decoder (``src.data.decode.decode_rgb``: libjpeg-turbo / libpng / ..., else PIL):
    uint8 RGB (3, H, W) from any format and depth; corrupt data that libjpeg only warns about is an error."""
    try:
        return decode_rgb(data, _name(names, k) or f"<image at batch position {k}>")
    except BadImageError as e:
        raise ImageDecodeError(k, e.reason, _name(names, k)) from None


def _decode_one_cuda(data: torch.Tensor, k: int, device: torch.device,
                     names: Sequence[str] | None) -> torch.Tensor:
    try:
        return decode_jpeg([data], mode=ImageReadMode.RGB, device=device)[0]
    except RuntimeError:
        return to_device_nonblocking(_decode_cpu(data, k, names), device)


def decode_images(raw_images: Sequence[torch.Tensor], device: torch.device | str,
                  names: Sequence[str] | None = None) -> list[torch.Tensor]:
    """File bytes -> list of uint8 RGB (3, H_i, W_i) on ``device``; one batched nvjpeg call on CUDA."""
    device = torch.device(device)
    if names is None:  # a RawBatch from collate_multilabel carries its file names
        names = getattr(raw_images, "names", None)
    _check_raw(raw_images, names)
    if device.type != "cuda":
        return [_decode_cpu(d, k, names).to(device) for k, d in enumerate(raw_images)]
    out: list[torch.Tensor | None] = [None] * len(raw_images)
    on_gpu = [k for k, d in enumerate(raw_images) if _nvjpeg_can_decode(d)]
    if on_gpu:
        # nvjpeg writes its output (memory from the current stream's pool) on its own stream, unordered with the
        # current stream: memory freed there (the last batch's decoded images) must not still be in use. With the
        # Prefetcher the current stream is its side stream, waited for on its thread, not the training thread.
        torch.cuda.current_stream(device).synchronize()
        try:
            decoded = decode_jpeg([raw_images[k] for k in on_gpu], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # some image of the batch is bad: find it, decoding one by one
            decoded = [_decode_one_cuda(raw_images[k], k, device, names) for k in on_gpu]
        for k, img in zip(on_gpu, decoded):
            out[k] = img
    for k, d in enumerate(raw_images):
        if out[k] is None:
            out[k] = to_device_nonblocking(_decode_cpu(d, k, names), device)
    return out  # type: ignore[return-value]


def resize_batch(images: Sequence[torch.Tensor], image_size: int) -> torch.Tensor:
    """uint8 (3, H_i, W_i) images -> uint8 (B, 3, S, S): torchvision's antialiased bilinear Resize((S, S)),
    one call per distinct input size (the CPU val/train transforms call the same kernel per image)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(k)
    size = [image_size, image_size]
    if len(groups) == 1:
        return TF.resize(torch.stack(list(images)), size, antialias=True)
    parts, order = [], []
    for idx in groups.values():
        parts.append(TF.resize(torch.stack([images[k] for k in idx]), size, antialias=True))
        order.extend(idx)
    stacked = torch.cat(parts)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return stacked.index_select(0, to_device_nonblocking(inverse, stacked.device))


def decode_resize(raw_images: Sequence[torch.Tensor], image_size: int, device: torch.device | str,
                  names: Sequence[str] | None = None) -> torch.Tensor:
    """File bytes -> uint8 (B, 3, S, S) on ``device``: decode to RGB, then Resize((S, S)) (antialiased bilinear).

    ``names`` (optional, one per image) only label errors; without them an ``ImageDecodeError`` names the
    batch position.
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return resize_batch(decode_images(raw_images, device, names), image_size)


def _model_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float32 in [0, 1]; channels_last on CUDA (the models run channels_last there)."""
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)  # on uint8: a quarter of the bytes of a float copy
    return batch_to_float(x)


class GpuEvalPreprocess:
    """Evaluation ``preprocess``: file bytes -> float32 (B, 3, S, S) in [0, 1] = decode, Resize((S, S)), /255."""

    def __init__(self, image_size: int, device: torch.device | str):
        self.image_size = image_size
        self.device = torch.device(device)

    def __call__(self, raw_images: Sequence[torch.Tensor], names: Sequence[str] | None = None) -> torch.Tensor:
        return _model_input(decode_resize(raw_images, self.image_size, self.device, names))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size}, device={self.device})"


class GpuTrainPreprocess:
    """Training ``preprocess``: decode, Resize((S, S)), Cutout(0.5) + RandAugment (batched), /255.

    Every random draw comes from ``self.generator``, a CPU ``torch.Generator`` seeded with ``seed`` (on the CPU
    the grouping of samples by op needs no host sync, and the draws are the same on every device); re-seed it per
    epoch with ``preprocess.generator.manual_seed(s)`` for reproducible augmentation. ``augment_form`` (one of
    AUGMENT_FORMS; default: AUGMENT_FORM_BY_DEVICE's choice for the device) selects the batched form; all give
    the same output for the same draws, and none waits for the device. ``sync_free=True`` is form "masked".
    """

    def __init__(self, image_size: int, device: torch.device | str, *, seed: int = 0, sync_free: bool = False,
                 augment_form: str | None = None):
        self.image_size = image_size
        self.device = torch.device(device)
        self.augment = batch_augment(image_size, self.device, "masked" if sync_free else augment_form)
        self.generator = torch.Generator()  # CPU draws: see the class docstring
        self.generator.manual_seed(seed)

    def __call__(self, raw_images: Sequence[torch.Tensor], names: Sequence[str] | None = None) -> torch.Tensor:
        return self.augment_decoded(decode_resize(raw_images, self.image_size, self.device, names))

    def augment_decoded(self, x: torch.Tensor) -> torch.Tensor:
        """The part after the decode: uint8 (B, 3, S, S) on the device -> augmented model input (no host wait)."""
        return _model_input(self.augment(x, generator=self.generator))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size}, device={self.device}, augment={self.augment})"
