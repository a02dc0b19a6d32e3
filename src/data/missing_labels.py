"""The paper's missing-label lists: dropping positives from a fully labelled list.

For an image with n labels the paper keeps, chosen uniformly at random without replacement, min(k(n), n) with

    0.75left:     k(n) = floor(n/2) + 1
    0.4left:      k(n) = floor(n/5) + 1
    singlelabel:  k(n) = 1

``bernoulli_keep(r)`` instead keeps each positive independently with probability r, at least one per image.
The command-line tool is ``python -m src.tools.make_missing_labels``; the toy generators (src/toy) use the same
functions, so their lists are made the paper's way.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from src.data.labels import LabelEntry, write_label_list
from src.data.shipped import refuse_shipped

__all__ = ["PAPER_SCHEMES", "drop_labels", "bernoulli_keep", "missing_label_lists", "list_paths", "write_lists",
           "write_missing_label_lists"]

# list key -> number of labels kept out of n (before min(., n))
PAPER_SCHEMES: dict[str, Callable[[int], int]] = {
    "0.75left": lambda n: n // 2 + 1,
    "0.4left": lambda n: n // 5 + 1,
    "singlelabel": lambda n: 1,
}


def drop_labels(
    entries: Sequence[LabelEntry], keep: Callable[[int], int], rng: np.random.Generator
) -> list[LabelEntry]:
    """Keep min(keep(n), n) of each entry's n labels, a uniform random subset (without replacement).

    The kept labels stay in their original order. ``keep`` is called once per entry, in order.
    """
    ns = [len(e.labels) for e in entries]
    ks_list = [keep(n) for n in ns]
    if any(k < 0 for k in ks_list):
        raise ValueError(f"keep(n) is negative: {min(ks_list)}")
    counts = np.array(ns, dtype=np.int64)
    ks = np.minimum(np.array(ks_list, dtype=np.int64), counts)
    # A uniform k-subset of n items = the k items with the smallest i.i.d. uniform keys.
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((rng.random(total), owner))  # by owner, then by key
    starts = np.cumsum(counts) - counts
    rank = np.arange(total) - np.repeat(starts, counts)  # rank of order[p] within its owner
    kept = np.zeros(total, dtype=bool)
    kept[order[rank < np.repeat(ks, counts)]] = True
    kept_iter = iter(kept.tolist())
    return [LabelEntry(e.name, tuple(i for i in e.labels if next(kept_iter))) for e in entries]


def bernoulli_keep(ratio: float, rng: np.random.Generator) -> Callable[[int], int]:
    """keep(n) ~ max(1, Binomial(n, ratio)): with drop_labels, each positive is kept independently
    with probability ratio, and an image left with none keeps one at random."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"keep ratio must be in (0, 1], got {ratio}")
    return lambda n: max(1, int(rng.binomial(n, ratio)))


def missing_label_lists(full: Sequence[LabelEntry], seed: int = 0) -> dict[str, list[LabelEntry]]:
    """{'full', '0.75left', '0.4left', 'singlelabel'} -> entries; each scheme draws from its own
    stream of numpy.random.SeedSequence(seed), so the lists do not depend on each other."""
    streams = np.random.SeedSequence(seed).spawn(len(PAPER_SCHEMES))
    lists = {"full": list(full)}
    for (key, keep), ss in zip(PAPER_SCHEMES.items(), streams):
        lists[key] = drop_labels(full, keep, np.random.default_rng(ss))
    return lists


def list_paths(keys: Iterable[str], out_dir: str | os.PathLike, prefix: str) -> dict[str, Path]:
    """{key: out_dir/{prefix}_train_{key}.txt}: where ``write_lists`` writes each list."""
    return {key: Path(out_dir) / f"{prefix}_train_{key}.txt" for key in keys}


def write_lists(lists: dict[str, Sequence[LabelEntry]], out_dir: str | os.PathLike, prefix: str) -> dict[str, Path]:
    """Write {out_dir}/{prefix}_train_{key}.txt for each list; refuse (before writing any) a shipped list."""
    paths = list_paths(lists, out_dir, prefix)
    refuse_shipped(paths.values())
    return {key: write_label_list(paths[key], e) for key, e in lists.items()}


def write_missing_label_lists(
    full: Sequence[LabelEntry], out_dir: str | os.PathLike, prefix: str = "coco", seed: int = 0
) -> dict[str, Path]:
    """Write {out_dir}/{prefix}_train_{full,0.75left,0.4left,singlelabel}.txt atomically; return the
    paths by key ('full', '0.75left', '0.4left', 'singlelabel')."""
    return write_lists(missing_label_lists(full, seed), out_dir, prefix)
