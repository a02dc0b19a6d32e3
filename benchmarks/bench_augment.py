"""Operators and time per batch of the batched augmentation: the per-op form (BatchAugment) vs the fused one.

    python -m benchmarks.bench_augment --device cpu --image-size 64     # the CPU measurement of docs/performance.md
    python -m benchmarks.bench_augment --device cuda                    # 448 px: the GPU measurement (pending)

For each form and batch size (--batches, default 64 and 128) on uint8 (B, 3, S, S) images on --device, with the
same draws for both forms (``BatchAugment.sample`` from a CPU generator seeded --seed, as ``GpuTrainPreprocess``
draws), the benchmark runs ``apply(x, cut, policy)`` (everything after the draws: on the CPU the per-op form's
grouping, the fused form's parameters, then the device work) and prints one line per form and size:

    per-op 128 images: N ops per batch (M aten calls with nested ones), T ms per batch
    fused 128 images: N ops per batch (...), T ms per batch

On CUDA the fused pass is also timed as a CUDA graph replay (fused-graph) and under
torch.compile(mode="reduce-overhead") (fused-compiled); --forms picks the forms.

"ops" = the aten operators torch.profiler records at the top level (an operator called from Python, not from
inside another); the nested count includes those inside. On CUDA the line adds the CUDA kernels launched. The time
is the mean of --repeats runs after a warm-up (CUDA synchronised around each). The summary line gives the fused /
per-op ratio of the counts (target: at most 0.2 and the fused count flat in the batch size) and which form was
faster on this device. The per-op form's count depends on the draws (how many distinct ops each slot drew); the
fused form's does not.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from src.data.augment import BatchAugment
from src.data.gpu_pipeline import AUGMENT_FORMS, batch_augment
from src.errors import UserError, report_user_errors

FORMS = ("per-op", "fused")  # the compared pair; on CUDA the fused pass's replays are timed too
CUDA_FORMS = FORMS + ("fused-graph", "fused-compiled")
TARGET_RATIO = 0.2


@dataclass
class Measurement:
    form: str
    batch: int
    ops: int  # top-level aten operators per batch
    nested_ops: int  # all aten operators, nested calls included
    kernels: int | None  # CUDA kernels per batch (CUDA only)
    ms: float  # mean time per batch

    def line(self) -> str:
        kernels = f", {self.kernels} CUDA kernels" if self.kernels is not None else ""
        return (f"{self.form} {self.batch} images: {self.ops} ops per batch ({self.nested_ops} aten calls with "
                f"nested ones{kernels}), {self.ms:.2f} ms per batch")


def count_ops(aug: BatchAugment, x: torch.Tensor, draws: tuple) -> tuple[int, int, int | None]:
    """(top-level aten ops, all aten ops, CUDA kernels or None) of one ``aug.apply(x, *draws)``."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with profile(activities=activities) as prof:
        aug.apply(x, *draws)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
    events = prof.events()
    aten = [e for e in events if e.name.startswith("aten::")]
    top = [e for e in aten if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    kernels = None
    if x.is_cuda:
        kernels = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return len(top), len(aten), kernels


def time_batch(aug: BatchAugment, x: torch.Tensor, draws: tuple, repeats: int) -> float:
    """Mean milliseconds of ``aug.apply(x, *draws)`` over ``repeats`` runs."""
    sync = (lambda: torch.cuda.synchronize(x.device)) if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        aug.apply(x, *draws)
    sync()
    return (time.perf_counter() - start) / repeats * 1e3


def measure(form: str, batch: int, args: argparse.Namespace, device: torch.device) -> Measurement:
    aug = batch_augment(args.image_size, device, form)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randint(0, 256, (batch, 3, args.image_size, args.image_size), generator=g, dtype=torch.uint8)
    x = x.to(device)
    draws = aug.sample(batch, "cpu", torch.Generator().manual_seed(args.seed))
    for _ in range(3):  # warm-up: allocator, cuDNN, buffers on the device; the capture or compile of a replay
        aug.apply(x, *draws)
    ms = time_batch(aug, x, draws, args.repeats)
    ops, nested, kernels = count_ops(aug, x, draws)
    return Measurement(form, batch, ops, nested, kernels, ms)


def summary(results: list[Measurement], device: torch.device) -> list[str]:
    by = {(m.form, m.batch): m for m in results}
    batches = sorted({m.batch for m in results})
    ratios = {b: by["fused", b].ops / by["per-op", b].ops for b in batches}
    flat = len({by["fused", b].ops for b in batches}) == 1
    met = flat and all(r <= TARGET_RATIO for r in ratios.values())
    times = {b: by["fused", b].ms / by["per-op", b].ms for b in batches}
    faster = "fused" if all(t < 1 for t in times.values()) else "per-op" if all(t > 1 for t in times.values()) \
        else "neither at every size"
    return [f"fused / per-op ops: {', '.join(f'{r:.3f} at {b} images' for b, r in ratios.items())}; fused count "
            f"flat in the batch size: {'yes' if flat else 'no'} (target: at most {TARGET_RATIO} and flat: "
            f"{'met' if met else 'not met'})",
            f"fused / per-op time on {device.type}: {', '.join(f'{t:.2f} at {b} images' for b, t in times.items())}"
            f"; faster here: {faster}"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:n]")
    p.add_argument("--image-size", default=448, type=int, help="image side S (default: 448)")
    p.add_argument("--batches", default="64,128", help="comma-separated batch sizes (default: 64,128)")
    p.add_argument("--repeats", default=5, type=int, help="timed runs per form and size (default: 5)")
    p.add_argument("--forms", default=None, help=f"comma-separated, from {','.join(AUGMENT_FORMS)} (default: "
                                                 f"{','.join(FORMS)}, plus the fused replays on CUDA)")
    p.add_argument("--seed", default=0, type=int, help="seed of the images and the draws (default: 0)")
    p.add_argument("--threads", default=None, type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the measurements to this JSON file")
    args = p.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batches {args.batches!r}: expected comma-separated integers")
    if args.forms is not None:
        args.forms = [f.strip() for f in args.forms.split(",") if f.strip()]
        if not set(FORMS) <= set(args.forms) or not set(args.forms) <= set(AUGMENT_FORMS):
            p.error(f"--forms {','.join(args.forms)}: include {' and '.join(FORMS)}, choose from "
                    f"{','.join(AUGMENT_FORMS)}")
    if not args.batches or min(args.batches) <= 0 or args.image_size < 3 or args.repeats <= 0:
        p.error("--batches, --repeats must be positive and --image-size at least 3")
    return args


def main(argv: list[str] | None = None) -> list[Measurement]:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        with report_user_errors():
            device = torch.device(args.device)
            if device.type == "cuda" and not torch.cuda.is_available():
                raise UserError(f"--device {args.device}: no CUDA device here (use --device cpu)")
            if args.threads:
                torch.set_num_threads(args.threads)
            forms = args.forms or (CUDA_FORMS if device.type == "cuda" else FORMS)
            results = [measure(form, b, args, device) for b in args.batches for form in forms]
    finally:
        torch.set_num_threads(threads)
    print(f"bench_augment: {device}, {args.image_size} px, torch {torch.__version__}, "
          f"{torch.get_num_threads() if not args.threads else args.threads} threads")
    for m in results:
        print(m.line())
    for line in summary(results, device):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([vars(m) for m in results], f)
    return results


if __name__ == "__main__":
    main()
