"""`make demo`: the paper's comparison on the toy COCO, end to end through train.py, in minutes on a CPU.

    python -m src.tools.demo [--losses BCE,Focal,Asl,Hill,SPLC] [--epochs N] [--train-images N]
        [--image-size N] [--max-steps-per-epoch N] [--out-dir runs/demo] [--pretrain-epochs N]

1. makes the toy COCO under data/ (once; cached by its manifest);
2. pretrains the backbone on the single-object toy ImageNet (once; cached under data/pretrain/), as the
   paper starts from ImageNet weights: a model that already knows the objects is what lets Hill and
   SPLC tell a missing label from a true negative early on;
3. fine-tunes with train.py on the 40%-left list, once per loss, plus BCE on the full list as the upper
   bound, with one recipe for all, logging with --oracle-list how well each finds the missing labels;
4. prints a table (best mAP; final-epoch CF1, OF1, missing-label precision and recall) and draws
   pics/demo_map.png and pics/demo_missing_labels.png.

A run whose folder already holds all its epochs is not trained again; an interrupted one is resumed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from src.data.labels import LabelEntry, write_label_list
from src.io_utils import atomic_write_text
from src.loss_functions.losses import canonical_loss_name
from src.tools.plot_metrics import RunMetrics, plot_runs, read_run

__all__ = ["Recipe", "RunSpec", "DEFAULT_LOSSES", "toy_coco_dir", "prepare_toy_coco", "pretrain",
           "train_run", "run_is_complete", "results_table", "main"]

DEFAULT_LOSSES = ("BCE", "Focal", "Asl", "Hill", "SPLC")
SETTING_TITLES = {"0.75left": "75% of the labels left", "0.4left": "40% of the labels left",
                  "singlelabel": "a single label left per image"}
TRAIN_IMAGES = 2000
PRETRAIN_EPOCHS = 4
NUM_TOY_CLASSES = 24


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

    def flags(self) -> list[str]:
        """train.py flags of the recipe (the whole OneCycle schedule is trained: stop at the last epoch)."""
        out = ["--model-name", self.model_name, "--image-size", str(self.image_size), "-b", str(self.batch_size),
               "-j", str(self.workers), "--epochs", str(self.epochs), "--stop-epoch", str(self.epochs - 1),
               "--lr", str(self.lr), "--ema-decay", str(self.ema_decay), "--device", self.device,
               "--print-freq", "1000"]
        if self.max_steps_per_epoch:
            out += ["--max-steps-per-epoch", str(self.max_steps_per_epoch)]
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
    from src.tools.make_toy_coco import make_toy_coco

    return make_toy_coco(toy_coco_dir(data_root, train, val, image_size), seed=seed, train=train, val=val,
                         image_size=image_size)


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
    """True when RUN_DIR/metrics.jsonl holds rows for epochs 0..epochs-1 and best.ckpt exists."""
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


def _train(argv: list[str], run_dir: Path, epochs: int, build_datasets=None) -> RunMetrics:
    """train.py (or run_training with ``build_datasets``) for ``argv``; skipped when complete, resumed when cut."""
    _check_same_run(run_dir, argv)
    if run_is_complete(run_dir, epochs):
        print(f"  cached: {run_dir} is complete", flush=True)
        return read_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "command.json", json.dumps(argv) + "\n")
    resume = ["--resume", "auto"] if (run_dir / "last.ckpt").exists() else []
    if build_datasets is None:
        try:
            import train  # the repository's train.py
        except ModuleNotFoundError as e:
            raise SystemExit("cannot import train.py: run from the repository root "
                             "(python -m src.tools.demo)") from e
        train.main(argv + resume)
    else:
        from src.trainer import add_training_args, run_training

        parser = add_training_args(argparse.ArgumentParser(prog="pretrain"))
        run_training(parser, parser.parse_args(argv + resume), build_datasets)
    return read_run(run_dir)


def train_run(spec: RunSpec, data: Path, out_dir: Path, recipe: Recipe, pretrained: Path | None,
              oracle: bool = True, lists_dir: Path | None = None) -> RunMetrics:
    """Fine-tune ``spec`` through train.py into OUT_DIR/<setting>-<loss>-s<seed>; return its metrics.

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
    return _train(argv, run_dir, recipe.epochs)


def pretrain(data_root: Path, recipe: Recipe, epochs: int, per_class: int = 200, seed: int = 0) -> Path:
    """Train the backbone on the toy ImageNet (single labels, BCE) once; return the cached best.ckpt.

    Same model, image size, batch, lr and EMA as ``recipe``; the folder name hashes every setting.
    """
    from src.tools.make_toy_coco import make_toy_imagenet

    root = make_toy_imagenet(data_root / f"toy_imagenet-{per_class}-{recipe.image_size}px", seed=seed,
                             n_per_class=per_class, val_per_class=max(2, per_class // 20),
                             image_size=recipe.image_size)
    train_list, val_list = toy_imagenet_lists(root)
    pre = replace(recipe, epochs=epochs)
    key = json.dumps({**asdict(pre), "per_class": per_class, "seed": seed}, sort_keys=True)
    run_dir = data_root / "pretrain" / f"{recipe.model_name}-{recipe.image_size}px-{epochs}ep-" \
                                       f"{hashlib.sha1(key.encode()).hexdigest()[:8]}"

    def build_datasets(args, train_tf, val_tf, raw: bool):
        from src.data.datasets import label_list_dataset
        from src.trainer import Datasets

        train = label_list_dataset(root / "train", train_list, NUM_TOY_CLASSES, transform=train_tf, raw=raw)
        test = label_list_dataset(root / "val", val_list, NUM_TOY_CLASSES, transform=val_tf, raw=raw)
        return Datasets(train=train, test=test, num_classes=NUM_TOY_CLASSES, train_list=str(train_list))

    argv = ["--loss", "BCE", "--seed", str(seed), "--output", str(run_dir), *pre.flags(), "--pretrained", "none"]
    _train(argv, run_dir, epochs, build_datasets)
    return run_dir / "best.ckpt"


# ----------------------------------------------------------------------------- report

def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def results_table(runs: Sequence[tuple[RunSpec, RunMetrics]]) -> str:
    """Markdown table: best mAP (model or EMA, any epoch) and the final epoch's mAP, CF1, OF1 and
    missing-label precision / recall (percent)."""
    head = ("| loss | labels | best mAP | final mAP | CF1 | OF1 | missing-label precision | missing-label recall |\n"
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    lines = []
    for spec, run in runs:
        last = run.rows[-1]
        lines.append(f"| {spec.loss} | {spec.setting} | {max(run.best_map):.2f} | {run.best_map[-1]:.2f} | "
                     f"{_fmt(last.get('cf1'))} | {_fmt(last.get('of1'))} | {_fmt(last.get('missing_precision'))} | "
                     f"{_fmt(last.get('missing_recall'))} |")
    return head + "\n".join(lines) + "\n"


def parse_losses(text: str) -> list[str]:
    """'bce,hill' -> ['BCE', 'Hill']; argparse error on an unknown name."""
    try:
        return [canonical_loss_name(n) for n in text.split(",") if n.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_size_args(p: argparse.ArgumentParser, defaults: Recipe = Recipe()) -> None:
    """Flags that size the experiment (shared with src.tools.reproduce)."""
    p.add_argument("--epochs", type=int, default=defaults.epochs, help=f"epochs per run (default: {defaults.epochs})")
    p.add_argument("--train-images", type=int, default=TRAIN_IMAGES,
                   help=f"toy COCO train images (default: {TRAIN_IMAGES})")
    p.add_argument("--val-images", type=int, default=1000, help="toy COCO val images (default: 1000)")
    p.add_argument("--image-size", type=int, default=defaults.image_size,
                   help=f"image side in pixels (default: {defaults.image_size})")
    p.add_argument("--model-name", default=defaults.model_name, help=f"timm model (default: {defaults.model_name})")
    p.add_argument("-b", "--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--ema-decay", type=float, default=defaults.ema_decay)
    p.add_argument("--max-steps-per-epoch", type=int, default=None, help="cut every epoch (quick checks)")
    p.add_argument("--pretrain-epochs", type=int, default=PRETRAIN_EPOCHS,
                   help=f"toy ImageNet pretraining epochs; 0 = from scratch (default: {PRETRAIN_EPOCHS})")
    p.add_argument("--pretrain-per-class", type=int, default=200, help="toy ImageNet images per class")
    p.add_argument("-j", "--workers", type=int, default=defaults.workers)
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if present)")
    p.add_argument("--data-root", type=Path, default=Path("data"), help="cache of generated data (default: data)")




def recipe_from_args(a: argparse.Namespace) -> Recipe:
    for flag in ("epochs", "train_images", "val_images", "batch_size", "workers"):
        if getattr(a, flag) < (0 if flag == "workers" else 1):
            raise SystemExit(f"--{flag.replace('_', '-')} must be positive, got {getattr(a, flag)}")
    if a.pretrain_epochs < 0:
        raise SystemExit(f"--pretrain-epochs must be >= 0, got {a.pretrain_epochs}")
    return Recipe(model_name=a.model_name, image_size=a.image_size, batch_size=a.batch_size, epochs=a.epochs,
                  lr=a.lr, ema_decay=a.ema_decay, workers=a.workers, max_steps_per_epoch=a.max_steps_per_epoch,
                  device=a.device)


def prepare(a: argparse.Namespace, recipe: Recipe) -> tuple[Path, Path | None]:
    """Toy COCO (and, unless --pretrain-epochs 0, the pretrained backbone) for a demo or grid."""
    data = prepare_toy_coco(a.data_root, a.train_images, a.val_images, a.image_size)
    pretrained = None
    if a.pretrain_epochs:
        print(f"== pretraining {recipe.model_name} on the toy ImageNet ({a.pretrain_epochs} epochs, cached)",
              flush=True)
        pretrained = pretrain(a.data_root, recipe, a.pretrain_epochs, per_class=a.pretrain_per_class)
    return data, pretrained


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m src.tools.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--losses", type=parse_losses, default=list(DEFAULT_LOSSES),
                   help=f"losses on the 40%%-left list (default: {','.join(DEFAULT_LOSSES)})")
    p.add_argument("--setting", default="0.4left", choices=["0.75left", "0.4left", "singlelabel"],
                   help="missing-label list the losses train on (default: 0.4left)")
    p.add_argument("--no-upper-bound", action="store_true", help="skip BCE on the full list")
    p.add_argument("--out-dir", type=Path, default=Path("runs/demo"), help="run folders (default: runs/demo)")
    p.add_argument("--pics", type=Path, default=Path("pics"), help="figure folder (default: pics)")
    add_size_args(p)
    a = p.parse_args(argv)
    start = time.perf_counter()
    recipe = recipe_from_args(a)
    data, pretrained = prepare(a, recipe)
    specs = [RunSpec(loss, a.setting) for loss in a.losses]
    if not a.no_upper_bound:
        specs.append(RunSpec("BCE", "full"))
    done = []
    for i, spec in enumerate(specs, 1):
        print(f"== run {i}/{len(specs)}: {spec.loss} on coco_train_{spec.setting}.txt "
              f"({'pretrained' if pretrained else 'from scratch'}, {recipe.epochs} epochs) "
              f"[{time.perf_counter() - start:.0f} s so far]", flush=True)
        done.append((spec, train_run(spec, data, a.out_dir, recipe, pretrained)))
    table = results_table(done)
    runs = [r for _, r in done]
    labels = [f"{s.loss} ({s.setting})" for s, _ in done]
    map_png = plot_runs(runs, a.pics / "demo_map.png", labels=labels, panels=("map",),
                        title=f"toy COCO, {SETTING_TITLES[a.setting]}\n(BCE on the full list: the upper bound)")
    missing = [(r, n) for (s, r), n in zip(done, labels) if r.has_missing]
    figures = [map_png]
    if missing:
        figures.append(plot_runs([r for r, _ in missing], a.pics / "demo_missing_labels.png",
                                 labels=[n for _, n in missing], panels=("missing",),
                                 title="how well each loss's model finds the labels missing from its list"))
    print(f"\n{table}\nfigures: {', '.join(map(str, figures))}\n"
          f"total {time.perf_counter() - start:.0f} s (runs in {a.out_dir}, data in {a.data_root})", flush=True)
    return table


if __name__ == "__main__":
    main()
