"""A run's metrics.jsonl: the one module that writes and reads the format.

RUN_DIR/metrics.jsonl holds one JSON object per line, one line per finished epoch, in epoch order (train.py
appends a line after each epoch's evaluation, and rewrites the file with the rows kept when it resumes). Every
row holds

    epoch      the epoch index, 0-based (as --stop-epoch counts)
    map        the model's mAP on the evaluation set, in percent
    map_ema    the EMA model's mAP on the same set

and, as the trainer produces them, the training figures (train_loss, lr, train_seconds, images_per_second,
skipped_images, seconds), the evaluation's (selected, cp, cr, cf1, op, or, of1, eval_skipped_images,
score_spread), the missing-label figures of an --oracle-list run (missing_precision, missing_recall,
missing_count, missing_auroc, missing_topk_precision; NaN where undefined, which json writes and reads back)
and ``diverged`` (the reason) on the epoch that stopped a diverging run. Readers take what a row holds: older
runs lack the newer keys. RUN_DIR/args.json (train.py's flags) sits beside it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from src.errors import UserError
from src.io_utils import WriteError, atomic_write_text

__all__ = ["METRICS_FILE", "REQUIRED_KEYS", "MISSING_KEYS", "RANKING_KEYS", "MetricsError", "RunMetrics",
           "append_row", "write_rows", "rows_text", "recorded_epochs", "read_run"]

METRICS_FILE = "metrics.jsonl"
REQUIRED_KEYS = ("epoch", "map", "map_ema")
MISSING_KEYS = ("missing_precision", "missing_recall")
RANKING_KEYS = ("missing_auroc", "missing_topk_precision")


def _line(row: dict) -> str:
    return json.dumps(row) + "\n"


def append_row(run_dir: Path, row: dict) -> None:
    """Append one epoch's row to RUN_DIR/metrics.jsonl and fsync it; WriteError naming the file if that fails."""
    path = Path(run_dir) / METRICS_FILE
    try:
        with open(path, "a") as f:
            f.write(_line(row))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise WriteError(f"cannot append to {path}: {e.strerror or e}") from e


def write_rows(run_dir: Path, rows: Sequence[dict]) -> None:
    """Replace RUN_DIR/metrics.jsonl with ``rows``, atomically (a resume keeps the rows of its checkpoint)."""
    atomic_write_text(Path(run_dir) / METRICS_FILE, rows_text(rows))


def rows_text(rows: Sequence[dict]) -> str:
    """The text of a metrics.jsonl holding ``rows``."""
    return "".join(_line(r) for r in rows)


def recorded_epochs(run_dir: Path) -> tuple[list[int], int]:
    """(the epochs of RUN_DIR/metrics.jsonl's readable rows, how many lines are not a readable row: a line torn
    by a kill in mid-append); ([], 0) when the file is absent. For a resume that cuts the record back."""
    path = Path(run_dir) / METRICS_FILE
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return [], 0
    epochs, torn = [], 0
    for line in filter(str.strip, lines):
        try:
            epochs.append(int(json.loads(line)["epoch"]))
        except (ValueError, TypeError, KeyError):
            torn += 1
    return epochs, torn


class MetricsError(UserError, ValueError):
    """A run folder without a readable metrics.jsonl; the message names the folder (and the line)."""


@dataclass
class RunMetrics:
    """One run's epoch rows and the args it was trained with ({} when RUN_DIR/args.json is absent)."""
    path: Path
    rows: list[dict]
    args: dict = field(default_factory=dict)

    def column(self, key: str) -> list[float]:
        """Values of ``key`` per epoch (NaN where a row lacks it or holds null)."""
        out = []
        for r in self.rows:
            v = r.get(key)
            out.append(float(v) if isinstance(v, (int, float)) else math.nan)
        return out

    @property
    def epochs(self) -> list[int]:
        return [int(r["epoch"]) for r in self.rows]

    @property
    def best_map(self) -> list[float]:
        """max(model mAP, EMA mAP) per epoch (what train.py selects)."""
        return [max(a, b) for a, b in zip(self.column("map"), self.column("map_ema"))]

    @property
    def has_missing(self) -> bool:
        return self._has(MISSING_KEYS)

    @property
    def has_ranking(self) -> bool:
        """The run logged the threshold-free missing-label figures (runs before them did not)."""
        return self._has(RANKING_KEYS)

    def _has(self, keys: Sequence[str]) -> bool:
        return any(isinstance(r.get(k), (int, float)) for r in self.rows for k in keys)


def read_run(run_dir: str | os.PathLike) -> RunMetrics:
    """Read RUN_DIR/metrics.jsonl (and args.json if present); MetricsError naming the folder if unusable."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if not run_dir.is_dir():
        raise MetricsError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise MetricsError(f"{run_dir}: no metrics.jsonl (is it a train.py --output folder?)")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)  # train.py writes NaN for an undefined precision; json reads it back
        except ValueError as e:
            raise MetricsError(f"{path}:{lineno}: not a JSON row ({e})") from None
        if not isinstance(row, dict) or not all(k in row for k in REQUIRED_KEYS):
            raise MetricsError(f"{path}:{lineno}: a row needs 'epoch', 'map' and 'map_ema'")
        rows.append(row)
    if not rows:
        raise MetricsError(f"{run_dir}: metrics.jsonl has no epoch rows yet")
    args = {}
    args_path = run_dir / "args.json"
    if args_path.is_file():
        try:
            args = json.loads(args_path.read_text())
        except ValueError as e:
            raise MetricsError(f"{args_path}: not JSON ({e})") from None
    return RunMetrics(run_dir, rows, args)
