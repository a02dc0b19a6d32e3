"""Training and evaluation throughput (images/s) on synthetic COCO-sized JPEGs, all parts in one run.

    python -m benchmarks.bench_throughput                       # 448 px, batch 128, resnet50, on cuda if present
    python -m benchmarks.bench_throughput --device cpu --num-images 32 --image-size 64 --batch-size 8 \
        --steps 2 --model-name resnet18                        # smoke test, seconds

Parts (each timed after ``--warmup`` untimed steps; rates are images of data per second):
  (a) the project's training loop: the ``Run`` that ``src.trainer.build_run`` makes from train.py's flags (the
      recipe's defaults, Hill loss, random initial weights; ``--model-name``, ``--image-size``, ``--batch-size``,
      ``--compile`` as given) and ``src.engine.train_one_epoch`` over a DataLoader whose workers read file bytes,
      ``GpuTrainPreprocess`` (decode, resize, Cutout + RandAugment on the device), bf16 autocast (fp16 + GradScaler
      where bf16 is missing), channels_last, fused Adam, timm ModelEmaV3, OneCycle schedule; batch k+1 is prepared
      on a thread and a side stream while batch k trains (``src.data.prefetch``). On the CPU, or with
      --cpu-pipeline, the workers decode and augment (``train_transform``) instead.
  a-serial: (a) with each batch prepared in the loop, after the previous step (--prefetch 0): what the overlap gains.
  (b) the same step through ``train_one_epoch`` on one batch already on the device: the model's ceiling.
  data: the DataLoader + ``GpuTrainPreprocess`` alone (through the same ``Prefetcher``), no model.
  eval: ``src.engine.predict`` with ``GpuEvalPreprocess``, model and EMA in one pass under inference_mode.
  (c) an official-style reference: PIL decode and ``src.data.official_reference.official_train_transform``
      (Resize((S, S)), CutoutPIL, the ``randaugment`` package's policy written with PIL, ToTensor) on the CPU
      workers; fp16 autocast + GradScaler, NCHW, plain Adam, an EMA looping over the state_dict
      (e = d e + (1 - d) v): the pieces of ``benchmarks.official_style_baseline``. It runs in the same
      ``train_one_epoch`` harness, so only pipeline and step differ. On the CPU it runs in float32 like (a). Also timed: its data pipeline alone.

Each rate is a long epoch's steady state, taken by ``TimedLoader`` around the batches that ``train_one_epoch`` /
``predict`` iterate (prepared by the same ``Prefetcher`` the trainer uses, placed before the timer): the device is
synchronised when batch 0 and batch n - workers are handed out and nowhere else, and the first round of worker
batches (built before the clock starts) is not counted. The benchmark's DataLoaders cycle over the images and keep
their workers between parts (persistent, warmed up by the untimed epoch); use --steps of at least 4 x --workers.
cudnn.benchmark is on (fixed input size) unless --no-cudnn-benchmark.

Images: ``--num-images`` JPEGs (quality 90) of common COCO sizes (640 x 480, 480 x 640, 640 x 427, ...: several
input sizes per batch, as in COCO), content = smooth random colour fields + random shapes + noise; the loaders
cycle over them for as many steps as asked.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw

from benchmarks.official_style_baseline import EMA_DECAY, PilReferenceImages, StateDictEma
from src.data.builders import Datasets
from src.data.datasets import MultiLabelImages, collate_multilabel
from src.data.gpu_pipeline import AUGMENT_FORM_BY_DEVICE, AUGMENT_FORMS, GpuTrainPreprocess
from src.data.labels import LabelEntry
from src.data.prefetch import Prefetcher
from src.distributed import DistInfo
from src.engine import Compute, Learner, predict, train_one_epoch
from src.errors import report_user_errors
from src.io_utils import atomic_write_text
from src.loss_functions.losses import build_loss
from src.models import check_model_name, create_model
from src.trainer import Run, build_run, input_pipeline, resolve_compute
from src.training_flags import add_training_args


NUM_CLASSES = 80
COCO_TRAIN_IMAGES = 82_081
COCO_VAL_IMAGES = 40_137
PAPER_EPOCHS = 31
PARTS = ("a", "a-serial", "b", "data", "eval", "c")
TRAINING_PARTS = ("a", "a-serial", "b")  # the parts that step the project's run
# (width, height) of frequent COCO 2014 image sizes; image i gets entry i % len.
COCO_SIZES = ((640, 480), (640, 427), (480, 640), (640, 480), (640, 426), (427, 640), (640, 424), (500, 375),
              (640, 480), (640, 428), (612, 612), (640, 360))


# ------------------------------------------------------------------------------------------------------ images

MIN_IMAGE_SCALE = 0.1  # the smallest COCO size (640 x 360) times this keeps room for the shapes


def make_image(index: int, path: str, scale: float = 1.0) -> None:
    """Write one natural-looking JPEG: two octaves of smooth random colour, 3-9 random shapes, pixel noise.
    ``scale`` shrinks the COCO size (the CPU rehearsal of benchmarks.gpu_check uses 0.1)."""
    if scale < MIN_IMAGE_SCALE:
        raise ValueError(f"image scale {scale} is below {MIN_IMAGE_SCALE}")
    rng = np.random.default_rng(index)
    w, h = (round(v * scale) for v in COCO_SIZES[index % len(COCO_SIZES)])
    field = np.zeros((h, w, 3), dtype=np.float32)
    for cells, amplitude in ((120, 1.0), (30, 0.5), (8, 0.25)):  # cell size in pixels: coarse to fine
        coarse = rng.integers(0, 256, (max(h // cells, 2), max(w // cells, 2), 3), dtype=np.uint8)
        up = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32)
        field += amplitude * (up - 128.0)
    img = Image.fromarray(np.clip(field / 1.2 + 128.0, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 10))):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([tuple(int(v) for v in rng.integers(0, (w, h))) for _ in range(3)], fill=colour)
    noisy = np.asarray(img, dtype=np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, format="JPEG", quality=90)


def _make_image_star(args: tuple[int, str, float]) -> None:
    make_image(*args)


def image_names(n: int) -> list[str]:
    return [f"{i:06d}.jpg" for i in range(n)]


def make_images(image_dir: Path, n: int, processes: int, scale: float = 1.0) -> float:
    """Write the first ``n`` synthetic images into ``image_dir`` (files already there are kept); seconds taken."""
    start = time.perf_counter()
    image_dir.mkdir(parents=True, exist_ok=True)
    todo = [(i, str(image_dir / name), scale) for i, name in enumerate(image_names(n))
            if not (image_dir / name).is_file()]
    if todo:
        with multiprocessing.get_context("fork").Pool(max(1, min(processes, len(todo)))) as pool:
            pool.map(_make_image_star, todo, chunksize=max(1, len(todo) // (4 * processes)))
    return time.perf_counter() - start


def random_entries(n: int, seed: int = 0):
    """1-4 random positive classes per image (COCO averages 2.9)."""
    rng = np.random.default_rng(seed)
    return [LabelEntry(name, tuple(sorted(int(c) for c in rng.choice(NUM_CLASSES, int(rng.integers(1, 5)),
                                                                        replace=False))))
            for name in image_names(n)]


# --------------------------------------------------------------------------------------- official-style reference

def reference_learner(model_name: str, device: torch.device, label_store: torch.Tensor,
                      total_steps: int) -> Learner:
    """The official-style step: the model in NCHW from seed 0 (as the project's run), plain Adam (lr 1e-4) over
    every parameter, ``StateDictEma``, OneCycle over ``total_steps``, Hill loss; fp16 autocast + GradScaler on
    CUDA, float32 on the CPU."""
    torch.manual_seed(0)
    model = create_model(model_name, NUM_CLASSES).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-4, total_steps=total_steps, pct_start=0.2)
    amp = torch.float16 if device.type == "cuda" else None
    return Learner(model, build_loss("Hill"), optimizer, scheduler,
                   torch.amp.GradScaler(device.type, enabled=amp is not None), StateDictEma(model, EMA_DECAY),
                   label_store, Compute(device, amp))


# ----------------------------------------------------------------------------------------------------- harness

class CycleSampler(torch.utils.data.Sampler[int]):
    """``length`` indices cycling over range(n); ``length`` may change between epochs (persistent workers)."""

    def __init__(self, n: int, length: int):
        self.n, self.length = n, length

    def __iter__(self) -> Iterator[int]:
        return (i % self.n for i in range(self.length))

    def __len__(self) -> int:
        return self.length


def make_loader(dataset, sampler: CycleSampler, args, device: torch.device):
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                                       num_workers=args.workers, collate_fn=collate_multilabel, drop_last=True,
                                       pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedLoader:
    """Hands out ``loader``'s batches and times the steady state: the images of batches [0, n - skip) over the
    wall time from handing out batch 0 to handing out batch n - skip, the device synchronised at both points (so
    the interval holds exactly the device work of those batches; nowhere else is synchronised).

    ``skip`` = the DataLoader's workers: each builds whole batches and they start an epoch together, so the first
    ``skip`` batches arrive together; counting from the first arrival to the first of the last round leaves out
    the round built before the clock started. That is the long-epoch rate whether the loader or the step is slower.
    """

    def __init__(self, loader, skip: int, device: torch.device):
        self.loader, self.skip, self.device = loader, skip, device
        self.rate = float("nan")

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        stop = len(self.loader) - self.skip
        images, start = 0, 0.0
        for i, batch in enumerate(self.loader):
            if i == 0 or i == stop:
                synchronize(self.device)
                now = time.perf_counter()
                if i == 0:
                    start = now
                else:
                    self.rate = images / (now - start)
            if i < stop:
                images += len(batch[2])
            yield batch


def measure(epoch: Callable[[object], object], loader_of: Callable[[int], object], args, device: torch.device,
            preprocess: Callable | None = None, prefetch: int = 0) -> float:
    """Run ``epoch`` over ``--warmup`` batches untimed, then over ``--steps`` batches timed by ``TimedLoader``.

    With ``preprocess``, the batches reach ``epoch`` through a ``Prefetcher`` (``prefetch`` batches ahead), as
    ``train_one_epoch`` and ``predict`` would wrap them, but outside the timer: the clock reads when the step takes
    a batch, not when the prefetch thread fetches it (which runs up to ``prefetch`` batches earlier).
    """
    def batches(n: int):
        loader = loader_of(n)
        return loader if preprocess is None else Prefetcher(loader, preprocess, device, prefetch)

    epoch(batches(args.warmup))
    timed = TimedLoader(batches(args.steps), min(max(args.workers, 1), args.steps - 1), device)
    epoch(timed)
    return timed.rate


def train_steps(learner: Learner, batches) -> dict:
    """``src.engine.train_one_epoch`` over batches that ``measure`` has prepared (silent: no progress)."""
    return train_one_epoch(learner, batches, 0)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_data_only(batches) -> None:
    for _batch in batches:
        pass


# -------------------------------------------------------------------------------------------------------- parts

def scheduled_steps(args, parts: set[str]) -> int:
    """Steps one learner takes over ``parts`` (warmup + timed steps each), plus slack: its OneCycle length."""
    return (args.warmup + args.steps) * max(len(parts), 1) + 8


def training_run(args, image_dir: Path, entries) -> Run:
    """What train.py builds for these images, through ``src.trainer.build_run``: the recipe's defaults, Hill loss,
    random initial weights, at the benchmark's model, size, batch and device; its schedule long enough for every
    training part."""
    per_epoch = math.ceil(args.num_images / args.batch_size)  # the run's own DataLoader: its schedule counts these
    epochs = math.ceil(scheduled_steps(args, set(args.parts) & set(TRAINING_PARTS)) / per_epoch)
    flags = ["--model-name", args.model_name, "--image-size", str(args.image_size), "-b", str(args.batch_size),
             "-j", str(args.workers), "--loss", "Hill", "--pretrained", "none", "--device", args.device,
             "--gpu-pipeline", "off" if args.cpu_pipeline else "auto", "--epochs", str(epochs), "--stop-epoch", "0"]
    train_args = add_training_args(argparse.ArgumentParser()).parse_args(flags + (["--compile"] if args.compile
                                                                                   else []))
    compute = resolve_compute(train_args, DistInfo())
    pipeline = input_pipeline(train_args, compute.device)
    if (args.sync_free_augment or args.augment_form) and pipeline.raw:
        pipeline.train_pre = GpuTrainPreprocess(args.image_size, compute.device, sync_free=args.sync_free_augment,
                                                augment_form=args.augment_form)
    train, test = (MultiLabelImages(image_dir, entries, NUM_CLASSES, transform=tf, raw=pipeline.raw)
                   for tf in (pipeline.train_tf, pipeline.val_tf))
    return build_run(train_args, Datasets(train, test, NUM_CLASSES, str(image_dir)), compute, pipeline)


def describe(args, run: Run) -> dict:
    device = run.compute.device
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "cpus": os.cpu_count(), "workers": args.workers,
            "model": args.model_name, "image_size": args.image_size, "batch_size": args.batch_size,
            "steps": args.steps, "warmup": args.warmup, "num_images": args.num_images, "compile": args.compile,
            "amp": str(run.compute.amp_dtype), "pipeline": "gpu" if run.pipeline.raw else "cpu",
            "sync_free_augment": args.sync_free_augment, "augment_form": augment_form(args, run),
            "prefetch": args.prefetch, "parts": ",".join(args.parts)}


def augment_form(args, run: Run) -> str | None:
    """The batched augmentation's form that (a) and data ran with (None: the CPU pipeline, no batched form)."""
    if not run.pipeline.raw:
        return None
    if args.sync_free_augment:
        return "masked"
    return args.augment_form or AUGMENT_FORM_BY_DEVICE.get(run.compute.device.type, "per-op")


def cycling(dataset, args, device: torch.device) -> Callable[[int], object]:
    """n -> the one persistent-worker loader over ``dataset``, set to hand out n batches."""
    sampler = CycleSampler(len(dataset), 0)
    loader = make_loader(dataset, sampler, args, device)

    def loader_of(n: int):
        sampler.length = n * args.batch_size
        return loader
    return loader_of


def project_parts(args, run: Run, r: dict) -> None:
    """(a), (a) without the overlap, (b), the data pipeline alone, evaluation: figures into ``r``."""
    device, parts, learner = run.compute.device, set(args.parts), run.learner
    train_loader = cycling(run.data.train, args, device) if parts & {"a", "a-serial", "data"} else None
    if "a" in parts:
        r["a_train_img_s"] = measure(lambda L: train_steps(learner, L), train_loader, args, device,
                                     run.pipeline.train_pre, args.prefetch)
        r["a_peak_gib"] = peak_gib(device)
        say(f"(a) training loop ({r['pipeline']} pipeline): {r['a_train_img_s']:.0f} img/s")
    if "a-serial" in parts:
        r["a_serial_img_s"] = measure(lambda L: train_steps(learner, L), train_loader, args, device,
                                      run.pipeline.train_pre, 0)
        say(f"(a) with each batch prepared in the loop (no overlap): {r['a_serial_img_s']:.0f} img/s")
    if "b" in parts:
        B, S = args.batch_size, args.image_size
        fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        batch = (torch.rand(B, 3, S, S, device=device).contiguous(memory_format=fmt), None,
                 torch.arange(B) % args.num_images, 0)
        r["b_step_img_s"] = measure(lambda L: train_steps(learner, L), lambda n: [batch] * n, args, device)
        say(f"(b) model step only: {r['b_step_img_s']:.0f} img/s")
    if "data" in parts:
        r["data_img_s"] = measure(run_data_only, train_loader, args, device, run.pipeline.train_pre, args.prefetch)
        say(f"data only (loader + preprocess): {r['data_img_s']:.0f} img/s")
    if "eval" in parts:
        models = {"model": run.model, "ema": learner.ema.module}
        shape = (len(run.data.test), NUM_CLASSES)
        r["eval_img_s"] = measure(lambda L: predict(models, L, shape, run.compute, desc=None),
                                  cycling(run.data.test, args, device), args, device, run.pipeline.eval_pre,
                                  args.prefetch)
        r["eval_40137_s"] = COCO_VAL_IMAGES / r["eval_img_s"]
        say(f"eval (model + EMA, one pass): {r['eval_img_s']:.0f} img/s, {r['eval_40137_s']:.0f}s for 40,137 images")


def reference_parts(args, image_dir: Path, entries, label_store: torch.Tensor, r: dict) -> None:
    """(c) and its data pipeline alone, on the project run's device and label store: figures into ``r``."""
    device = label_store.device
    ref = reference_learner(args.model_name, device, label_store, scheduled_steps(args, {"c"}))
    reset_peak(device)
    ref_images = PilReferenceImages(image_dir, [e.name for e in entries], [e.labels for e in entries], args.image_size)
    ref_loader = cycling(ref_images, args, device)
    ref_pre = lambda t: t.to(device, non_blocking=True)  # noqa: E731 (NCHW, as the official code)
    r["c_reference_img_s"] = measure(lambda L: train_steps(ref, L), ref_loader, args, device, ref_pre, 0)
    r["c_peak_gib"] = peak_gib(device)
    say(f"(c) official-style reference: {r['c_reference_img_s']:.0f} img/s")
    r["c_data_img_s"] = measure(run_data_only, ref_loader, args, device, ref_pre, 0)
    say(f"(c) its data pipeline alone: {r['c_data_img_s']:.0f} img/s")


def run(args) -> dict:
    if args.steps < 4 * max(args.workers, 1):
        say(f"note: --steps {args.steps} < 4 x --workers {args.workers}: too few batches for a steady-state figure")
    tmp = None
    if args.image_dir:
        image_dir = Path(args.image_dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_throughput_")
        image_dir = Path(tmp.name)
    try:
        seconds = make_images(image_dir, args.num_images, os.cpu_count() or 1)
        say(f"{args.num_images} JPEGs in {image_dir} ({seconds:.1f}s)")
        entries = random_entries(args.num_images)
        bench_run = training_run(args, image_dir, entries)
        r = {**describe(args, bench_run), "make_images_s": seconds}
        if bench_run.compute.device.type == "cuda":
            torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
        reset_peak(bench_run.compute.device)
        if set(args.parts) - {"c"}:
            project_parts(args, bench_run, r)
        label_store = bench_run.learner.label_store
        del bench_run  # the project's model, EMA and optimizer leave the device before (c) measures its peak
        if "c" in args.parts:
            reference_parts(args, image_dir, entries, label_store, r)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return with_ratios(r)


def with_ratios(r: dict) -> dict:
    def ratio(x: str, y: str) -> float | None:
        return r[x] / r[y] if x in r and y in r else None

    r["ratio_a_b"] = ratio("a_train_img_s", "b_step_img_s")
    r["ratio_a_serial_b"] = ratio("a_serial_img_s", "b_step_img_s")
    r["ratio_a_c"] = ratio("a_train_img_s", "c_reference_img_s")
    if "a_train_img_s" in r and "eval_40137_s" in r:
        r["paper_run_hours"] = PAPER_EPOCHS * (COCO_TRAIN_IMAGES / r["a_train_img_s"] + r["eval_40137_s"]) / 3600
    if "c_reference_img_s" in r:
        r["paper_run_hours_reference"] = PAPER_EPOCHS * COCO_TRAIN_IMAGES / r["c_reference_img_s"] / 3600
    return r


def say(msg: str) -> None:
    print(msg, flush=True)


def report(r: dict) -> str:
    """The figures as a small table; parts that were not run are left out."""
    rows = [("(a) training loop, data + step + EMA", "a_train_img_s"),
            ("(a) without the overlap (--prefetch 0)", "a_serial_img_s"),
            ("(b) model step only (data on device)", "b_step_img_s"),
            ("data only (loader + preprocess)", "data_img_s"),
            ("eval, model + EMA in one pass", "eval_img_s"),
            ("(c) official-style reference", "c_reference_img_s"),
            ("(c) its data pipeline alone (PIL, workers)", "c_data_img_s")]
    lines = [f"{r['device']}, torch {r['torch']}, {r['model']} @ {r['image_size']} px, batch {r['batch_size']}, "
             f"{r['workers']} workers, {r['pipeline']} pipeline, amp {r['amp']}, compile {r['compile']}, "
             f"augment form {r['augment_form']}, prefetch {r['prefetch']}"]
    lines += [f"  {name:<42} {r[key]:>9.1f} img/s" for name, key in rows if key in r]
    ratios = [f"(a)/(b) {r['ratio_a_b']:.2f}" if r["ratio_a_b"] else "",
              f"no overlap/(b) {r['ratio_a_serial_b']:.2f}" if r["ratio_a_serial_b"] else "",
              f"(a)/(c) {r['ratio_a_c']:.2f}" if r["ratio_a_c"] else "",
              f"eval of 40,137 images {r['eval_40137_s']:.0f}s" if "eval_40137_s" in r else ""]
    if any(ratios):
        lines.append("  " + "   ".join(x for x in ratios if x))
    peaks = [f"{p} {r[k]:.1f} GiB" for p, k in (("(a)", "a_peak_gib"), ("(c)", "c_peak_gib")) if r.get(k) is not None]
    if peaks:
        lines.append("  peak GPU memory: " + ", ".join(peaks))
    if "paper_run_hours" in r:
        lines.append(f"  31 epochs of 82,081 images + eval at (a) and eval rates: {r['paper_run_hours']:.1f} h")
    if "paper_run_hours_reference" in r:
        lines.append(f"  31 epochs at the (c) rate, training only: {r['paper_run_hours_reference']:.1f} h")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cuda, cpu, cuda:1, ... (default: cuda if present)")
    p.add_argument("--num-images", default=2048, type=int, help="synthetic JPEGs to write (default: 2048)")
    p.add_argument("--image-dir", default=None, help="write (and reuse) the JPEGs here instead of a temp folder")
    p.add_argument("--image-size", default=448, type=int, help="input size S (default: 448)")
    p.add_argument("--batch-size", default=128, type=int, help="batch size (default: 128)")
    p.add_argument("--steps", default=64, type=int, help="timed steps per part, at least 4 x --workers (default: 64)")
    p.add_argument("--warmup", default=3, type=int, help="untimed steps before each part (default: 3)")
    p.add_argument("--workers", default=min(16, os.cpu_count() or 1), type=int,
                   help="DataLoader workers (default: min(16, CPU count))")
    p.add_argument("--model-name", default="resnet50", type=check_model_name,
                   help="timm model name (default: resnet50)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for (a) and (b)")
    p.add_argument("--cpu-pipeline", action="store_true", help="(a) and eval decode and augment on CPU workers")
    p.add_argument("--threads", default=None, type=int,
                   help="torch.set_num_threads in the main process (default: on the CPU, CPU count minus "
                        "--workers, at least 1; on CUDA torch's choice)")
    p.add_argument("--sync-free-augment", action="store_true",
                   help="BatchAugment(sync_free=True): every op on the whole batch, no host sync")
    p.add_argument("--augment-form", default=None, choices=AUGMENT_FORMS,
                   help="the GPU pipeline's batched augmentation (default: gpu_pipeline.AUGMENT_FORM_BY_DEVICE's "
                        "choice for the device)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"which parts to run (default: {','.join(PARTS)})")
    p.add_argument("--prefetch", default=1, type=int,
                   help="batches prepared ahead of the step in (a), data and eval (default: 1; 0 = no overlap)")
    p.add_argument("--no-cudnn-benchmark", action="store_true", help="leave torch.backends.cudnn.benchmark off")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    for flag in ("num_images", "image_size", "batch_size", "warmup"):
        if getattr(args, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive")
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = [x for x in args.parts if x not in PARTS]
    if unknown or not args.parts:
        p.error(f"--parts {','.join(unknown) or '(none)'}: choose from {','.join(PARTS)}")
    if args.steps < 2:
        p.error("--steps must be at least 2 (the clock starts at the first batch)")
    if args.workers < 0:
        p.error("--workers must be >= 0")
    if args.prefetch < 0:
        p.error("--prefetch must be >= 0")
    if args.threads is not None and args.threads <= 0:
        p.error("--threads must be positive")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        with warnings.catch_warnings(), report_user_errors():  # a bad --device: one line, exit status 2
            # (c)'s GradScaler skips its first fp16 steps (inf check), which makes OneCycleLR warn each time.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            on_cpu = args.device.startswith("cpu") or (args.device == "auto" and not torch.cuda.is_available())
            if args.threads or on_cpu:  # on the CPU the workers need cores too: oversubscribed threads crawl
                torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - args.workers))
            r = run(args)
    finally:  # main() may run inside a test process: leave the process as it was
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = cudnn_benchmark
    r = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in r.items()}
    print(report(r))
    line = json.dumps(r)
    print(line, flush=True)
    if args.json:
        atomic_write_text(args.json, line + "\n")
    return r


if __name__ == "__main__":
    main()
