"""The --loss names and each loss's hyperparameters with their defaults, without importing torch.

The command-line parsers are built before torch loads (so ``-h`` and a mistyped flag answer at once), yet
their --loss choices and the loss flags' help name every loss and default. The one place of those facts is
the registry of src/loss_functions/losses.py (``_BUILDERS`` and its builders' signatures); this module reads
them from that file's source with ``ast``, and tests/test_losses.py checks they equal what ``inspect`` sees.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

__all__ = ["LOSS_NAMES", "canonical_loss_name", "loss_hyperparameters"]

LOSSES_PY = Path(__file__).resolve().parent / "loss_functions" / "losses.py"


def _signature_defaults(node: ast.FunctionDef) -> dict[str, Any]:
    """{parameter: literal default} of a function definition, ``self`` left out."""
    args = [a.arg for a in node.args.args if a.arg != "self"]
    defaults = [ast.literal_eval(d) for d in node.args.defaults]
    return dict(zip(args[len(args) - len(defaults):], defaults))


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, dict[str, Any]]:
    """--loss name -> {hyperparameter: default}, in the registry's order."""
    tree = ast.parse(LOSSES_PY.read_text(encoding="utf-8"), str(LOSSES_PY))
    builders: dict[str, ast.FunctionDef] = {}
    registry: ast.Dict | None = None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            builders[node.name] = node
        elif isinstance(node, ast.ClassDef):
            init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
            if init is not None:
                builders[node.name] = init
        elif isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "_BUILDERS":
            registry = node.value
    if not isinstance(registry, ast.Dict):
        raise RuntimeError(f"{LOSSES_PY}: no _BUILDERS registry found")
    return {ast.literal_eval(k): _signature_defaults(builders[v.id]) for k, v in zip(registry.keys, registry.values)}


LOSS_NAMES: tuple[str, ...] = tuple(_registry())


def canonical_loss_name(name: str) -> str:
    """The canonical spelling of a --loss name, matched case-insensitively; ValueError if unknown."""
    if isinstance(name, str):
        for known in LOSS_NAMES:
            if known.lower() == name.strip().lower():
                return known
    raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSS_NAMES)}")


def loss_hyperparameters(name: str) -> dict[str, Any]:
    """{hyperparameter: default} that ``build_loss(name, ...)`` accepts."""
    return dict(_registry()[canonical_loss_name(name)])
