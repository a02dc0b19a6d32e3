"""Run a grid's runs several at a time, each in its own ``python -m src.experiments.reproduce`` process.

One toy run leaves a GPU mostly idle, so ``reproduce ... --jobs N`` hands its runs to this pool:

    python -m src.experiments.reproduce --strengths S1=48/2000/6,S2=64/4000/8,S3=96/4000/8 --jobs 10 \\
        --export results/strength [--stop-after 600]

Each child is the same command restricted to one run (``[--strengths NAME] --settings S --losses L --seeds K``).
Per image size, one run goes first and alone: it makes the toy data and pretraining of its strength (their
cache folders are named by the image size, so strengths of one size may share them), which the others then
find cached. Runs already complete in the export or in OUT_DIR are not started. The order puts the runs the
gap figure needs first (ASL, Hill and SPLC on 0.4left, and the full-label reference), then the singlelabel
ones, then the rest. Children's output goes to OUT_DIR/logs/<strength>-<run>.log; the pool prints one line
per start and end.
With --stop-after S no run starts after S seconds; those running finish.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from src.experiments.experiments import RunSpec

__all__ = ["PoolRun", "priority", "order_runs", "child_argv", "run_pool"]

GAP_CORE = {"Asl", "Hill", "SPLC"}


@dataclass
class PoolRun:
    """One planned run of one strength: its child process once started."""
    strength: str  # its name; "grid" for a grid without --strengths
    strength_text: str | None  # NAME=PX/IMAGES/EPOCHS[/MODEL], as --strengths takes it; None: no --strengths
    spec: RunSpec
    group: str  # runs of one group share cached data and pretraining: one of them goes first, alone
    proc: subprocess.Popen | None = field(default=None, repr=False)
    started: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.strength}/{self.spec.name}"


def priority(spec: RunSpec) -> int:
    """0: the gap figure's runs (ASL/Hill/SPLC on 0.4left, the full-label reference); 1: their singlelabel
    counterparts; 2: everything else."""
    if spec.setting == "full" or (spec.setting == "0.4left" and spec.loss in GAP_CORE):
        return 0
    return 1 if spec.loss in GAP_CORE else 2


def order_runs(runs: Sequence[PoolRun], strength_order: Sequence[str]) -> list[PoolRun]:
    """By priority, then seed, then strength (as given), keeping the grid's order within."""
    rank = {name: i for i, name in enumerate(strength_order)}
    return sorted(runs, key=lambda r: (priority(r.spec), r.spec.seed, rank[r.strength]))


def child_argv(base: Sequence[str], run: PoolRun) -> list[str]:
    """``base`` (reproduce's flags without --jobs/--stop-after) restricted to ``run``: later flags win."""
    loss = run.spec.loss
    strength = ["--strengths", run.strength_text] if run.strength_text else []
    return [*base, *strength, "--settings", run.spec.setting, "--losses", loss, "--full-losses", loss,
            "--seeds", str(run.spec.seed), "--no-report"]


def _start(run: PoolRun, base: Sequence[str], log_dir: Path, t0: float) -> None:
    log = log_dir / f"{run.strength}-{run.spec.name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as f:
        run.proc = subprocess.Popen([sys.executable, "-m", "src.experiments.reproduce", *child_argv(base, run)],
                                    stdout=f, stderr=subprocess.STDOUT, env=env)
    run.started = time.monotonic()
    print(f"[{run.started - t0:5.0f} s] start {run.label}  (log {log})", flush=True)


def run_pool(runs: Sequence[PoolRun], base: Sequence[str], jobs: int, log_dir: Path,
             stop_after: float | None = None) -> dict[str, list[str]]:
    """Run ``runs`` (already ordered) ``jobs`` at a time; return the labels that finished, failed, were skipped
    (their group's first run failed) or were not started (--stop-after)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    queue, running = list(runs), []
    opened: dict[str, str] = {}  # group -> "opening" | "ready" | "failed"
    result: dict[str, list[str]] = {"finished": [], "failed": [], "skipped": [], "not started": []}
    try:
        while queue or running:
            for run in [r for r in running if r.proc.poll() is not None]:
                running.remove(run)
                ok = run.proc.returncode == 0
                result["finished" if ok else "failed"].append(run.label)
                if opened.get(run.group) == "opening":
                    opened[run.group] = "ready" if ok else "failed"
                print(f"[{time.monotonic() - t0:5.0f} s] {'done  ' if ok else 'FAILED'} {run.label} "
                      f"({time.monotonic() - run.started:.0f} s, exit {run.proc.returncode})", flush=True)
            for run in [r for r in queue if opened.get(r.group) == "failed"]:
                queue.remove(run)
                result["skipped"].append(run.label)
            late = stop_after is not None and time.monotonic() - t0 >= stop_after
            while queue and len(running) < jobs and not late:
                run = next((r for r in queue if opened.get(r.group, "new") in ("new", "ready")), None)
                if run is None:
                    break
                queue.remove(run)
                opened.setdefault(run.group, "opening")
                _start(run, base, log_dir, t0)
                running.append(run)
            if late:
                result["not started"] += [r.label for r in queue]
                queue.clear()
            if running:
                time.sleep(0.5)
    finally:
        for run in running:
            if run.proc.poll() is None:
                run.proc.terminate()
    print(f"[{time.monotonic() - t0:5.0f} s] pool: " + ", ".join(f"{len(v)} {k}" for k, v in result.items()),
          flush=True)
    for label in result["failed"]:
        print(f"  failed: {label}", flush=True)
    return result
