"""Command-line conventions shared by train.py, train_nus.py and validate.py.

The official code spells most multi-word flags with a dash (``--model-name``) but its README and train_nus.py
use underscores (``--model_path``, ``--train_dataset``). ``ArgumentParser`` accepts either spelling of every
long flag, so the official commands run unchanged; help shows one spelling per flag.

This module imports only the standard library: every script builds its parser and parses its flags before
torch and timm load, so ``-h`` and a mistyped flag answer at once. Checks that need those libraries (is a model
name one of timm's?) run right after parsing, through ``check_after_parse``, and fail the same way.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["ArgumentParser", "OFFICIAL", "check_after_parse", "model_name_arg", "other_spelling", "pretrained_arg",
           "torchrun_hint"]

# The official code's model and input size: the defaults of a model file that does not name its own.
OFFICIAL = {"model_name": "resnet50", "image_size": 448}

SPELLING_NOTE = "Multi-word flags take either spelling: --model_path or --model-path."


def other_spelling(flag: str) -> str | None:
    """'--model-path' <-> '--model_path'; None for a flag with one word (or both separators)."""
    if not flag.startswith("--"):
        return None
    body = flag[2:]
    if ("-" in body) == ("_" in body):
        return None
    return "--" + (body.replace("-", "_") if "-" in body else body.replace("_", "-"))


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that reads each long flag in its dash or underscore spelling.

    Before parsing, a command-line word that is not a flag of the parser but whose other spelling is one
    (``--model_path`` for ``--model-path``, also as ``--model_path=X``) is read as that flag. Words after
    ``--`` are left alone. Flags added later, in argument groups too, are covered: the lookup happens at parse
    time.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("epilog", SPELLING_NOTE)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self._respell(args), namespace)

    def _respell(self, argv: list[str]) -> list[str]:
        known = {flag for action in self._actions for flag in action.option_strings}
        out = []
        for i, word in enumerate(argv):
            if word == "--":
                return out + argv[i:]
            flag, eq, value = word.partition("=")
            other = other_spelling(flag) if flag not in known else None
            out.append(other + eq + value if other in known else word)
        return out


def torchrun_hint(argv: Sequence[str], gpus: int) -> str:
    """The line telling a single-process run on a machine with ``gpus`` GPUs how to use them all."""
    command = shlex.join(["torchrun", "--standalone", f"--nproc_per_node={gpus}", *argv])
    return (f"note: {gpus} GPUs are visible but this run uses one (the official code used all of them through "
            f"DataParallel). To train on all {gpus}, run:\n    {command}")


def model_name_arg(name: str) -> str:
    """argparse ``type=`` of --model-name, before timm loads: the name lower-cased. Whether timm knows it is
    checked right after parsing (``check_after_parse`` with ``src.models.check_model_name``)."""
    return name.strip().lower()


def pretrained_arg(value: str) -> str:
    """argparse ``type=`` of --pretrained: 'imagenet', 'none' (any case) or the path of an existing file."""
    if value.lower() in ("imagenet", "none"):
        return value.lower()
    if not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file (expected imagenet, none or a weights file)")
    return value


def check_after_parse(parser: argparse.ArgumentParser, args: argparse.Namespace, dest: str,
                      check: Callable[[str], str]) -> None:
    """Apply the argparse type ``check`` to ``args.<dest>`` (when set) after parsing, as argparse would have:
    the value is replaced by what ``check`` returns; an ArgumentTypeError is a usage error naming the flag."""
    value = getattr(args, dest)
    if value is None:
        return
    try:
        setattr(args, dest, check(value))
    except argparse.ArgumentTypeError as e:
        parser.error(f"argument --{dest.replace('_', '-')}: {e}")
