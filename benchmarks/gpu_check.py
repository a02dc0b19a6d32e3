"""One prepared GPU check: train.py end to end on CUDA, the throughput benchmark and the official-style baseline in
one run, one table with the targets beside the measured values, exit status 1 if any step fails.

    make gpu-check OUT=DIR              # on a GPU machine: 448 px, resnet50, batch 128 (a 460 s budget)
    make gpu-check DEVICE=cpu OUT=DIR   # the CPU rehearsal: the same steps at toy size (tests/test_gpu_check.py)
    python -m benchmarks.gpu_check --device cuda --out DIR --wheels .carry

Steps, each in its own process with a time limit; a failure is recorded and the next step still runs:
  setup         pycocotools (train.py, validate.py) from --wheels (default .carry, filled by `make gpu-carry`)
                into the scratch folder, where python cannot import it (the GPU machines lack it)
  data          the benchmark's synthetic COCO-sized JPEGs in the COCO 2014 layout (train2014/, val2014/,
                annotations/instances_val2014.json with 80 categories, a training label list; random labels)
  sync          (CUDA) GpuTrainPreprocess's augmentation and the Prefetcher's handover under
                torch.cuda.set_sync_debug_mode("error"): no host sync; a CUDA-generator augmentation must trip it
  decode        the input pipeline's decoder (nvjpeg on CUDA) on a JPEG cut short and closed with FF D9, which
                passes the header check: an error naming the file, or pixels and how far they are from the intact file
  train         train.py with its default flags plus --pretrained none, --max-steps-per-epoch, --stop-epoch 2:
                killed with SIGKILL once epoch 1 is written, resumed with --resume auto for epoch 2, then
                validate.py on best.ckpt must give the run's best mAP
  bench         bench_throughput: (a), (a) without the overlap, (b), data alone, eval
  baseline      benchmarks.official_style_baseline on the data step's images: its CPU pipeline's loader rate and
                its step's rate, and the step's peak GPU memory
  bench-compile, train-compile: bench (a), (b) and the train step under --compile
On the CPU (the rehearsal) images, model, batch and step counts are toy-sized, --compile is skipped (inductor's C++
build takes minutes on a small CPU) and so is the sync step (CUDA only); the baseline's step runs in float32; the
figures there say nothing about speed.

OUT receives table.md, table.json (the table, every step's status and the raw figures) and gpu_check.log (every
step's output); runs and images go to a scratch folder (--work-dir, removed at the end unless given). The 460 s
budget is meant to fit 8 minutes on one H100; on one H200 the whole check took 346 s (docs/performance.md).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from benchmarks.bench_throughput import make_images, random_entries
from src.data.augment import BatchAugment
from src.data.gpu_pipeline import (AUGMENT_FORM_BY_DEVICE, AUGMENT_FORMS, GpuTrainPreprocess, decode_images,
                                   decode_resize)
from src.data.labels import LabelEntry, write_label_list
from src.data.prefetch import Prefetcher

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 80
WHEEL_MODULES = ("pycocotools",)  # import names = wheel names here
CARRY_DIR = ".carry"  # what `make gpu-carry` fills: the wheels a GPU machine lacks
TARGETS = {"a_over_b": 0.95, "a_over_baseline": 1.5, "a_over_baseline_compiled": 2.2, "eval_s_h200": 25.0}
H100_EVAL_ALLOWANCE = 1.1  # an assumption, not a measurement: see docs/performance.md


@dataclass(frozen=True)
class Size:
    """Everything that differs between the GPU run and the CPU rehearsal."""
    image_size: int
    batch: int
    model: str
    workers: int
    train_images: int
    val_images: int
    steps_per_epoch: int
    bench_steps: int
    bench_warmup: int
    baseline_images: int
    baseline_steps: int
    image_scale: float  # of the synthetic JPEGs' COCO sizes
    compile: bool
    budget_s: int  # the whole check
    map_tolerance: float  # validate.py's mAP against the run's best, in mAP points


FULL = Size(image_size=448, batch=128, model="resnet50", workers=16, train_images=1024, val_images=512,
            steps_per_epoch=8, bench_steps=64, bench_warmup=3, baseline_images=1024, baseline_steps=20,
            image_scale=1.0, compile=True, budget_s=460, map_tolerance=0.1)
TOY = Size(image_size=32, batch=4, model="resnet10t", workers=1, train_images=16, val_images=8, steps_per_epoch=1,
           bench_steps=2, bench_warmup=1, baseline_images=8, baseline_steps=2, image_scale=0.1, compile=False,
           budget_s=300, map_tolerance=1e-4)


@dataclass
class StepResult:
    name: str
    status: str = "not run"  # ok | FAIL | skipped
    seconds: float = 0.0
    detail: str = ""


class CheckError(RuntimeError):
    """A step failed; the message says why, ``data`` holds what it measured before failing."""

    def __init__(self, message: str, data: dict | None = None):
        super().__init__(message)
        self.data = data


# ------------------------------------------------------------------------------------------------------ processes

class Runner:
    """Runs the steps' processes: output to the log (and stdout), time limits from one overall budget."""

    def __init__(self, log_path: Path, budget_s: float, env: dict):
        self.log = open(log_path, "a", buffering=1)
        self.deadline = time.monotonic() + budget_s
        self.env = env

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.log.write(line + "\n")

    def run(self, tag: str, argv: list[str], limit_s: float, kill_on: str | None = None,
            env: dict | None = None) -> tuple[int, list[str], bool]:
        """Run ``argv`` in its own process group; return (exit status, output lines, killed on cue). With
        ``kill_on``, SIGKILL the group (the process and its DataLoader workers) as soon as a line starts with it.
        A run past ``limit_s`` (or past the budget) is killed the same way and raises CheckError."""
        limit = min(limit_s, self.left())
        if limit <= 1:
            raise CheckError("out of time: the check's budget is spent")
        self.say(f"[{tag}] $ {' '.join(argv)}")
        proc = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        expired = threading.Event()

        def kill() -> None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this Popen made: the run and its workers
            except ProcessLookupError:
                pass

        timer = threading.Timer(limit, lambda: (expired.set(), kill()))
        timer.start()
        lines, killed = [], False
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                line = line.rstrip("\n")
                lines.append(line)
                self.say(f"[{tag}] {line}")
                if kill_on and not killed and line.startswith(kill_on):
                    kill()
                    killed = True
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                kill()
                proc.wait()
        if expired.is_set():
            raise CheckError(f"{tag}: killed after its {limit:.0f} s limit: {_tail(lines)}")
        return rc, lines, killed


def _tail(lines: list[str], n: int = 6) -> str:
    return " | ".join(lines[-n:])


# ----------------------------------------------------------------------------------------------------- the steps

def install_missing_wheels(wheels: Path | None, site: Path, runner: Runner) -> dict:
    """pip-install the missing ``WHEEL_MODULES`` from ``wheels`` into ``site`` (no index, no dependencies)."""
    missing = [m for m in WHEEL_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return {"installed": [], "missing": []}
    if wheels is None or not wheels.is_dir():
        return {"installed": [], "missing": missing}
    rc, lines, _ = runner.run("setup", [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                        "--no-compile", "--no-cache-dir", "--target", str(site),
                                        "--find-links", str(wheels), *missing], 120)
    if rc != 0:
        raise CheckError(f"pip install from {wheels} failed: {_tail(lines)}")
    return {"installed": missing, "missing": []}


def make_coco_layout(root: Path, size: Size) -> dict:
    """Synthetic JPEGs (bench_throughput.make_images, COCO sizes x image_scale) as a COCO 2014 folder."""
    pool = root / "pool"
    n = size.train_images + size.val_images
    seconds = make_images(pool, n, os.cpu_count() or 1, scale=size.image_scale)
    entries = random_entries(n)
    train, val = entries[:size.train_images], entries[size.train_images:]
    for folder, part in (("train2014", train), ("val2014", val)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for e in part:
            dest = root / folder / e.name
            if not dest.exists():
                os.link(pool / e.name, dest)
    write_label_list(root / "train_list.txt", [LabelEntry(e.name, e.labels) for e in train])
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(_instances(val, root / "val2014")))
    return {"images": n, "make_images_s": round(seconds, 1), "pool": str(pool)}


def _instances(entries, image_dir: Path) -> dict:
    """A minimal COCO instances dict: one whole-image box per positive label, categories 1..80."""
    images, anns = [], []
    for i, e in enumerate(entries, start=1):
        w, h = Image.open(image_dir / e.name).size
        images.append({"id": i, "file_name": e.name, "width": w, "height": h})
        anns += [{"id": len(anns) + 1, "image_id": i, "category_id": c + 1, "bbox": [0, 0, w, h], "area": w * h,
                  "iscrowd": 0} for c in e.labels]
    cats = [{"id": c + 1, "name": f"class{c:02d}", "supercategory": "synthetic"} for c in range(NUM_CLASSES)]
    return {"images": images, "annotations": anns, "categories": cats}


def train_end_to_end(runner: Runner, data: Path, run_dir: Path, size: Size, device: str, compile_: bool,
                     tag: str) -> dict:
    """train.py for epochs 0-1, SIGKILLed once epoch 1 is written; --resume auto for epoch 2; validate.py."""
    argv = [sys.executable, "train.py", "--data", str(data), "--dataset", str(data / "train_list.txt"),
            "--output", str(run_dir), "--pretrained", "none", "--max-steps-per-epoch", str(size.steps_per_epoch),
            "--stop-epoch", "2"] + _size_flags(size, device, train=True) + (["--compile"] if compile_ else [])
    limit = 420 if compile_ else 180
    rc, lines, killed = runner.run(tag, argv, limit, kill_on="epoch 1/")
    rows = _metrics(run_dir)
    if not killed:
        raise CheckError(f"train.py ended (exit {rc}) before epoch 1 was written: {_tail(lines)}")
    if [r["epoch"] for r in rows] != [0, 1]:
        raise CheckError(f"killed after epoch 1 but metrics.jsonl holds epochs {[r['epoch'] for r in rows]} "
                         "(the kill came too late to land in epoch 2)")
    rc, lines, _ = runner.run(tag, argv + ["--resume", "auto"], limit)
    rows = _metrics(run_dir)
    if rc != 0 or [r["epoch"] for r in rows] != [0, 1, 2]:
        raise CheckError(f"resume: exit {rc}, epochs {[r['epoch'] for r in rows]}: {_tail(lines)}")
    if not any(line.startswith("resumed from") for line in lines):
        raise CheckError("the second run did not say 'resumed from ...'")
    best = max(max(r["map"], r["map_ema"]) for r in rows)
    scored = validate_best(runner, data, run_dir, size, device, tag)
    result = {"epochs": [{k: r[k] for k in ("epoch", "map", "map_ema", "train_seconds", "seconds",
                                            "images_per_second")} for r in rows],
              "epoch_lines": [line for line in lines if line.startswith("epoch ")],
              "best_map": best, "validate_map": scored, "map_difference": abs(scored - best),
              "map_tolerance": size.map_tolerance}
    if abs(scored - best) > size.map_tolerance:
        raise CheckError(f"validate.py gives mAP {scored:.4f} for best.ckpt, the run's best is {best:.4f} "
                         f"(tolerance {size.map_tolerance})", data=result)
    return result


def validate_best(runner: Runner, data: Path, run_dir: Path, size: Size, device: str, tag: str) -> float:
    out = run_dir / "validate.json"
    argv = [sys.executable, "validate.py", "--model-path", str(run_dir / "best.ckpt"), "--data", str(data),
            "--json", str(out)] + _size_flags(size, device, train=False)
    rc, lines, _ = runner.run(tag + "-validate", argv, 150)
    if rc != 0 or not out.is_file():
        raise CheckError(f"validate.py failed (exit {rc}): {_tail(lines)}")
    return float(json.loads(out.read_text())["map"])


def _size_flags(size: Size, device: str, train: bool) -> list[str]:
    """train.py/validate.py flags: none for the GPU run (train.py's defaults are 448, resnet50, 128, 16 workers)
    but validate.py's batch, which is set to train.py's so that both score the same batches."""
    flags = ["-b", str(size.batch)] if not train else []
    if size is not FULL:
        flags = ["-b", str(size.batch), "-j", str(size.workers), "--device", device, "--gpu-pipeline", "on"]
        if train:
            flags += ["--model-name", size.model, "--image-size", str(size.image_size)]
    return flags


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def bench(runner: Runner, pool: Path, size: Size, device: str, work: Path, compile_: bool, tag: str,
          augment_form: str | None = None) -> dict:
    out = work / f"{tag}.json"
    parts = "a,b" if compile_ else "a,a-serial,b,data,eval"
    argv = [sys.executable, "-m", "benchmarks.bench_throughput", "--device", device, "--image-dir", str(pool),
            "--num-images", str(size.train_images + size.val_images), "--image-size", str(size.image_size),
            "--batch-size", str(size.batch), "--model-name", size.model, "--steps", str(size.bench_steps),
            "--warmup", str(size.bench_warmup), "--workers", str(size.workers), "--parts", parts,
            "--json", str(out)] + (["--compile"] if compile_ else []) + (["--threads", "1"] if device == "cpu" else [])
    argv += ["--augment-form", augment_form] if augment_form else []
    rc, lines, _ = runner.run(tag, argv, 300 if compile_ else 180)
    if rc != 0 or not out.is_file():
        raise CheckError(f"bench_throughput failed (exit {rc}): {_tail(lines)}")
    return json.loads(out.read_text())


def baseline(runner: Runner, pool: Path, size: Size, device: str, work: Path) -> dict:
    """benchmarks.official_style_baseline in its own process, on the data step's images."""
    out = work / "baseline.json"
    argv = [sys.executable, "-m", "benchmarks.official_style_baseline", "--image-dir", str(pool),
            "--num-images", str(size.baseline_images), "--image-size", str(size.image_size),
            "--batch-size", str(size.batch), "--workers", str(size.workers), "--steps", str(size.baseline_steps),
            "--model-name", size.model, "--device", device, "--json", str(out)]
    rc, lines, _ = runner.run("baseline", argv, 240)
    if rc != 0 or not out.is_file():
        raise CheckError(f"the baseline failed (exit {rc}): {_tail(lines)}")
    return json.loads(out.read_text())


def sync_check(runner: Runner, pool: Path, size: Size, augment_form: str | None = None) -> dict:
    argv = [sys.executable, "-m", "benchmarks.gpu_check", "--run-sync-check", str(pool),
            "--image-size", str(size.image_size), "--batch", str(size.batch)]
    rc, lines, _ = runner.run("sync", argv + (["--augment-form", augment_form] if augment_form else []), 120)
    if rc != 0:
        raise CheckError(f"host sync in the input path: {_tail(lines)}")
    return json.loads(next(line for line in reversed(lines) if line.startswith("{")))


def run_sync_check_child(pool: Path, image_size: int, batch: int, augment_form: str | None = None) -> None:
    """GpuTrainPreprocess's augmentation (after its decode, which waits for its own stream by design) and the
    Prefetcher's handover under set_sync_debug_mode('error'), after one warm-up batch."""
    files = sorted(pool.glob("*.jpg"))[:batch]
    raw = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    pre = GpuTrainPreprocess(image_size, "cuda", augment_form=augment_form)
    decoded = decode_resize(raw, image_size, "cuda")
    batches = [(decoded, None, torch.arange(len(raw)), 0)] * 3
    augment = pre.augment_decoded
    for _ in Prefetcher(batches[:1], augment, "cuda"):  # warm-up: allocator, pinned memory
        pass
    gpu_draws = BatchAugment(image_size).cuda()  # for the known sync below: draws made on the GPU
    zeros = torch.zeros(8, 3, image_size, image_size, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for images, *_ in Prefetcher(batches, augment, "cuda"):
            images.sum()
        try:  # the detector must catch a known sync: grouping draws made on the GPU
            gpu_draws(zeros, generator=torch.Generator("cuda"))
            caught = False
        except RuntimeError:
            caught = True
    finally:
        torch.cuda.set_sync_debug_mode("default")
    if not caught:
        raise SystemExit("the sync detector did not catch a known host sync: the check proves nothing")
    print(json.dumps({"batches_without_sync": len(batches), "detector_caught_known_sync": caught}), flush=True)


def closed_truncated_jpeg(data: bytes) -> bytes:
    """``data`` cut halfway through its last scan and closed with an end-of-image marker (FF D9), as a download
    cut short and then 'repaired' looks. It passes check_jpeg_complete: only the decoder can tell."""
    sos = data.rfind(b"\xff\xda")
    if sos < 0:
        raise ValueError("not a JPEG with a scan")
    return data[:sos + (len(data) - sos) // 2] + b"\xff\xd9"


def decode_check(runner: Runner, pool: Path, device: str) -> dict:
    rc, lines, _ = runner.run("decode", [sys.executable, "-m", "benchmarks.gpu_check", "--run-decode-check", str(pool),
                                         "--device", device], 60)
    if rc != 0:
        raise CheckError(f"the decode check did not run: {_tail(lines)}")
    return json.loads(next(line for line in reversed(lines) if line.startswith("{")))


def run_decode_check_child(pool: Path, device: str) -> None:
    """What the training pipeline's decoder does with a JPEG cut short and closed with FF D9: an error naming the
    file (the CPU decoder's libjpeg warning is turned into one), or pixels, compared with the intact file's."""
    path = sorted(pool.glob("*.jpg"))[0]
    data = path.read_bytes()
    as_tensor = lambda b: torch.frombuffer(bytearray(b), dtype=torch.uint8)  # noqa: E731
    intact = decode_images([as_tensor(data)], device, names=[path.name])[0]
    try:
        cut = decode_images([as_tensor(closed_truncated_jpeg(data))], device, names=[f"{path.name} (cut)"])[0]
        if device == "cuda":
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 (what is raised is the finding)
        print(json.dumps({"outcome": f"raised {type(e).__name__}", "message": str(e)[:300]}), flush=True)
        return
    diff = (cut.float() - intact.float()).abs()
    print(json.dumps({"outcome": "decoded without an error", "mean_abs_diff": diff.mean().item(),
                      "fraction_off_by_more_than_16": (diff > 16).float().mean().item()}), flush=True)


# ------------------------------------------------------------------------------------------------------ the table

def ratio(x: float | None, y: float | None) -> float | None:
    return x / y if x and y else None


def table_rows(raw: dict, gpu_name: str) -> list[dict]:
    """(what, measured, target, met) rows from the steps' figures; missing figures read 'not measured'."""
    be, bc, bl = raw.get("bench", {}), raw.get("bench-compile", {}), raw.get("baseline", {})
    base = min((v for v in (bl.get("loader_official_img_s"), bl.get("model_official_img_s")) if v), default=None)
    eval_target = TARGETS["eval_s_h200"] * (H100_EVAL_ALLOWANCE if "H100" in gpu_name else 1.0)
    rows = []

    def row(what, value, unit="", target=None, met=None):
        rows.append({"what": what, "measured": value, "unit": unit, "target": target, "met": met})

    for tag in ("train", "train-compile"):
        t = raw.get(tag)
        if t:
            rates = ", ".join(f"{e['images_per_second']:.0f}" for e in t["epochs"])
            row(f"{tag}: epochs 0-1, SIGKILL, --resume auto for epoch 2; img/s per epoch", rates, "img/s")
            row(f"{tag}: validate.py on best.ckpt vs the run's best mAP",
                f"{t['validate_map']:.4f} vs {t['best_map']:.4f}", "mAP", f"difference <= {t['map_tolerance']}",
                t["map_difference"] <= t["map_tolerance"])
    for label, r in (("eager", be), ("compiled", bc)):
        a, b = r.get("a_train_img_s"), r.get("b_step_img_s")
        row(f"(a) training loop, {label}", a, "img/s")
        row(f"(b) model step only, {label}", b, "img/s")
        q = ratio(a, b)
        row(f"(a)/(b), {label}", q, "", f">= {TARGETS['a_over_b']}", None if q is None else q >= TARGETS["a_over_b"])
    row("(a) without the overlap (prefetch 0), eager", be.get("a_serial_img_s"), "img/s")
    row("data alone (loader + preprocess: GPU decode, resize, augment on CUDA)", be.get("data_img_s"), "img/s")
    row("eval, model + EMA in one pass", be.get("eval_img_s"), "img/s")
    e = be.get("eval_40137_s")
    row("eval of 40,137 images (val2014), model + EMA", e, "s",
        f"<= {eval_target:g} s ({'H100: 1.1 x the H200 target, an assumption' if 'H100' in gpu_name else 'H200'})",
        None if e is None else e <= eval_target)
    row("official-style pipeline on CPU workers (baseline script)", bl.get("loader_official_img_s"), "img/s")
    row("official-style step (baseline script)", bl.get("model_official_img_s"), "img/s")
    row("baseline = the slower of the two", base, "img/s")
    for label, r, key in (("eager", be, "a_over_baseline"), ("compiled", bc, "a_over_baseline_compiled")):
        q = ratio(r.get("a_train_img_s"), base)
        row(f"(a) {label} / baseline", q, "", f">= {TARGETS[key]}", None if q is None else q >= TARGETS[key])
    dc = raw.get("decode")
    if dc:
        found = dc["outcome"] if "mean_abs_diff" not in dc else \
            f"{dc['outcome']}: mean difference {dc['mean_abs_diff']:.1f} levels from the intact file"
        row("the input pipeline's decoder on a JPEG cut short and closed with FF D9", found, "",
            "an error naming the file", dc["outcome"].startswith("raised"))
    pa, pb = be.get("a_peak_gib"), bl.get("model_official_peak_gib")
    row("peak GPU memory: (a) eager / official-style step", f"{pa:.2f} / {pb:.2f}" if pa and pb else None, "GiB",
        "(a) <= official-style", None if not (pa and pb) else pa <= pb)
    return rows


def _fmt(v) -> str:
    if v is None:
        return "not measured"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def markdown(report: dict) -> str:
    lines = [f"# gpu-check: {report['device']}, torch {report['torch']}, {report['date']}", "",
             f"{report['size_name']} size: {report['size']['model']} @ {report['size']['image_size']} px, "
             f"batch {report['size']['batch']}, {report['size']['workers']} workers, augmentation form "
             f"{report.get('augment_form', 'per-op')} (sync and bench steps). "
             + ("CPU rehearsal: the figures say nothing about speed and the targets are not judged."
                if report["device_type"] == "cpu" else ""), "",
             "| step | status | seconds | detail |", "| --- | --- | ---: | --- |"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.0f} | {s['detail']} |" for s in report["steps"]]
    lines += ["", "| what | measured | unit | target | met |", "| --- | ---: | --- | --- | --- |"]
    for r in report["rows"]:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['what']} | {_fmt(r['measured'])} | {r['unit']} | {r['target'] or ''} | {met} |")
    lines += ["", verdict(report)]
    return "\n".join(lines) + "\n"


def verdict(report: dict) -> str:
    """The closing line: the exit status, how many steps passed, were skipped or failed, and which targets
    were missed (the exit status judges the steps only; a missed target is reported, not fatal)."""
    steps = report["steps"]
    skipped = [s["name"] for s in steps if s["status"] == "skipped"]
    passed = sum(s["status"] == "ok" for s in steps)
    parts = [f"{passed} of {len(steps)} steps passed"]
    if skipped:
        parts.append(f"{len(skipped)} skipped ({', '.join(skipped)})")
    if report["failed"]:
        parts.append(f"{len(report['failed'])} failed: {', '.join(report['failed'])}")
    judged = [r for r in report["rows"] if r["met"] is not None]
    missed = [r["what"] for r in judged if not r["met"]]
    if not judged:
        parts.append("no target judged")
    else:
        parts.append(f"{len(judged) - len(missed)} of {len(judged)} targets met"
                     + (f"; missed: {'; '.join(missed)}" if missed else ""))
    return f"exit status {report['exit_status']}: " + "; ".join(parts)


# -------------------------------------------------------------------------------------------------------- driver

@dataclass
class Context:
    """What the steps share."""
    runner: Runner
    work: Path  # scratch: data, runs, site-packages
    size: Size
    device: str
    wheels: Path | None
    augment_form: str | None = None  # the batched augmentation's form for sync, bench, bench-compile (None: default)

    @property
    def data(self) -> Path:
        return self.work / "coco"


def plan(ctx: Context) -> list[tuple[str, str | None]]:
    """(step, reason to skip or None), in running order: the compile steps last (the slowest)."""
    on_cpu = ctx.device == "cpu"
    no_compile = None if ctx.size.compile else "--compile is skipped at toy size (minutes of C++ builds on a CPU)"
    return [("setup", None),
            ("data", None),
            ("sync", "needs CUDA (tests/test_gpu_pipeline.py checks the augmentation on 'meta')" if on_cpu else None),
            ("decode", None),
            ("train", None),
            ("bench", None),
            ("baseline", None),
            ("bench-compile", no_compile),
            ("train-compile", no_compile)]


def _run_step(name: str, ctx: Context) -> dict:
    if name == "setup":
        return setup(ctx)
    if name == "data":
        return make_coco_layout(ctx.data, ctx.size)
    pool = ctx.data / "pool"
    if not pool.is_dir():
        raise CheckError("no data: the data step failed")
    if name == "sync":
        return sync_check(ctx.runner, pool, ctx.size, ctx.augment_form)
    if name == "decode":
        return decode_check(ctx.runner, pool, ctx.device)
    if name in ("train", "train-compile"):
        return train_end_to_end(ctx.runner, ctx.data, ctx.work / "runs" / name, ctx.size, ctx.device,
                                name == "train-compile", name)
    if name in ("bench", "bench-compile"):
        return bench(ctx.runner, pool, ctx.size, ctx.device, ctx.work, name == "bench-compile", name,
                     ctx.augment_form)
    return baseline(ctx.runner, pool, ctx.size, ctx.device, ctx.work)


def setup(ctx: Context) -> dict:
    """Install missing wheels (pycocotools: train.py and validate.py need it)."""
    result = install_missing_wheels(ctx.wheels, ctx.work / "site", ctx.runner)
    if result["missing"]:
        raise CheckError(f"python lacks {', '.join(result['missing'])} and {ctx.wheels} holds no wheel for it: run "
                         f"`make gpu-carry` where pip reaches PyPI and carry {CARRY_DIR}", data=result)
    return result


def run_steps(ctx: Context) -> tuple[list[StepResult], dict]:
    steps, raw = [], {}
    for name, skip in plan(ctx):
        step = StepResult(name)
        steps.append(step)
        if skip:
            step.status, step.detail = "skipped", skip
            ctx.runner.say(f"[{name}] skipped: {skip}")
            continue
        start = time.monotonic()
        try:
            raw[name] = _run_step(name, ctx)
            step.status = "ok"
        except Exception as e:  # noqa: BLE001 (every failure is reported in the table; the next step runs)
            message = str(e) if isinstance(e, CheckError) else f"{type(e).__name__}: {e}"
            step.status, step.detail = "FAIL", message.replace("|", "/").replace("\n", " ")[:400]
            if isinstance(e, CheckError) and e.data:
                raw[name] = e.data
            ctx.runner.say(f"[{name}] FAIL: {message}")
        step.seconds = time.monotonic() - start
    return steps, raw


def run_check(args) -> int:
    device = args.device
    size = TOY if (device == "cpu" or args.toy) else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(work / "site"), env.get("PYTHONPATH", "")) if p)
    (out / "gpu_check.log").write_text("")
    runner = Runner(out / "gpu_check.log", args.budget or size.budget_s, env)
    ctx = Context(runner, work, size, device, Path(args.wheels) if args.wheels else None, args.augment_form)
    report = {"device_type": device, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
              "size_name": "toy" if size is TOY else "full", "size": asdict(size),
              "python": platform.python_version(), "cpus": os.cpu_count(),
              "augment_form": args.augment_form or AUGMENT_FORM_BY_DEVICE.get(device, "per-op")}
    runner.say(f"gpu-check ({device}), torch {torch.__version__}, {report['size_name']} size, "
               f"budget {runner.left():.0f} s, scratch {work}")
    try:
        steps, raw = run_steps(ctx)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    gpu_name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or "cpu")
    report["device"] = gpu_name  # asked only now: the parent holds no CUDA context while the steps run
    report["steps"] = [asdict(s) for s in steps]
    report["raw"] = raw
    report["rows"] = table_rows(raw, gpu_name)
    if device == "cpu":  # toy figures on a CPU: the targets are shown, not judged
        for r in report["rows"]:
            r["met"] = None
    report["failed"] = [s.name for s in steps if s.status not in ("ok", "skipped")]
    report["exit_status"] = 1 if report["failed"] else 0
    text = markdown(report)
    (out / "table.md").write_text(text)
    (out / "table.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    runner.say(text)
    runner.log.close()
    return report["exit_status"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cuda: the check at full size; cpu: the rehearsal at toy size (default: cuda)")
    p.add_argument("--out", default="runs/gpu-check", help="folder for table.md, table.json, gpu_check.log")
    p.add_argument("--wheels", default=CARRY_DIR, metavar="DIR",
                   help=f"wheels of pycocotools for a python that lacks it (default: {CARRY_DIR})")
    p.add_argument("--work-dir", default=None, help="scratch folder for images and runs, kept (default: a temp "
                                                    "folder, removed at the end)")
    p.add_argument("--budget", default=None, type=float, metavar="S",
                   help=f"seconds for the whole check (default: {FULL.budget_s} full, {TOY.budget_s} toy)")
    p.add_argument("--augment-form", default=None, choices=AUGMENT_FORMS,
                   help="the batched augmentation's form for the sync and bench steps (default: "
                        "gpu_pipeline.AUGMENT_FORM_BY_DEVICE's choice); train.py runs the default")
    p.add_argument("--toy", action="store_true", help="toy size on CUDA too (a quick look, not the measurement)")
    p.add_argument("--run-sync-check", default=None, help=argparse.SUPPRESS)  # the sync step's own process
    p.add_argument("--run-decode-check", default=None, help=argparse.SUPPRESS)  # the decode step's own process
    p.add_argument("--image-size", default=None, type=int, help=argparse.SUPPRESS)
    p.add_argument("--batch", default=None, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget is not None and args.budget <= 0:
        p.error("--budget must be positive")
    if args.device == "cuda" and not (args.run_sync_check or args.run_decode_check):
        if not torch.cuda.is_available():
            p.error("--device cuda: CUDA is not available here (the CPU rehearsal is --device cpu)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_sync_check:
        run_sync_check_child(Path(args.run_sync_check), args.image_size, args.batch, args.augment_form)
        return 0
    if args.run_decode_check:
        run_decode_check_child(Path(args.run_decode_check), args.device)
        return 0
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
