"""Command-line conventions shared by train.py, train_nus.py and validate.py.

The official code spells most multi-word flags with a dash (``--model-name``) but its README and train_nus.py
use underscores (``--model_path``, ``--train_dataset``). ``ArgumentParser`` accepts either spelling of every
long flag, so the official commands run unchanged; help shows one spelling per flag.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Sequence

__all__ = ["ArgumentParser", "other_spelling", "torchrun_hint"]

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
