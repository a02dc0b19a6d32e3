"""BatchAugment as one fused, static-shape pass: the same draws, the same ops, the same uint8 results.

``FusedBatchAugment`` consumes the draws of ``BatchAugment.sample`` (so both forms see identical draws) in two
parts:

  * ``params(cut, policy)`` on the draws' device (the CPU for ``GpuTrainPreprocess``): every per-image number of
    the pass as one float64 (B, CUT_COLUMNS + 2 P) tensor, read from one table indexed by (op, magnitude) and
    weighted by (1, sign, centre row, centre column); a dozen small tensor ops whatever the batch;
  * ``run(x, params)`` on the images' device: the pass. Static shapes, no data-dependent indexing, no host reads:
    capturable as a CUDA graph (``CapturedAugment``) or by ``torch.compile(mode="reduce-overhead")``.

Per policy slot every image goes through the same stages; its parameters make all but its op's stage exact
identities (an identity LUT; a sample at its own pixel with fraction 0):

  1. one 256-entry LUT per image and channel, one gather: Invert, Solarize, Posterize, Brightness (a table of
     LUTs made by ``apply_op`` itself on the 256 levels), AutoContrast and Equalize (from each image's
     histogram and extremes);
  2. one 4-tap sample per pixel (one gather from [LUT output, d] with replicated edges) and PIL's cubic in Horner
     form: NEAREST ops (TranslateX/Y, Rotate) read their pixel in all taps at fraction 0; the shears read PIL's 4
     cubic taps along their axis; Color, Contrast and Sharpness read taps (d, d, y, y) at "fraction" f, which
     the Horner form turns into exactly ``d + f (y - d)``, PIL's blend (d: the L image, the grey level, the
     SMOOTH image); one ``where`` takes the fill outside the frame (128) or inside the Cutout op's box.

The affine coordinates, keep masks, fractions and tap indices depend on the parameters only, so they are computed
once for both slots. The formulas are the per-op form's (``src.data.augment``: ``apply_op`` for the LUT table,
``autocontrast_lut``, ``grey_level``, ``horner``, coordinates in float64 in the same order); Equalize follows
torchvision's ``equalize`` step for step; SMOOTH's integer sums come from a depthwise conv and the cubic's
coefficients from a 4 x 4 matmul, both exact in float32 (integers below 2^24; TF32 keeps values below 2^11 exact)
with autocast off. The results equal the per-op form's bit for bit on the CPU (tests/test_augment.py). The cost
is arithmetic: every stage runs on every image (on the CPU 15-50x the per-op form's time per batch).
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F

from src.data.augment import (CUBIC_COEFFS, GEOMETRIC_FILL, MAGNITUDES, OPS, RA_CUTOUT_FILL, BatchAugment,
                              CutoutDraw, PolicyDraw, affine_matrix, apply_op, autocontrast_lut, grey_level, horner,
                              magnitude_value, to_device_nonblocking)

__all__ = ["FusedBatchAugment", "CapturedAugment", "REPLAYS", "SLOT_COLUMNS", "param_table", "point_lut_table"]

# Per-slot parameter columns. PAIRS hold (row, column) = (y, x) pairs: the affine map (v, u) = A * x + B * y + C,
# the shears' half-pixel shift and tap axis, the keep box [lo, hi).
PAIRS = ("d", "a", "e", "b", "f", "c", "half_y", "half_x", "tap_y", "tap_x", "r0", "c0", "r1", "c1")
FLAGS = ("hole", "equalize", "histogram", "contrast", "sharp")  # histogram: AutoContrast or Equalize
SLOT_COLUMNS = PAIRS + FLAGS + ("f_blend", "lut_index", "tap0", "tap1", "tap2", "tap3", "fill_r", "fill_g", "fill_b")
P = len(SLOT_COLUMNS)
CUT_COLUMNS = 7  # CutoutPIL: r0, c0, r1, c1 (half-open, unclipped), colour (r, g, b)
NOT_APPLIED = len(OPS)  # the identity row of the tables
TAPS = (-1, 0, 1, 2)  # PIL's cubic reads left - 1 .. left + 2
PAD = 2  # replicated edge pixels around the sampled planes: PIL's edge-clamped taps
POINT_OPS = ("Invert", "Solarize", "Posterize", "Brightness")
REPLAYS = (None, "cuda-graph", "compile")  # how FusedBatchAugment runs its pass on CUDA images


def _identity_row(size: int) -> dict[str, float]:
    row = dict.fromkeys(SLOT_COLUMNS, 0.0)
    row.update(a=1.0, e=1.0, r1=float(size), c1=float(size), fill_r=GEOMETRIC_FILL, fill_g=GEOMETRIC_FILL,
               fill_b=GEOMETRIC_FILL)
    return row


def _tap_offsets(size: int, axis: str | None, planes: tuple[int, ...] = (0, 0, 0, 0)) -> dict[str, float]:
    """Flat offsets of the 4 taps from the padded plane's origin: the +PAD shift, the taps along ``axis``, and
    ``planes`` (0: the LUT output y, 1: the blend's d)."""
    side = size + 2 * PAD
    step = {"x": 1, "y": side, None: 0}[axis]
    return {f"tap{i}": float(PAD * side + PAD + k * step + plane * side * side)
            for i, (k, plane) in enumerate(zip(TAPS, planes))}


def _op_terms(op: str, v: float, size: int) -> tuple[dict[str, float], dict[str, float]]:
    """(constant overrides, sign coefficients) of one op's columns at value v, as ``apply_op`` computes them."""
    const: dict[str, float] = {}
    signed: dict[str, float] = {}
    if op in ("Color", "Contrast", "Sharpness"):  # blend(d, y, 1 + s v): taps (d, d, y, y) at fraction f
        const.update(_tap_offsets(size, None, planes=(1, 1, 0, 0)), f_blend=1.0)
        signed["f_blend"] = v
        const.update(contrast=float(op == "Contrast"), sharp=float(op == "Sharpness"))
    elif op in ("AutoContrast", "Equalize"):
        const.update(histogram=1.0, equalize=float(op == "Equalize"))
    elif op in ("ShearX", "ShearY"):
        axis = "x" if op == "ShearX" else "y"
        signed["b" if axis == "x" else "d"] = v
        const.update(_tap_offsets(size, axis), **{f"half_{axis}": 0.5, f"tap_{axis}": 1.0})
    elif op in ("TranslateX", "TranslateY"):
        signed["c" if op == "TranslateX" else "f"] = v * size  # apply_op: (s v) size; s (v size) has the same bits
    elif op == "Rotate":
        m = affine_matrix(op, torch.tensor([v], dtype=torch.float64), torch.ones(1, dtype=torch.float64), size, size)
        const.update(zip("abcdef", m[0].tolist()))
    elif op == "Cutout":
        half = float(round(v) // 2)
        const.update(r0=-half, c0=-half, r1=half, c1=half, hole=1.0)
        const.update(zip(("fill_r", "fill_g", "fill_b"), map(float, RA_CUTOUT_FILL)))
    return const, signed


def param_table(size: int) -> torch.Tensor:
    """float64 (len(OPS) + 1, 10, 4, P): table[op, m] = the slot columns' terms (const, sign, centre row, centre
    column); row len(OPS) = not applied. A slot's columns = the terms weighted by (1, s, row, col)."""
    table = torch.zeros(len(OPS) + 1, 10, 4, P, dtype=torch.float64)
    col = {name: j for j, name in enumerate(SLOT_COLUMNS)}
    for k in range(len(OPS) + 1):
        for m in MAGNITUDES:
            const = _identity_row(size) | _tap_offsets(size, None)
            const["lut_index"] = float(_lut_row(k, m, 0)) + 0.5  # + 0.5 s: row (k, m, s > 0)
            signed = {"lut_index": 0.5}
            if k < len(OPS):
                over, op_signed = _op_terms(OPS[k], float(magnitude_value(OPS[k], m)), size)
                const |= over
                signed |= op_signed
            table[k, m, 0] = torch.tensor([const[n] for n in SLOT_COLUMNS], dtype=torch.float64)
            for name, v in signed.items():
                table[k, m, 1, col[name]] = v
            if k == OPS.index("Cutout"):
                table[k, m, 2, [col["r0"], col["r1"]]] = 1.0
                table[k, m, 3, [col["c0"], col["c1"]]] = 1.0
    return table


def _lut_row(k: int, m: int, positive: int) -> int:
    return (k * 10 + m) * 2 + positive


def point_lut_table() -> torch.Tensor:
    """float32 ((len(OPS) + 1) * 10 * 2, 256): row _lut_row(op, m, s > 0) = ``apply_op`` of the pointwise ops
    (POINT_OPS) on the 256 levels; the identity for every other op and for 'not applied'."""
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256)
    table = levels[0, 0, 0].float().repeat((len(OPS) + 1) * 10 * 2, 1)
    for op in POINT_OPS:
        for m in MAGNITUDES:
            for positive, sign in ((0, -1.0), (1, 1.0)):
                lut = apply_op(levels, op, magnitude_value(op, m), sign)[0, 0, 0]
                table[_lut_row(OPS.index(op), m, positive)] = lut.float()
    return table


# ------------------------------------------------------------------------------------------------- the stages

def smooth_kernel(device: torch.device | str = "cpu") -> torch.Tensor:
    """PIL ImageFilter.SMOOTH's 3x3 weights [[1,1,1],[1,5,1],[1,1,1]] (divided by 13 after the sum), one per
    channel: float32 (3, 1, 3, 3) for a depthwise conv2d."""
    kernel = torch.ones(3, 1, 3, 3, device=device)
    kernel[:, :, 1, 1] = 5.0
    return kernel


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off on ``device``: the exact-integer conv / matmul of the augmentation must stay float32."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()  # e.g. 'meta', which autocast does not know


def smooth_interior(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """SMOOTH of float32 (B, 3, H, W) integer levels on the (H - 2, W - 2) interior, rounded. The sums are exact in
    float32 whatever the order (integers below 2^24), so the depthwise conv gives PIL's integer sums."""
    with full_precision(x.device):
        return torch.nn.functional.conv2d(x, kernel, groups=3).div_(13).round_()



def _equalize_lut(hist: torch.Tensor, hi: torch.Tensor, n: int, levels: torch.Tensor) -> torch.Tensor:
    """torchvision's equalize (PIL's rule) as a LUT: step = (N - count of the top level) // 255,
    lut[i] = (pixels below i + step // 2) // step, clamped; the identity where step == 0. int64 (B, 3, 256)."""
    step = (n - hist.gather(-1, hi)).div_(255, rounding_mode="floor")
    lut = (hist.cumsum(-1) - hist + step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    return torch.where(step > 0, lut, levels)


class _SlotInputs:
    """From the parameters only, for both slots at once: per slot (``unbind``), the flags (B, 1, 1), the keep mask,
    fraction and tap base (B, 1, N), the point LUT (B, 1, 256), the tap offsets (B, 4, 1) and the fill (B, 3, 1)."""

    def __init__(self, g: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, stride: torch.Tensor,
                 point_luts: torch.Tensor, size: int) -> None:
        b = g.shape[0]
        pairs, flags, f_blend, lut_row, taps, fill = g.split([len(PAIRS), len(FLAGS), 1, 1, 4, 3], 2)
        lin_x, lin_y, shift, half, tap, lo, hi = pairs.view(b, 2, len(PAIRS) // 2, 2, 1).unbind(2)
        hole, *flags = (flags.unsqueeze(-1) > 0).unbind(2)  # (B, 2, 1, 1) each
        vu = lin_x * xs + lin_y * ys + shift  # (B, 2, 2, N): (v, u) as warp_nearest computes them
        self.keep = ((vu >= lo) & (vu < hi)).all(dim=2, keepdim=True) != hole
        vu -= half
        corner = vu.floor()
        frac = ((vu - corner) * tap).sum(dim=2, keepdim=True).add_(f_blend).float()
        base = (corner.clamp_(-1, size - 1) * stride).sum(dim=2, keepdim=True).long()
        point = point_luts[lut_row.view(b, 2, 1).long()]
        per_slot = (*flags, self.keep, frac, base, point, taps.long(), fill.float())
        self.slots = list(zip(*(t.unbind(1) for t in per_slot)))


class FusedBatchAugment(BatchAugment):
    """Cutout + RandAugment on uint8 (B, 3, S, S) as one static-shape pass; same draws and results as BatchAugment."""

    def __init__(self, image_size: int, cutout_factor: float = 0.5, replay: str | None = None) -> None:
        super().__init__(image_size, cutout_factor)
        if replay not in REPLAYS:
            raise ValueError(f"replay {replay!r} is not one of {REPLAYS}")
        self.replay = replay  # on CUDA images: run the pass as a CUDA graph or compiled (reduce-overhead); else eager
        self._runner: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self.table = param_table(image_size)  # stays on the CPU with the draws (not a buffer)
        half = int(cutout_factor * image_size + 0.5) // 2  # CutoutPIL's box [c - half, c + half], both ends in
        self.cut_offsets = torch.zeros(CUT_COLUMNS + 2 * P, dtype=torch.float64)
        self.cut_offsets[:4] = torch.tensor([-half, -half, half + 1, half + 1], dtype=torch.float64)
        s = image_size
        centres = torch.arange(s, dtype=torch.float64) + 0.5
        grid = torch.stack((centres.repeat_interleave(s), centres.repeat(s))).view(1, 2, s * s)  # (y, x) centres
        interior = torch.zeros(1, 1, s, s, dtype=torch.bool)
        interior[..., 1:-1, 1:-1] = True
        stride = torch.tensor([s + 2 * PAD, 1], dtype=torch.float64).view(1, 1, 2, 1)  # (row, col) in a plane
        buffers = {"grid": grid, "ys": grid[None, :, :1], "xs": grid[None, :, 1:], "stride": stride,
                   "interior": interior, "levels": torch.arange(256, dtype=torch.float64),
                   "levels_int": torch.arange(256), "one": torch.ones(1, 1, 1, dtype=torch.int64),
                   "point_luts": point_lut_table(), "smooth_w": smooth_kernel(),
                   "luma_w": torch.tensor([19595, 38470, 7471]).view(1, 3, 1),  # PIL's convert("L")
                   "cubic": torch.tensor(CUBIC_COEFFS, dtype=torch.float32)}
        for name, t in buffers.items():
            self.register_buffer(name, t, persistent=False)

    def params(self, cut: CutoutDraw, policy: PolicyDraw) -> torch.Tensor:
        """The draws -> float64 (B, CUT_COLUMNS + 2 P) on the draws' device: CutoutPIL's box and colour, then each
        slot's SLOT_COLUMNS = the (op, magnitude) table's terms weighted by (1, sign, centre row, centre col)."""
        table, offsets = (t if t.device == policy.op.device else t.to(policy.op.device)
                          for t in (self.table, self.cut_offsets))
        k = torch.where(policy.applied, policy.op, NOT_APPLIED)
        weights = torch.cat((policy.sign.new_ones(*policy.sign.shape, 1), policy.sign.unsqueeze(-1),
                             policy.center), dim=-1)  # (B, 2, 4); float32 holds these integers exactly
        slots = (table[k, policy.magnitude] * weights.unsqueeze(-1)).sum(dim=-2)  # (B, 2, P)
        # CutoutPIL's box [c - half, c + half] as half-open (r0, c0, r1, c1), then its colour; + 0 leaves the slots
        return torch.cat((cut.center, cut.center, cut.color, slots.flatten(1)), dim=1) + offsets

    def run(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The pass on the images' device: uint8 (B, 3, S, S) and ``params`` there -> uint8 (B, 3, S, S)."""
        with full_precision(x.device):  # the tap matmul and the conv are exact in float32 only
            return self._run(x, params)

    def _run(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        lo, hi, colour, slots = params.view(b, -1, 1).split([2, 2, 3, 2 * P], dim=1)
        in_box = ((self.grid >= lo) & (self.grid < hi)).all(dim=1, keepdim=True)
        y = torch.where(in_box, colour.float(), x.flatten(2).float())
        geo = _SlotInputs(slots.view(b, 2, P, 1), self.xs, self.ys, self.stride, self.point_luts, self.image_size)
        for slot in geo.slots:
            y = self._slot(y, *slot)
        return y.to(torch.uint8).view_as(x)

    def _slot(self, x: torch.Tensor, equalize: torch.Tensor, histogram: torch.Tensor, contrast: torch.Tensor,
              sharp: torch.Tensor, keep: torch.Tensor, frac: torch.Tensor, base: torch.Tensor, point: torch.Tensor,
              taps: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """One slot on float32 (B, 3, N) levels: the LUT, then the 4-tap sample (geometry and blends)."""
        index = x.long()
        luma = (index * self.luma_w).sum(dim=1, keepdim=True).add_(32768) >> 16  # PIL's L, exact integers
        y = self._lut(index, equalize, histogram, point)
        d = torch.where(contrast, grey_level(luma).float(), luma.float())
        d = torch.where(sharp, self._smooth(x), d)
        return self._sample(y, d, base, frac, keep, taps, fill)

    def _lut(self, index: torch.Tensor, equalize: torch.Tensor, histogram: torch.Tensor, point: torch.Tensor
             ) -> torch.Tensor:
        """The LUT stage on int64 (B, 3, N) levels: Equalize / AutoContrast from the histogram, else the point LUT."""
        hist = torch.zeros(*index.shape[:2], 256, dtype=torch.int64, device=index.device)
        hist.scatter_add_(2, index, self.one.expand_as(index))
        lo, hi = index.aminmax(dim=2, keepdim=True)
        lut = torch.where(equalize, _equalize_lut(hist, hi, index.shape[2], self.levels_int),
                          autocontrast_lut(lo.double(), hi.double(), self.levels))
        return torch.where(histogram, lut.float(), point).gather(2, index)

    def _smooth(self, x: torch.Tensor) -> torch.Tensor:
        """SMOOTH of (B, 3, N) levels with the border kept, as ``augment._smooth``."""
        s = self.image_size
        planes = x.view(-1, 3, s, s)
        return torch.where(self.interior, F.pad(smooth_interior(planes, self.smooth_w), (1, 1, 1, 1)),
                           planes).flatten(2)

    def _sample(self, y: torch.Tensor, d: torch.Tensor, base: torch.Tensor, frac: torch.Tensor, keep: torch.Tensor,
                taps: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """The 4-tap sample of [y, d] (edges replicated) at ``base`` + ``taps``, Horner at ``frac``, the fill where
        not ``keep``."""
        b, c, n = y.shape
        s = self.image_size
        planes = F.pad(torch.stack((y, d), dim=2).view(b, 2 * c, s, s), (PAD,) * 4, mode="replicate")
        index = (base + taps).view(b, 1, 4 * n).expand(b, c, 4 * n)
        sampled = planes.view(b, c, -1).gather(2, index).view(b, c, 4, n)
        v2, p2, p3, p4 = torch.matmul(self.cubic, sampled).unbind(2)
        out = horner(v2, p2, p3, p4, frac).clamp_(0, 255).trunc_()
        return torch.where(keep, out, fill)

    def apply(self, x: torch.Tensor, cut: CutoutDraw, policy: PolicyDraw) -> torch.Tensor:
        """Deterministic part, as ``BatchAugment.apply``: the draws' parameters to the device, then the pass."""
        params = to_device_nonblocking(self.params(cut, policy), x.device)
        if self.replay is None or x.device.type != "cuda":
            return self.run(x, params)
        if self._runner is None:
            self._runner = CapturedAugment(self) if self.replay == "cuda-graph" else \
                torch.compile(self.run, mode="reduce-overhead", fullgraph=True, dynamic=False)
        return self._runner(x, params).clone()  # both reuse their output memory on the next call

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, cutout_factor={self.cutout.factor}, fused, replay={self.replay}"


class CapturedAugment:
    """``FusedBatchAugment.run`` replayed as a CUDA graph: one capture per (batch, size), into static buffers.

    The pass has static shapes, no host reads and no allocation that depends on the data, which is what a capture
    needs. ``__call__`` copies the images and parameters into the captured inputs, replays, and returns the
    captured output, which the next replay overwrites (clone it to keep it). CUDA only.
    """

    def __init__(self, fused: FusedBatchAugment) -> None:
        self.fused = fused
        self.graphs: dict[tuple, tuple] = {}

    def _capture(self, x: torch.Tensor, params: torch.Tensor) -> tuple:
        static_x, static_p = x.clone(), params.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up outside the capture (cuDNN, allocator), as torch.cuda.graphs asks
            for _ in range(2):
                self.fused.run(static_x, static_p)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fused.run(static_x, static_p)
        return graph, static_x, static_p, out

    def __call__(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cuda":
            raise ValueError(f"CapturedAugment replays CUDA graphs; the images are on {x.device}")
        key = (tuple(x.shape), tuple(params.shape), x.device)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, params)
        graph, static_x, static_p, out = self.graphs[key]
        static_x.copy_(x)
        static_p.copy_(params)
        graph.replay()
        return out
