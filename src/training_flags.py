"""The flags of train.py and train_nus.py beyond their data flags, with the official names and defaults, and the
checks that need more than one flag. ``RUN_DEFINING`` names the flags that make a run what it is: a resume must
not change them. This module loads no torch or timm: the scripts parse their flags first; ``check_args``, called
after parsing, imports what its checks need.
"""
from __future__ import annotations

import argparse
import difflib
from typing import Any

from src.cli import check_after_parse, model_name_arg, pretrained_arg
from src.loss_names import LOSS_NAMES, canonical_loss_name, loss_hyperparameters

__all__ = ["OFFICIAL_STOP_EPOCH", "LOSS_FLAGS", "RUN_DEFINING", "RUN_DEFINING_BEFORE", "add_training_args",
           "check_args", "loss_kwargs", "resolve_stop_epoch"]

# Loss hyperparameter flags: flag dest -> keyword of the loss constructors. They default to None so that
# only what the user sets reaches build_loss; the loss signatures hold the defaults (one place).
LOSS_FLAGS = {"lamb": "lamb", "margin": "margin", "gamma": "gamma", "tau": "tau",
              "change_epoch": "change_epoch", "eps": "eps", "expected_positives": "expected_positives",
              "delta": "delta"}


OFFICIAL_STOP_EPOCH = 30  # the official code stops after epoch index 30 of its 80-epoch schedule

# Flags that define a run: a resume with different values would not continue the same run.
RUN_DEFINING = ("model_name", "loss", "lr", "epochs", "batch_size", "image_size", "seed", "weight_decay",
                "ema_decay", "val_split", "split_seed", "freeze_backbone") + tuple(LOSS_FLAGS)
# The value of a run-defining flag that a run written before the flag existed had.
RUN_DEFINING_BEFORE = {"freeze_backbone": False}


def add_training_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags shared by train.py and train_nus.py (official names and defaults first)."""
    p = parser
    p.add_argument("--lr", default=1e-4, type=float, help="max learning rate of OneCycle (default: 1e-4)")
    p.add_argument("--model-name", default="resnet50", type=model_name_arg,
                   help="any timm model name: resnet50, resnet101, tresnet_m, tresnet_l, ... (default: resnet50)")
    p.add_argument("--num-classes", default=None, type=int,
                   help="class count: train.py takes it from the data and only checks it; train_nus.py uses it "
                        "when --classes is not given (official default 80 / 81)")
    p.add_argument("-j", "--workers", default=16, type=int, metavar="N",
                   help="data loading workers per process (default: 16; capped at the CPU count)")
    p.add_argument("--image-size", default=448, type=int, metavar="N", help="input size (default: 448)")
    p.add_argument("--thre", default=0.5, type=float, metavar="N",
                   help="threshold for CP/CR/CF1/OP/OR/OF1 (default: 0.5)")
    p.add_argument("-b", "--batch-size", default=128, type=int, metavar="N",
                   help="global batch size; each of W torchrun processes takes batch-size / W (default: 128)")
    p.add_argument("--print-freq", "-p", default=64, type=int, metavar="N",
                   help="print a step line (and check the loss is finite) every N steps, and off a terminal at "
                        "least every 30 s (default: 64)")
    p.add_argument("--loss", default="Hill", type=_loss_name, choices=LOSS_NAMES,
                   help="loss function (default: Hill; case-insensitive)")
    g = p.add_argument_group("loss hyperparameters (unset: the loss's own default, which is the official one)")
    for dest, kw in LOSS_FLAGS.items():
        owners = [n for n in LOSS_NAMES if kw in loss_hyperparameters(n)]
        defaults = ", ".join(f"{n} {loss_hyperparameters(n)[kw]}" for n in owners)
        g.add_argument("--" + dest.replace("_", "-"), dest=dest, type=float if dest != "change_epoch" else int,
                       default=None, help=f"default: {defaults}")
    _add_recipe_args(p.add_argument_group("schedule and recipe"))
    _add_output_args(p.add_argument_group("data checks, evaluation and outputs"))
    return p


def _add_recipe_args(s) -> None:
    s.add_argument("--epochs", default=80, type=int, help="length of the OneCycle schedule (default: 80)")
    s.add_argument("--stop-epoch", default=None, type=int,
                   help=f"last 0-based epoch trained; the official code trains epochs 0..{OFFICIAL_STOP_EPOCH} "
                        f"(default: {OFFICIAL_STOP_EPOCH}, or the whole schedule, --epochs - 1, when --epochs is "
                        f"{OFFICIAL_STOP_EPOCH} or less)")
    s.add_argument("--weight-decay", default=1e-4, type=float, help="on weights, not biases/1-D (default: 1e-4)")
    s.add_argument("--ema-decay", default=0.9997, type=float, help="EMA decay per step (default: 0.9997)")
    s.add_argument("--pretrained", default="imagenet", type=pretrained_arg, metavar="imagenet|none|PATH",
                   help="starting weights: imagenet = the paper's ImageNet weights through timm (downloaded once "
                        "into the Hugging Face cache), none = random, or a torchvision/timm/ASL weights file; "
                        "the head is always re-initialised (default: imagenet; see docs/pretrained.md)")
    s.add_argument("--freeze-backbone", action="store_true",
                   help="train only the classifier, on backbone features computed once without augmentation "
                        "(the linear protocol; the backbone's weights and BatchNorm statistics stay as loaded)")
    s.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision; auto = bf16 on GPUs that support it, else fp16; off on the CPU")
    s.add_argument("--device", default="auto", help="cuda, cpu, cuda:1, ... (default: cuda if present)")
    s.add_argument("--seed", default=0, type=int, help="seed of data order, augmentation and init (default: 0)")
    s.add_argument("--compile", action="store_true", help="torch.compile the model")
    s.add_argument("--gpu-pipeline", default="auto", choices=["auto", "on", "off"],
                   help="decode (nvjpeg), resize and augment batches on the device; workers only read file "
                        "bytes (auto: on when training on CUDA)")


def _add_output_args(o) -> None:
    o.add_argument("--val-split", default=0.0, type=float,
                   help="hold out this fraction of the training list to choose the best epoch on; the test "
                        "set is then scored once, with the best checkpoint (default: 0 = official: choose on test)")
    o.add_argument("--split-seed", default=0, type=int, help="seed of the held-out split (default: 0)")
    o.add_argument("--check-images", action="store_true", help="check every image file exists before training")
    o.add_argument("--skip-bad-images", action="store_true",
                   help="log and leave out corrupt images (counted per epoch) instead of stopping")
    o.add_argument("--allow-small-data", action="store_true",
                   help="accept a --batch-size larger than the training set (each epoch is then one step)")
    o.add_argument("--oracle-list", default=None, metavar="FULL.txt",
                   help="full-label list of the training images: log how well the model finds missing labels")
    o.add_argument("--oracle-threshold", default=None, type=float,
                   help="probability above which a missing label counts as found (default: SPLC's tau, else 0.5)")
    o.add_argument("--output", default=None, metavar="DIR",
                   help="run folder for metrics.jsonl, last.ckpt, best.ckpt (default: runs/<loss>-<model>-<list>)")
    o.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="continue from a last.ckpt; 'auto' takes OUTPUT/last.ckpt if present")
    o.add_argument("--max-steps-per-epoch", default=None, type=int, metavar="N",
                   help="end every epoch after N training steps (quick checks and the toy demo; default: all)")


def _loss_name(name: str) -> str:
    """The canonical spelling of a --loss name; an unknown one is an argparse error with the close matches."""
    try:
        return canonical_loss_name(name)
    except ValueError:
        by_lower = {n.lower(): n for n in LOSS_NAMES}
        close = [by_lower[c] for c in difflib.get_close_matches(name.strip().lower(), by_lower, n=3, cutoff=0.5)]
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise argparse.ArgumentTypeError(f"unknown loss {name!r}; {hint}known losses: {', '.join(LOSS_NAMES)}") \
            from None


def resolve_stop_epoch(args: argparse.Namespace) -> None:
    """--stop-epoch unset: the official 30 when the schedule is longer, else the schedule's last epoch."""
    if args.stop_epoch is None:
        args.stop_epoch = min(OFFICIAL_STOP_EPOCH, args.epochs - 1)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks that need more than one flag, or torch and timm; each failure is an argparse error naming the
    flags."""
    from src.loss_functions.losses import build_loss  # here: the flags are parsed before torch loads
    from src.models import PretrainedUnavailable, check_model_name, locate_imagenet_weights
    check_after_parse(parser, args, "model_name", check_model_name)
    if args.epochs <= 0:
        parser.error(f"--epochs {args.epochs} must be positive")
    resolve_stop_epoch(args)
    if not 0 <= args.stop_epoch < args.epochs:
        parser.error(f"--stop-epoch {args.stop_epoch} must lie in [0, --epochs {args.epochs})")
    if not 0.0 <= args.val_split < 1.0:
        parser.error(f"--val-split {args.val_split} must lie in [0, 1)")
    for flag in ("batch_size", "image_size", "print_freq"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    if args.max_steps_per_epoch is not None and args.max_steps_per_epoch <= 0:
        parser.error("--max-steps-per-epoch must be positive")
    if args.pretrained == "imagenet" and args.resume is None:  # offline and not cached: say so before any work
        try:
            locate_imagenet_weights(args.model_name, args.image_size)
        except PretrainedUnavailable as e:
            parser.exit(2, f"{e}\n")
    try:
        build_loss(args.loss, **loss_kwargs(args))
    except (ValueError, TypeError) as e:
        parser.error(f"--loss {args.loss}: {e}")


def loss_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The loss hyperparameters the user set, keyed as the loss constructors name them."""
    return {kw: getattr(args, dest) for dest, kw in LOSS_FLAGS.items() if getattr(args, dest) is not None}
