"""The flags of train.py and train_nus.py beyond their data flags, with the official names and defaults, and the
checks that need more than one flag. ``FLAG_ROLES`` says, for every flag of both scripts (their data flags too),
whether a resume may change it; ``RUN_DEFINING`` names the flags that make a run what it is. This module loads
no torch or timm: the scripts parse their flags first; ``check_args``, called after parsing, imports what its
checks need.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
from pathlib import Path
from typing import Any

from src.cli import check_after_parse, model_name_arg, pretrained_arg
from src.loss_names import LOSS_NAMES, canonical_loss_name, loss_hyperparameters

__all__ = ["OFFICIAL_STOP_EPOCH", "LOSS_FLAGS", "FLAG_ROLES", "RUN_DEFINING", "RUN_DEFINING_BEFORE",
           "PRETRAINED_SHA256", "FLAG_TABLE_START", "FLAG_TABLE_END", "add_training_args", "changed_run_flags",
           "check_args", "flag_name", "flag_table", "loss_kwargs", "resolve_stop_epoch"]

# Loss hyperparameter flags: flag dest -> keyword of the loss constructors. They default to None so that
# only what the user sets reaches build_loss; the loss signatures hold the defaults (one place).
LOSS_FLAGS = {"lamb": "lamb", "margin": "margin", "gamma": "gamma", "tau": "tau",
              "change_epoch": "change_epoch", "eps": "eps", "expected_positives": "expected_positives",
              "delta": "delta"}


OFFICIAL_STOP_EPOCH = 30  # the official code stops after epoch index 30 of its 80-epoch schedule

# What a resume may do with each flag of train.py and train_nus.py: the one place for it. RUN_DEFINING, the resume
# checks (``changed_run_flags``) and the table in docs/training.md (``flag_table``) come from it.
RUN = "run-defining"  # a resume with another value is refused, naming the flag
DATA = "checked by content"  # the data it names is fingerprinted; a moved copy resumes, other data is refused
FREE = "may change"  # changes neither the trajectory nor the record
FLAG_ROLES: dict[str, tuple[str, str]] = {
    "dataset": (DATA, "train.py's training list: its images, their order and labels are fingerprinted"),
    "train_dataset": (DATA, "train_nus.py's training list: fingerprinted as train.py's"),
    "val_dataset": (DATA, "train_nus.py's test list: fingerprinted (the best epoch is picked on it)"),
    "data": (DATA, "the image folder; the training list and the test set are fingerprinted"),
    "classes": (DATA, "train_nus.py's class names: the names and their count are checked"),
    "num_classes": (DATA, "the class count is checked"),
    "model_name": (RUN, "the network"),
    "lr": (RUN, "the OneCycle schedule's peak"),
    "loss": (RUN, "the loss"),
    **{dest: (RUN, "a loss hyperparameter") for dest in LOSS_FLAGS},
    "epochs": (RUN, "the length of the OneCycle schedule"),
    "batch_size": (RUN, "the batches and the steps per epoch"),
    "image_size": (RUN, "the input"),
    "seed": (RUN, "initialisation, data order and augmentation"),
    "weight_decay": (RUN, "the optimizer"),
    "ema_decay": (RUN, "the EMA model"),
    "pretrained": (RUN, "the starting weights: the value, and for a file its sha256 (another file at the same "
                        "path is refused)"),
    "freeze_backbone": (RUN, "what trains"),
    "max_steps_per_epoch": (RUN, "the steps per epoch, and so the OneCycle schedule"),
    "amp": (RUN, "the precision of every step and the GradScaler state (auto: bf16 or fp16 on a GPU, off on "
                 "the CPU, so --device can change it)"),
    "gpu_pipeline": (RUN, "where images are decoded and augmented: the two pipelines draw different "
                          "augmentations (auto: on with CUDA, so --device can change it)"),
    "val_split": (RUN, "which images train and which choose the best epoch"),
    "split_seed": (RUN, "which images are held out"),
    "val_split_labels": (RUN, "the labels the held-out split is scored with, and so best.ckpt"),
    "thre": (RUN, "the threshold of every metrics row's CP, CR, CF1, OP, OR, OF1"),
    "oracle_list": (RUN, "every row's missing-label figures, and EPR's expected positives"),
    "oracle_threshold": (RUN, "every row's missing-label figures"),
    "stop_epoch": (FREE, "where training stops: a larger value continues a finished run"),
    "workers": (FREE, "an epoch's augmentation depends on (seed, epoch, sample) only"),
    "print_freq": (FREE, "how often a step line is printed and the loss checked"),
    "device": (FREE, "where the run goes on (the last bits of the numbers may differ between devices)"),
    "compile": (FREE, "the same computation compiled (the last bits may differ)"),
    "check_images": (FREE, "a check before training"),
    "skip_bad_images": (FREE, "without it a bad image stops the run; with it, later epochs leave it out (counted "
                              "in skipped_images)"),
    "allow_small_data": (FREE, "a permission: --batch-size is run-defining"),
    "output": (FREE, "the run folder"),
    "resume": (FREE, "the checkpoint to continue"),
}
RUN_DEFINING = tuple(dest for dest, (role, _) in FLAG_ROLES.items() if role == RUN)
# The value of a run-defining flag that a run written before the flag existed had.
RUN_DEFINING_BEFORE = {"freeze_backbone": False, "val_split_labels": "observed"}
# Recorded beside the flags (in args.json and last.ckpt's args): the sha256 of a --pretrained file.
PRETRAINED_SHA256 = "pretrained_sha256"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


# docs/training.md shows flag_table() between these two lines.
FLAG_TABLE_START = "<!-- the table of src.training_flags.flag_table(): edit FLAG_ROLES, not here -->"
FLAG_TABLE_END = "<!-- end of the flag table -->"


def flag_table() -> str:
    """The Markdown table of FLAG_ROLES that docs/training.md shows (tests/test_docs.py keeps them equal)."""
    lines = ["| flag | on resume | what it sets |", "| --- | --- | --- |"]
    lines += [f"| `{flag_name(dest)}` | {role} | {why} |" for dest, (role, why) in FLAG_ROLES.items()]
    return "\n".join(lines) + "\n"


def changed_run_flags(saved: dict, args: argparse.Namespace) -> list[str]:
    """The run-defining flags of ``args`` that differ from ``saved`` (the flags a run recorded), each as
    '--flag OLD -> NEW'; a flag the run did not record counts as its RUN_DEFINING_BEFORE value, else is not
    checked. --pretrained also when its file's sha256 differs from the recorded one."""
    changed = [f"{flag_name(k)} {saved.get(k)} -> {getattr(args, k)}" for k in RUN_DEFINING
               if (k in saved or k in RUN_DEFINING_BEFORE)
               and saved.get(k, RUN_DEFINING_BEFORE.get(k)) != getattr(args, k)]
    before, now = saved.get(PRETRAINED_SHA256), getattr(args, PRETRAINED_SHA256, None)
    if before is not None and before != now and saved.get("pretrained") == args.pretrained:
        changed.append(f"--pretrained {args.pretrained}: another file at that path (sha256 {before[:12]}... -> "
                       f"{str(now)[:12]}...)")
    return changed


def record_pretrained_sha256(args: argparse.Namespace) -> None:
    """Set args.pretrained_sha256: the sha256 of the --pretrained file, None for imagenet or none."""
    path = Path(args.pretrained)
    setattr(args, PRETRAINED_SHA256, _file_sha256(path) if args.pretrained not in ("imagenet", "none") else None)


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
    o.add_argument("--val-split-labels", default="observed", choices=["observed", "full"],
                   help="labels the held-out split is scored with, and best.ckpt picked on: the training list's "
                        "(observed, default) or the full ones, from --oracle-list (full: as Cole et al. and Large "
                        "Loss Matters score theirs); with --oracle-list every epoch logs both")
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
    from src.models import check_model_name
    from src.pretrained import PretrainedUnavailable, locate_imagenet_weights
    check_after_parse(parser, args, "model_name", check_model_name)
    if args.epochs <= 0:
        parser.error(f"--epochs {args.epochs} must be positive")
    resolve_stop_epoch(args)
    if not 0 <= args.stop_epoch < args.epochs:
        parser.error(f"--stop-epoch {args.stop_epoch} must lie in [0, --epochs {args.epochs})")
    if not 0.0 <= args.val_split < 1.0:
        parser.error(f"--val-split {args.val_split} must lie in [0, 1)")
    if args.val_split_labels == "full" and not (args.val_split and args.oracle_list):
        parser.error("--val-split-labels full scores the held-out split (--val-split) with the full labels of "
                     "--oracle-list FULL.txt: give both")
    for flag in ("batch_size", "image_size", "print_freq"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    if args.max_steps_per_epoch is not None and args.max_steps_per_epoch <= 0:
        parser.error("--max-steps-per-epoch must be positive")
    record_pretrained_sha256(args)
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
