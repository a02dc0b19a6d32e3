"""The official training recipe, timed: the baseline that gpu_check and docs/performance.md compare the project with.

Written for this project from the official train.py's recipe (xinyu1205/robust-loss-mlml, built on ASL's):

- **pipeline**: DataLoader workers on the CPU open each JPEG with PIL, ``convert('RGB')`` it and apply
  ``src.data.official_reference.official_train_transform``: Resize((S, S)), CutoutPIL(0.5), the ``randaugment``
  package's policy (written out again with PIL), ToTensor. Shuffled, pinned memory on CUDA, persistent workers.
- **step**: the model in NCHW from seed 0, fp16 autocast + GradScaler (float32 on the CPU), Adam (lr 1e-4) over
  every parameter, Hill loss, and an EMA that walks the state_dict one tensor at a time:
  e <- d * e + (1 - d) * v with d = 0.9997.

The two halves are timed apart, each after an untimed warm-up: ``loader_official_img_s`` (the pipeline alone,
whole passes over the images) and ``model_official_img_s`` (the step alone on one batch already on the device,
with ``model_official_peak_gib``, its peak GPU memory, on CUDA). The official code runs them side by side, so it
trains no faster than the slower of the two: gpu_check takes that as the baseline.

    python -m benchmarks.official_style_baseline --image-dir DIR --json OUT.json            # 448 px, batch 128
    python -m benchmarks.official_style_baseline --image-dir DIR --device cpu --image-size 32 --batch-size 4 \
        --workers 1 --steps 2 --model-name resnet10t                                         # smoke test

DIR holds the JPEGs (gpu_check passes the images its data step made); the labels are random, 1-4 of 80 classes.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from src.data.official_reference import official_train_transform
from src.errors import UserError, report_user_errors
from src.io_utils import atomic_write_text
from src.loss_functions.losses import build_loss
from src.models import check_model_name, create_model

NUM_CLASSES = 80
EMA_DECAY = 0.9997
LR = 1e-4


class PilReferenceImages(torch.utils.data.Dataset):
    """The official pipeline in a worker: PIL open + convert('RGB'), then ``official_train_transform``.
    ``labels[i]``: image i's positive classes. Samples are (image, target, index), like ``MultiLabelImages``."""

    def __init__(self, image_dir: Path, names: list[str], labels: list[tuple[int, ...]], image_size: int):
        if len(names) != len(labels):
            raise ValueError(f"{len(names)} images but {len(labels)} label rows")
        self.image_dir, self.names, self.labels = Path(image_dir), names, labels
        self.tf = official_train_transform(image_size)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int):
        img = Image.open(self.image_dir / self.names[index]).convert("RGB")
        target = torch.zeros(NUM_CLASSES)
        target[list(self.labels[index])] = 1.0
        return self.tf(img), target, index


class StateDictEma:
    """The official EMA: for every state_dict entry, e <- decay * e + (1 - decay) * v, one tensor at a time."""

    def __init__(self, model: nn.Module, decay: float = EMA_DECAY):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            e.copy_(self.decay * e + (1.0 - self.decay) * v)


def random_labels(n: int, seed: int = 0) -> list[tuple[int, ...]]:
    """1-4 distinct positive classes per image (COCO averages 2.9)."""
    rng = np.random.default_rng(seed)
    return [tuple(sorted(int(c) for c in rng.choice(NUM_CLASSES, int(rng.integers(1, 5)), replace=False)))
            for _ in range(n)]


def image_names(image_dir: Path, n: int) -> list[str]:
    """The first ``n`` JPEGs of ``image_dir`` by name; an error naming the folder when it holds fewer."""
    names = sorted(p.name for p in Path(image_dir).glob("*.jpg"))[:n]
    if len(names) < n:
        raise UserError(f"{image_dir}: {len(names)} JPEGs, --num-images asks for {n}")
    return names


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(dataset: PilReferenceImages, batch_size: int, workers: int, device: torch.device,
                passes: int = 2) -> float:
    """Images per second over ``passes`` whole passes of the official DataLoader, after one untimed pass."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                                         drop_last=True)
    if len(loader) == 0:
        raise UserError(f"--num-images: {len(dataset)} images make no batch of {batch_size}")
    for _ in loader:  # warm-up: workers started, files in the page cache
        pass
    start, images = time.perf_counter(), 0
    for _ in range(passes):
        for x, _target, _index in loader:
            images += x.shape[0]
    return images / (time.perf_counter() - start)


class OfficialStep:
    """One official training step on a fixed batch: forward under autocast, GradScaler, Adam, the EMA update."""

    def __init__(self, model_name: str, batch_size: int, image_size: int, device: torch.device):
        torch.manual_seed(0)
        self.device = device
        self.model = create_model(model_name, NUM_CLASSES, image_size=image_size).to(device)  # NCHW, as official
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.amp = torch.float16 if device.type == "cuda" else None  # the CPU has no fp16 autocast worth timing
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp is not None)
        self.ema = StateDictEma(self.model)
        self.loss = build_loss("Hill")
        self.x = torch.rand(batch_size, 3, image_size, image_size, device=device)
        self.y = torch.tensor(np.stack([np.isin(np.arange(NUM_CLASSES), row) for row in random_labels(batch_size)]),
                              dtype=torch.float32, device=device)

    def __call__(self) -> None:
        self.model.train()
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            logits = self.model(self.x)
        loss = self.loss(logits.float(), self.y)
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.update(self.model)


def step_rate(step: OfficialStep, batch_size: int, steps: int, warmup: int) -> float:
    """Images per second over ``steps`` steps after ``warmup`` untimed ones, the device synchronised around."""
    for _ in range(warmup):
        step()
    synchronize(step.device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(step.device)
    return batch_size * steps / (time.perf_counter() - start)


def run(args) -> dict:
    """Both halves with ``args``' settings; the figures (and the settings) as a dict."""
    device = torch.device(args.device)
    names = image_names(Path(args.image_dir), args.num_images)
    r = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
         "torch": torch.__version__, "model": args.model_name, "image_size": args.image_size,
         "batch_size": args.batch_size, "workers": args.workers, "num_images": len(names), "steps": args.steps}
    dataset = PilReferenceImages(Path(args.image_dir), names, random_labels(len(names)), args.image_size)
    r["loader_official_img_s"] = loader_rate(dataset, args.batch_size, args.workers, device)
    print(f"official pipeline ({args.workers} CPU workers): {r['loader_official_img_s']:.0f} img/s", flush=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    step = OfficialStep(args.model_name, args.batch_size, args.image_size, device)
    r["model_official_img_s"] = step_rate(step, args.batch_size, args.steps, args.warmup)
    if device.type == "cuda":
        r["model_official_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"official step ({r['model']}, {'fp16 + GradScaler' if step.amp else 'float32'}): "
          f"{r['model_official_img_s']:.0f} img/s", flush=True)
    return r


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.official_style_baseline",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--image-dir", required=True, help="folder of JPEGs to load")
    p.add_argument("--num-images", default=1024, type=int, help="JPEGs to use, the first by name (default: 1024)")
    p.add_argument("--image-size", default=448, type=int, help="input size S (default: 448)")
    p.add_argument("--batch-size", default=128, type=int, help="batch size (default: 128)")
    p.add_argument("--workers", default=16, type=int, help="DataLoader workers (default: 16)")
    p.add_argument("--steps", default=20, type=int, help="timed training steps (default: 20)")
    p.add_argument("--warmup", default=5, type=int, help="untimed steps before them (default: 5)")
    p.add_argument("--model-name", default="resnet50", type=check_model_name,
                   help="timm model name (default: resnet50)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cuda, cpu, cuda:1, ... (default: cuda if present)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    for flag in ("num_images", "image_size", "batch_size", "steps"):
        if getattr(args, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive")
    if args.workers < 0 or args.warmup < 0:
        p.error("--workers and --warmup must be >= 0")
    if not Path(args.image_dir).is_dir():
        p.error(f"--image-dir {args.image_dir}: no such folder")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with report_user_errors():  # too few images for a batch: one line, exit status 2
        r = run(args)
    line = json.dumps(r)
    print(line, flush=True)
    if args.json:
        atomic_write_text(args.json, line + "\n")
    return r


if __name__ == "__main__":
    main()
