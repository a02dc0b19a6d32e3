"""The run planning of the toy experiments, shared by ``src.experiments.demo`` and ``src.experiments.reproduce``.

A ``Recipe`` (model, image size, batch, epochs, lr, EMA, ...) is shared by every run of a comparison; a
``RunSpec`` names one run (loss, training list, seed, extra flags). ``prepare`` makes the toy COCO and, once per
recipe, the backbone pretrained on the toy ImageNet (cached under --data-root); ``train_run`` fine-tunes one
``RunSpec`` with train.py's flags and builder (``src.data.builders``) through ``src.trainer.run_training`` into
OUT_DIR/<setting>-<loss>-s<seed>. A run whose folder already holds all its epochs is not trained again, an
interrupted one is resumed, and a folder made by another command line is refused. ``add_size_args`` and
``recipe_from_args`` are the command-line flags that size an experiment.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from src import cli
from src.data.builders import Datasets, add_coco_args, coco_datasets
from src.data.datasets import label_list_dataset
from src.data.labels import LabelEntry, write_label_list
from src.io_utils import atomic_write_text
from src.loss_functions.losses import canonical_loss_name
from src.run_metrics import RunMetrics, read_run
from src.toy.generate import ToyCoco, ToyImageNet, make_toy_coco, make_toy_imagenet
from src.toy.shapes import NUM_CLASSES as NUM_TOY_CLASSES
from src.trainer import run_training
from src.training_flags import add_training_args

__all__ = ["Recipe", "RunSpec", "toy_coco_dir", "prepare_toy_coco", "pretrain", "train_run", "run_is_complete",
           "parse_losses", "coco_parser", "add_size_args", "recipe_from_args", "prepare"]

TRAIN_IMAGES = 2000
PRETRAIN_EPOCHS = 4


@dataclass(frozen=True)
class Recipe:
    """The training recipe shared by every run of a comparison (only the loss and the list differ)."""
    model_name: str = "resnet10t"
    image_size: int = 48
    batch_size: int = 64
    epochs: int = 6
    lr: float = 1e-3
    ema_decay: float = 0.99
    workers: int = 2
    max_steps_per_epoch: int | None = None
    device: str = "auto"
    stop_epoch: int | None = None  # last 0-based epoch trained; None: the schedule's last (epochs - 1)
    freeze_backbone: bool = False

    @property
    def last_epoch(self) -> int:
        return self.epochs - 1 if self.stop_epoch is None else self.stop_epoch

    @property
    def epochs_run(self) -> int:
        """Epochs a run trains: 0..last_epoch (the OneCycle schedule is planned over ``epochs``)."""
        return self.last_epoch + 1

    def flags(self) -> list[str]:
        """train.py flags of the recipe."""
        out = ["--model-name", self.model_name, "--image-size", str(self.image_size), "-b", str(self.batch_size),
               "-j", str(self.workers), "--epochs", str(self.epochs), "--stop-epoch", str(self.last_epoch),
               "--lr", str(self.lr), "--ema-decay", str(self.ema_decay), "--device", self.device,
               "--print-freq", "1000"]
        if self.max_steps_per_epoch:
            out += ["--max-steps-per-epoch", str(self.max_steps_per_epoch)]
        if self.freeze_backbone:
            out.append("--freeze-backbone")
        return out


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run: a loss on a training list, with the recipe's flags plus ``extra``."""
    loss: str
    setting: str  # list key: full, 0.75left, 0.4left, singlelabel
    seed: int = 0
    extra: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.setting}-{self.loss}-s{self.seed}"


# ----------------------------------------------------------------------------- data

def toy_coco_dir(data_root: Path, train: int, val: int, image_size: int) -> Path:
    """data/toy_coco for the default size (4000/1000/64 px), else a folder named by the size."""
    if (train, val, image_size) == (4000, 1000, 64):
        return data_root / "toy_coco"
    return data_root / f"toy_coco-{train}-{val}-{image_size}px"


def prepare_toy_coco(data_root: Path, train: int, val: int, image_size: int, seed: int = 0) -> Path:
    return make_toy_coco(toy_coco_dir(data_root, train, val, image_size), ToyCoco(seed, train, val, image_size))


def toy_imagenet_lists(root: Path) -> tuple[Path, Path]:
    """Write ROOT/{train,val}.txt label lists (one label each) for the toy ImageNet's ImageFolder layout."""
    lists = []
    for split in ("train", "val"):
        entries = []
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            k = int(class_dir.name.split("_", 1)[0])
            entries += [LabelEntry(f"{class_dir.name}/{f.name}", (k,)) for f in sorted(class_dir.glob("*.jpg"))]
        if not entries:
            raise FileNotFoundError(f"{root / split}: no images (is {root} a toy ImageNet?)")
        lists.append(write_label_list(root / f"{split}.txt", entries))
    return lists[0], lists[1]


# ----------------------------------------------------------------------------- runs

def run_is_complete(run_dir: Path, epochs: int) -> bool:
    """True when RUN_DIR/metrics.jsonl holds rows for epochs 0..epochs-1 and best.ckpt exists. ``epochs``: the
    epochs the run trains (``Recipe.epochs_run``: --stop-epoch + 1), not the schedule's length."""
    try:
        rows = read_run(run_dir).rows
    except ValueError:
        return False
    return [r["epoch"] for r in rows] == list(range(epochs)) and (run_dir / "best.ckpt").is_file()


def _check_same_run(run_dir: Path, argv: list[str]) -> None:
    """A cached run folder must have been made by the same command line; else stop and say so."""
    saved = run_dir / "command.json"
    if saved.is_file() and not _same_command(json.loads(saved.read_text()), argv):
        raise SystemExit(f"{run_dir} holds a run made with other flags (see {saved}); "
                         f"pass another --out-dir or delete the folder")


def _same_command(saved: list[str], argv: list[str]) -> bool:
    """Equal, or ``saved`` predates --pretrained and ``argv`` only adds '--pretrained none' (the old default)."""
    if saved == argv:
        return True
    pairs = [i for i in range(len(argv) - 1) if argv[i:i + 2] == ["--pretrained", "none"]]
    return "--pretrained" not in saved and len(pairs) == 1 and argv[:pairs[0]] + argv[pairs[0] + 2:] == saved


def coco_parser() -> argparse.ArgumentParser:
    """train.py's flags: a run's command line is read as ``python train.py ...`` reads it."""
    return add_training_args(add_coco_args(cli.ArgumentParser(prog="train.py")))


def _train(argv: list[str], run_dir: Path, epochs: int, parser: argparse.ArgumentParser,
           build_datasets: Callable[..., Datasets]) -> RunMetrics:
    """``run_training`` for ``argv``, read by ``parser``; skipped when complete, resumed when cut short."""
    _check_same_run(run_dir, argv)
    if run_is_complete(run_dir, epochs):
        print(f"  cached: {run_dir} is complete", flush=True)
        return read_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "command.json", json.dumps(argv) + "\n")
    resume = ["--resume", "auto"] if (run_dir / "last.ckpt").exists() else []
    run_training(parser, parser.parse_args(argv + resume), build_datasets)
    return read_run(run_dir)


def train_run(spec: RunSpec, data: Path, out_dir: Path, recipe: Recipe, pretrained: Path | None,
              oracle: bool = True, lists_dir: Path | None = None) -> RunMetrics:
    """Fine-tune ``spec`` as train.py does into OUT_DIR/<setting>-<loss>-s<seed>; return its metrics.

    The training list is LISTS_DIR/coco_train_<setting>.txt (LISTS_DIR defaults to DATA); with ``oracle``,
    a missing-label setting logs against LISTS_DIR/coco_train_full.txt.
    """
    run_dir = out_dir / spec.name
    lists = lists_dir or data
    argv = ["--data", str(data), "--dataset", str(lists / f"coco_train_{spec.setting}.txt"), "--loss", spec.loss,
            "--seed", str(spec.seed), "--output", str(run_dir), *recipe.flags(), *spec.extra]
    argv += ["--pretrained", str(pretrained) if pretrained is not None else "none"]  # never download
    if oracle and spec.setting != "full":
        argv += ["--oracle-list", str(lists / "coco_train_full.txt")]
    return _train(argv, run_dir, recipe.epochs_run, coco_parser(), coco_datasets)


def pretrain(data_root: Path, recipe: Recipe, epochs: int, per_class: int = 200, seed: int = 0) -> Path:
    """Train the backbone on the toy ImageNet (single labels, BCE) once; return the cached best.ckpt.

    Same model, image size, batch, lr and EMA as ``recipe``, the whole schedule, every layer trained. ``seed``
    (--pretrain-seed) draws both the toy ImageNet's images and the pretraining run, so that two seeds give two
    independent pretrainings; each is cached under its own folders (the seed in their names when not 0, and in
    the hash of every setting that names the pretraining).
    """
    suffix = f"-seed{seed}" if seed else ""  # seed 0 keeps the folder names made before --pretrain-seed
    spec = ToyImageNet(seed, per_class, val_per_class=max(2, per_class // 20), image_size=recipe.image_size)
    root = make_toy_imagenet(data_root / f"toy_imagenet-{per_class}-{recipe.image_size}px{suffix}", spec)
    train_list, val_list = toy_imagenet_lists(root)
    pre = replace(recipe, epochs=epochs, stop_epoch=None, freeze_backbone=False)
    fields = {k: v for k, v in asdict(pre).items() if k not in ("stop_epoch", "freeze_backbone")}  # as before them
    key = json.dumps({**fields, "per_class": per_class, "seed": seed}, sort_keys=True)
    run_dir = data_root / "pretrain" / f"{recipe.model_name}-{recipe.image_size}px-{epochs}ep{suffix}-" \
                                       f"{hashlib.sha1(key.encode()).hexdigest()[:8]}"

    def build_datasets(args, train_tf, val_tf, raw: bool) -> Datasets:
        train = label_list_dataset(root / "train", train_list, NUM_TOY_CLASSES, transform=train_tf, raw=raw)
        test = label_list_dataset(root / "val", val_list, NUM_TOY_CLASSES, transform=val_tf, raw=raw)
        return Datasets(train=train, test=test, num_classes=NUM_TOY_CLASSES, train_list=str(train_list))

    argv = ["--loss", "BCE", "--seed", str(seed), "--output", str(run_dir), *pre.flags(), "--pretrained", "none"]
    _train(argv, run_dir, epochs, add_training_args(argparse.ArgumentParser(prog="pretrain")), build_datasets)
    return run_dir / "best.ckpt"


# ----------------------------------------------------------------------------- flags

def parse_losses(text: str) -> list[str]:
    """'bce,hill' -> ['BCE', 'Hill']; argparse error on an unknown name."""
    try:
        return [canonical_loss_name(n) for n in text.split(",") if n.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_size_args(p: argparse.ArgumentParser, defaults: Recipe = Recipe()) -> None:
    """Flags that size the experiment (those of the demo and of src.experiments.reproduce)."""
    p.add_argument("--epochs", type=int, default=defaults.epochs, help=f"epochs per run (default: {defaults.epochs})")
    p.add_argument("--train-images", type=int, default=TRAIN_IMAGES,
                   help=f"toy COCO train images (default: {TRAIN_IMAGES})")
    p.add_argument("--val-images", type=int, default=1000, help="toy COCO val images (default: 1000)")
    p.add_argument("--image-size", type=int, default=defaults.image_size,
                   help=f"image side in pixels (default: {defaults.image_size})")
    p.add_argument("--model-name", default=defaults.model_name, help=f"timm model (default: {defaults.model_name})")
    p.add_argument("-b", "--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--ema-decay", type=float, default=defaults.ema_decay, help="train.py's --ema-decay")
    p.add_argument("--stop-epoch", type=int, default=None,
                   help="last 0-based epoch each run trains, of a OneCycle schedule planned over --epochs "
                        "(the official recipe: --epochs 80 --stop-epoch 30; default: --epochs - 1)")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train.py's --freeze-backbone: only the classifier trains, on features computed once")
    p.add_argument("--max-steps-per-epoch", type=int, default=None, help="cut every epoch (quick checks)")
    p.add_argument("--pretrain-epochs", type=int, default=PRETRAIN_EPOCHS,
                   help=f"toy ImageNet pretraining epochs; 0 = from scratch (default: {PRETRAIN_EPOCHS})")
    p.add_argument("--pretrain-per-class", type=int, default=200, help="toy ImageNet images per class")
    p.add_argument("--pretrain-seed", type=int, default=0,
                   help="seed of the toy ImageNet images and of the pretraining run: another seed is an "
                        "independent pretraining, cached apart (default: 0)")
    p.add_argument("-j", "--workers", type=int, default=defaults.workers)
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if present)")
    p.add_argument("--data-root", type=Path, default=Path("data"), help="cache of generated data (default: data)")


def recipe_from_args(a: argparse.Namespace) -> Recipe:
    for flag in ("epochs", "train_images", "val_images", "batch_size", "workers"):
        if getattr(a, flag) < (0 if flag == "workers" else 1):
            raise SystemExit(f"--{flag.replace('_', '-')} must be positive, got {getattr(a, flag)}")
    if a.pretrain_epochs < 0:
        raise SystemExit(f"--pretrain-epochs must be >= 0, got {a.pretrain_epochs}")
    stop_epoch = getattr(a, "stop_epoch", None)
    if stop_epoch is not None and not 0 <= stop_epoch < a.epochs:
        raise SystemExit(f"--stop-epoch {stop_epoch} must lie in [0, --epochs {a.epochs})")
    return Recipe(model_name=a.model_name, image_size=a.image_size, batch_size=a.batch_size, epochs=a.epochs,
                  lr=a.lr, ema_decay=a.ema_decay, workers=a.workers, max_steps_per_epoch=a.max_steps_per_epoch,
                  device=a.device, stop_epoch=stop_epoch, freeze_backbone=getattr(a, "freeze_backbone", False))


def prepare(a: argparse.Namespace, recipe: Recipe) -> tuple[Path, Path | None]:
    """Toy COCO (and, unless --pretrain-epochs 0, the pretrained backbone) for a demo or grid."""
    data = prepare_toy_coco(a.data_root, a.train_images, a.val_images, a.image_size)
    pretrained = None
    if a.pretrain_epochs:
        print(f"== pretraining {recipe.model_name} on the toy ImageNet ({a.pretrain_epochs} epochs, cached)",
              flush=True)
        pretrained = pretrain(a.data_root, recipe, a.pretrain_epochs, per_class=a.pretrain_per_class,
                              seed=getattr(a, "pretrain_seed", 0))
    return data, pretrained
