"""Fault injection: every bad input or accident ends in a one-line error naming its culprit (exit status 2),
or in an exact recovery, and nothing written earlier is lost. docs/reliability.md lists the guarantees."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train
import validate
from src.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from src.engine import selected_map
from src.tools import upgrade_checkpoint
from src.toy.shapes import NUM_CLASSES
from src.trainer import EPOCH_WRITES

ROOT = Path(__file__).resolve().parents[1]
TIMING_KEYS = {"seconds", "train_seconds", "images_per_second"}
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def run_args(toy: Path, out: Path, *extra: str, stop: int = 2, steps: int = 2, batch: int = 8) -> list[str]:
    """A tiny run: resnet10t at 32 px, `steps` batches per epoch, epochs 0..stop of a 4-epoch schedule."""
    return ["--data", str(toy), "--dataset", str(toy / "coco_train_0.4left.txt"), "--model-name", "resnet10t",
            "--image-size", "32", "-b", str(batch), "-j", "0", "--epochs", "4", "--stop-epoch", str(stop),
            "--lr", "1e-3", "--output", str(out), "--max-steps-per-epoch", str(steps), "--pretrained", "none",
            *extra]


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def files(folder: Path) -> dict[str, bytes]:
    """Every file of a folder (but its lock) and its bytes: 'nothing earlier was lost' compares these."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def error_line(capsys, main, argv: list[str]) -> str:
    """Run a script's main; it must exit with status 2 and print exactly one 'error: ' line, no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def toy(toy_coco, tmp_path_factory) -> Path:
    """A private copy of the toy COCO (tests that damage it copy it again)."""
    return Path(shutil.copytree(toy_coco, tmp_path_factory.mktemp("faults") / "toy"))


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory) -> Path:
    """An uninterrupted, finished run (epochs 0..2): tests copy it before touching it."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train.main(run_args(toy, out))
    return out


def copy_run(reference: Path, to: Path) -> Path:
    shutil.copytree(reference, to, ignore=shutil.ignore_patterns(".lock"))
    return to


def same_rows(got: list[dict], want: list[dict]) -> None:
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for g, w in zip(got, want):
        for key in set(w) - TIMING_KEYS:
            if isinstance(w[key], float):
                assert g[key] == pytest.approx(w[key], abs=1e-6, nan_ok=True), key
            else:
                assert g[key] == w[key], key


# ----------------------------------------------------------------------------- unsafe checkpoints

class RunsCode:
    """A pickle whose loading runs a shell command (what a malicious shared checkpoint does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("entry", ["validate --model-path", "train --resume PATH", "train --resume auto"])
def test_a_checkpoint_that_runs_code_is_refused(toy, reference, tmp_path, capsys, entry):
    marker = tmp_path / "pwned"
    evil = {"format": CHECKPOINT_FORMAT, "kind": "last", "epoch": 0, "payload": RunsCode(marker)}
    if entry == "validate --model-path":
        path = tmp_path / "model.ckpt"
        torch.save(evil, path)
        line = error_line(capsys, validate.main, ["--model-path", str(path), "--data", str(toy), "-j", "0"])
    elif entry == "train --resume PATH":
        path = tmp_path / "shared.ckpt"
        torch.save(evil, path)
        line = error_line(capsys, train.main, run_args(toy, tmp_path / "out", "--resume", str(path)))
    else:  # planted in a run folder, picked up by --resume auto
        run = copy_run(reference, tmp_path / "run")
        path = run / "last.ckpt"
        torch.save(evil, path)
        before = files(run)
        line = error_line(capsys, train.main, run_args(toy, run, "--resume", "auto", stop=3))
        assert files(run) == before
    assert not marker.exists()
    assert str(path) in line and "posix.system" in line and "refused" in line


def test_old_format_last_ckpt_is_refused_then_converted_and_resumed(toy, reference, tmp_path, capsys):
    run = copy_run(reference, tmp_path / "run")
    old = load_checkpoint(run / "last.ckpt")
    old["rng"]["numpy"] = np.random.get_state()  # how the first format stored it: an ndarray inside
    torch.save(old, run / "last.ckpt")
    before = files(run)
    line = error_line(capsys, train.main, run_args(toy, run, "--resume", "auto", stop=3))
    assert "old format" in line and f"python -m src.tools.upgrade_checkpoint {run / 'last.ckpt'}" in line
    assert files(run) == before
    upgrade_checkpoint.main([str(run / "last.ckpt"), str(tmp_path / "new.ckpt")])
    os.replace(tmp_path / "new.ckpt", run / "last.ckpt")
    train.main(run_args(toy, run, "--resume", "auto"))  # restores everything, RNG included, then: finished
    assert "already finished at epoch 2" in capsys.readouterr().out
    assert rows(run) == rows(reference)


def test_incomplete_checkpoint_names_what_it_lacks(toy, reference, tmp_path, capsys):
    run = copy_run(reference, tmp_path / "run")
    ckpt = load_checkpoint(run / "last.ckpt")
    del ckpt["model_name"], ckpt["optimizer"]
    torch.save(ckpt, run / "last.ckpt")
    line = error_line(capsys, train.main, run_args(toy, run, "--resume", "auto", stop=3))
    assert "last.ckpt is incomplete: it lacks model_name, optimizer" in line


# ----------------------------------------------------------------------------- one writer per run folder

def test_a_second_writer_on_a_run_folder_stops_at_once(toy, tmp_path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *run_args(toy, out, stop=1)], env=env,
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None:
            lock = out / ".lock"
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.02)
        assert first.poll() is None, "the first run ended before the second one started"
        line = error_line(capsys, train.main, run_args(toy, out))
        assert f"{out} is in use by another run (pid {first.pid}" in line
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert [r["epoch"] for r in rows(out)] == [0, 1]  # the first run's rows only, none interleaved
    assert load_checkpoint(out / "last.ckpt")["epoch"] == 1


def test_resume_from_another_folder_never_writes_over_a_run(toy, reference, tmp_path, capsys):
    a = copy_run(reference, tmp_path / "a")
    b = copy_run(reference, tmp_path / "b")  # another run's folder
    before = files(b)
    line = error_line(capsys, train.main, run_args(toy, b, "--resume", str(a / "last.ckpt"), stop=3))
    assert f"--resume {a / 'last.ckpt'} lies outside --output {b}" in line
    assert files(b) == before
    # into an empty folder it continues a's run there, best.ckpt included
    c = tmp_path / "c"
    train.main(run_args(toy, c, "--resume", str(a / "last.ckpt"), stop=3))
    assert [r["epoch"] for r in rows(c)] == [0, 1, 2, 3]
    assert (c / "best.ckpt").is_file() and files(a) == files(reference)


def test_a_fresh_start_never_writes_over_a_run(toy, reference, tmp_path, capsys):
    run = copy_run(reference, tmp_path / "run")
    before = files(run)
    line = error_line(capsys, train.main, run_args(toy, run))
    assert f"{run} already holds a run" in line and "--resume auto" in line
    assert files(run) == before


def test_resume_auto_on_a_finished_run_says_so_and_changes_nothing(toy, reference, tmp_path, capsys):
    run = copy_run(reference, tmp_path / "run")
    before = files(run)
    best = load_checkpoint(run / "best.ckpt")
    train.main(run_args(toy, run, "--resume", "auto"))
    out = capsys.readouterr().out
    assert f"already finished at epoch 2 (best mAP {best['map']:.2f} in {run / 'best.ckpt'})" in out
    assert "continuing at epoch" not in out
    assert files(run) == before


def test_resume_auto_never_restarts_a_run_whose_last_ckpt_was_deleted(toy, reference, tmp_path, capsys):
    """Users delete last.ckpt to save space; --resume auto must not start the run again over its files."""
    run = copy_run(reference, tmp_path / "run")
    (run / "last.ckpt").unlink()
    before = files(run)
    line = error_line(capsys, train.main, run_args(toy, run, "--resume", "auto", stop=0))
    assert f"{run} holds best.ckpt and metrics.jsonl but no last.ckpt" in line and "another --output" in line
    assert files(run) == before


def test_a_resume_that_changes_a_run_defining_flag_is_refused_naming_it(toy, reference, tmp_path, capsys):
    """--max-steps-per-epoch cuts the OneCycle schedule: it was accepted and args.json rewritten to claim it."""
    run = copy_run(reference, tmp_path / "run")
    before = files(run)
    line = error_line(capsys, train.main, run_args(toy, run, "--resume", "auto", stop=3, steps=3))
    assert f"{run / 'last.ckpt'} was written by a different run: --max-steps-per-epoch 2 -> 3" in line
    assert files(run) == before


def test_another_pretrained_file_at_the_same_path_is_refused_on_resume(toy, reference, tmp_path, capsys):
    weights = tmp_path / "weights.ckpt"
    shutil.copy(reference / "best.ckpt", weights)
    run = tmp_path / "run"
    argv = run_args(toy, run, stop=0)
    argv[argv.index("--pretrained") + 1] = str(weights)
    train.main(argv)
    recorded = json.loads((run / "args.json").read_text())["pretrained_sha256"]
    assert recorded == hashlib.sha256(weights.read_bytes()).hexdigest()
    shutil.copy(reference / "last.ckpt", weights)  # another file at the same path
    before = files(run)
    line = error_line(capsys, train.main, argv + ["--resume", "auto", "--stop-epoch", "1"])
    assert f"different run: --pretrained {weights}: another file at that path (sha256 {recorded[:12]}" in line
    assert files(run) == before


def test_resuming_a_best_ckpt_says_to_resume_last_ckpt(toy, reference, tmp_path, capsys):
    line = error_line(capsys, train.main, run_args(toy, tmp_path / "new", "--resume", str(reference / "best.ckpt"),
                                                   stop=3))
    assert f"{reference / 'best.ckpt'} is a best.ckpt" in line and "resume from last.ckpt" in line
    assert "lacks" not in line


def test_resume_with_a_changed_test_set_is_refused(toy, reference, tmp_path, capsys):
    data = Path(shutil.copytree(toy, tmp_path / "toy"))
    ann = data / "annotations" / "instances_val2014.json"
    d = json.loads(ann.read_text())
    gone = d["annotations"][0]["image_id"]
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] != gone]  # one test image fewer
    ann.write_text(json.dumps(d))
    run = copy_run(reference, tmp_path / "run")
    before = files(run)
    line = error_line(capsys, train.main, run_args(data, run, "--resume", "auto", stop=3))
    assert "the test set" in line and f"{run / 'last.ckpt'}'s epochs were scored on" in line
    assert "23 images, the run was scored on 24" in line
    assert files(run) == before


def test_a_run_that_fails_at_its_start_leaves_no_folder_it_created(toy, tmp_path, capsys):
    missing = tmp_path / "nope.ckpt"
    line = error_line(capsys, train.main, run_args(toy, tmp_path / "new", "--resume", str(missing)))
    assert str(missing) in line and not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made is left as it was
    error_line(capsys, train.main, run_args(toy, tmp_path / "mine", "--resume", str(missing)))
    assert (tmp_path / "mine").is_dir()


def _nan_weights(path: Path) -> None:
    ckpt = load_checkpoint(path)
    key = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][key].view(-1)[0] = float("nan")
    torch.save(ckpt, path)


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


@pytest.mark.parametrize("damage, message", [("bit flipped", "is corrupt: its record"),
                                             (_nan_weights, "holds non-finite weights"),
                                             (_random_bytes, "is not a checkpoint")])
@pytest.mark.parametrize("entry", ["validate", "infer", "resume", "pretrained"])
def test_every_checkpoint_load_names_a_damaged_file(toy, reference, tmp_path, capsys, flip_a_bit, damage, message,
                                                    entry):
    """Bit-flipped (a CRC fails), diverged (NaN weights) or no checkpoint at all: each entry point stops with one
    line naming the file, never torch's advice to load unsafely, and nothing is scored or trained."""
    import infer

    run = copy_run(reference, tmp_path / "run")
    path = run / ("last.ckpt" if entry == "resume" else "best.ckpt")
    (flip_a_bit if damage == "bit flipped" else damage)(path)
    before = files(run)
    if entry == "validate":
        line = error_line(capsys, validate.main, ["--model-path", str(path), "--data", str(toy), "-j", "0"])
    elif entry == "infer":
        image = sorted((toy / "val2014").glob("*.jpg"))[0]
        line = error_line(capsys, infer.main, ["--model-path", str(path), "-j", "0", str(image)])
        assert "Traceback" not in capsys.readouterr().out
    elif entry == "resume":
        line = error_line(capsys, train.main, run_args(toy, run, "--resume", "auto", stop=3))
    else:
        line = error_line(capsys, train.main, run_args(toy, tmp_path / "new", "--pretrained", str(path)))
        assert not (tmp_path / "new").exists()
    assert str(path) in line and message in line and "weights_only` set to `False" not in line
    assert files(run) == before


# ----------------------------------------------------------------------------- crashes

# A run that SIGKILLs itself at one write of an epoch's commit (src.trainer.EPOCH_WRITES), named by KILL_AT =
# "WRITE:WHEN:EPOCH": WHEN "during" leaves part of the file (an atomic write's temporary, or half a metrics row),
# "after" kills right after the write is complete.
KILL_AT_WRITE = """
import json, os, signal, sys
sys.path.insert(0, os.getcwd())
import src.trainer as trainer
from src.io_utils import atomic_write

name, when, epoch = os.environ["KILL_AT"].split(":")
real_save, real_append = trainer.save_checkpoint, trainer.append_row

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def partial(f):
    f.write(b"PK\\x03\\x04 part of a checkpoint")
    f.flush()
    die()

def save_checkpoint(state, path):
    if path.name == name and state["epoch"] == int(epoch):
        if when == "during":
            atomic_write(path, partial)
        real_save(state, path)
        die()
    return real_save(state, path)

def append_row(run_dir, row):
    if name == "metrics.jsonl" and row["epoch"] == int(epoch):
        if when == "during":
            with open(run_dir / name, "a") as f:
                f.write(json.dumps(row)[:25])
            die()
        real_append(run_dir, row)
        die()
    return real_append(run_dir, row)

trainer.save_checkpoint, trainer.append_row = save_checkpoint, append_row
import train
train.main(sys.argv[1:])
"""


def improving_epochs(reference: Path) -> list[int]:
    """The epochs whose model beats every earlier one (they write best.ckpt), 0 first."""
    maps = [selected_map(r) for r in rows(reference)]
    return [e for e in range(len(maps)) if e == 0 or maps[e] > max(maps[:e])]


def kill_at(toy: Path, run: Path, write: str, when: str, epoch: int) -> None:
    # the same thread count as this process (the reference run's), so that the float sums match bit for bit
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "KILL_AT": f"{write}:{when}:{epoch}"}
    done = subprocess.run([sys.executable, "-c", KILL_AT_WRITE, *run_args(toy, run)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def last_epoch_in(run: Path) -> int | None:
    return load_checkpoint(run / "last.ckpt")["epoch"] if (run / "last.ckpt").exists() else None


@pytest.mark.parametrize("write, when, at", [(w, when, "middle") for w in EPOCH_WRITES for when in ("during", "after")]
                         + [("last.ckpt", "during", "first"), ("best.ckpt", "during", "first"),
                            ("last.ckpt", "after", "last")])
def test_a_kill_at_each_write_of_an_epoch_then_resume_is_exact(toy, reference, tmp_path, capsys, write, when, at):
    """SIGKILL at (or inside) each write of an epoch's commit: in a middle epoch that improves the best (so that
    it writes all three), in the first, and in the last (the resume finds the run finished). --resume auto cuts
    the record back to last.ckpt, or rebuilds what last.ckpt is ahead of, and ends with the uninterrupted run's
    rows and best.ckpt."""
    improving, last = improving_epochs(reference), len(rows(reference)) - 1
    middle = [e for e in improving if 0 < e < last]
    assert middle, f"the reference run improves in no middle epoch ({improving}): the test needs one"
    epoch = {"first": 0, "middle": middle[0], "last": last}[at]
    run = tmp_path / "run"
    kill_at(toy, run, write, when, epoch)
    committed = EPOCH_WRITES.index(write) + (when == "after")  # how many of the epoch's writes are complete
    assert last_epoch_in(run) == (epoch if committed else epoch - 1 if epoch else None)
    capsys.readouterr()
    train.main(run_args(toy, run, "--resume", "auto"))
    out = capsys.readouterr().out
    if write == "metrics.jsonl" and when == "during":
        assert "dropped 1 torn line from" in out
    if 1 <= committed < len(EPOCH_WRITES) and epoch in improving:  # last.ckpt of the epoch written, best.ckpt not
        assert f"wrote {run / 'best.ckpt'} (epoch {epoch}) from {run / 'last.ckpt'}" in out
    assert not list(run.glob(".*.tmp"))
    same_rows(rows(run), rows(reference))
    got, want = load_checkpoint(run / "best.ckpt"), load_checkpoint(reference / "best.ckpt")
    assert (got["epoch"], got["which"], got["map"]) == (want["epoch"], want["which"], want["map"])
    assert all(torch.equal(got["model"][k], v) for k, v in want["model"].items())


def test_a_non_finite_loss_is_one_error_line_with_status_2(toy, reference, tmp_path, capsys, monkeypatch):
    import src.trainer as trainer
    real = trainer.build_loss

    def nan_loss(*args, **kwargs):
        loss = real(*args, **kwargs)
        return lambda logits, targets, epoch=None: loss(logits, targets, epoch=epoch) * float("nan")

    monkeypatch.setattr(trainer, "build_loss", nan_loss)
    run = copy_run(reference, tmp_path / "run")
    before = files(run)
    line = error_line(capsys, train.main, run_args(toy, run, "--resume", "auto", stop=3))
    assert line.startswith("error: non-finite loss at epoch 3, step ") and "is intact" in line
    after = files(run)
    assert all(after[name] == before[name] for name in ("last.ckpt", "best.ckpt", "metrics.jsonl"))


def test_sigterm_stops_with_one_line_and_status_143_then_resume_is_exact(toy, reference, tmp_path):
    """A scheduler's SIGTERM (a preemption) to the whole process group, DataLoader workers included, at whatever
    instant it comes: one line naming the folder and how to continue, no traceback, exit status 143
    (128 + SIGTERM), and --resume auto ends as the uninterrupted run."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    argv = run_args(toy, run)
    argv[argv.index("-j") + 1] = "2"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (run / "last.ckpt").exists():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped"
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == (f"stopped by SIGTERM: {run / 'last.ckpt'} (the last committed epoch) is "
                                            "intact; continue the run with the same command and --resume auto")
    assert "Traceback" not in err and not list(run.glob(".*.tmp"))
    train.main(run_args(toy, run, "--resume", "auto"))
    same_rows(rows(run), rows(reference))


def test_a_sigterm_inside_a_checkpoint_write_lets_the_commit_finish_then_stops(toy, reference, tmp_path, capsys,
                                                                             monkeypatch):
    """SIGTERM while torch.save writes last.ckpt (its zip writer cannot be interrupted cleanly: a traceback and
    exit 1 before): the epoch's commit finishes, then the run stops with its line and status 143."""
    import src.io_utils as io
    real_fdopen, sent = io.os.fdopen, []

    class SignalsOnAZipWrite:
        """The run's first checkpoint file: SIGTERM at its third write, in the middle of the zip."""

        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, data):
            self.writes += 1 if self.writes or bytes(data[:2]) == b"PK" else 0
            if self.writes == 3 and not sent:
                sent.append(1)
                os.kill(os.getpid(), signal.SIGTERM)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(io.os, "fdopen", lambda *a, **k: SignalsOnAZipWrite(real_fdopen(*a, **k)))
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train.main(run_args(toy, run))
    monkeypatch.undo()
    assert e.value.code == 143 and sent
    assert f"stopped by SIGTERM: {run / 'last.ckpt'}" in capsys.readouterr().err
    assert load_checkpoint(run / "last.ckpt")["epoch"] == 0 and load_checkpoint(run / "best.ckpt")["epoch"] == 0
    assert [r["epoch"] for r in rows(run)] == [0] and not list(run.glob(".*.tmp"))
    train.main(run_args(toy, run, "--resume", "auto"))
    same_rows(rows(run), rows(reference))


def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(toy, reference, tmp_path, capsys, monkeypatch):
    import errno

    import src.io_utils as io
    run = copy_run(reference, tmp_path / "run")
    real_fdopen = io.os.fdopen

    class FullDisk:
        """A file on a disk with 64 KiB left: text files fit, a checkpoint does not."""

        def __init__(self, f):
            self.f, self.left = f, 64 * 1024

        def write(self, data):
            if len(data) > self.left:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.left -= len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(io.os, "fdopen", lambda *a, **k: FullDisk(real_fdopen(*a, **k)))
    line = error_line(capsys, train.main, run_args(toy, run, "--resume", "auto", stop=3))
    monkeypatch.undo()
    assert "No space left on device" in line and str(run) in line and ".ckpt" in line
    assert load_checkpoint(run / "last.ckpt")["epoch"] == 2  # the previous last.ckpt is intact
    assert files(run)["last.ckpt"] == files(reference)["last.ckpt"]
    assert not list(run.glob(".*.tmp"))


# ----------------------------------------------------------------------------- resume checks its data

def _shuffled(lines):
    return lines[1:] + lines[:1]


def _relabelled(lines):
    name, labels = lines[0].split(",", 1)
    return [f"{name},{' '.join(sorted(set(labels.split()) ^ {'0'}) or ['1'])}"] + lines[1:]


@pytest.mark.parametrize("change, message", [
    (_shuffled, "the same images are in another order"),
    (_relabelled, "the same images in the same order have other labels"),
    (lambda lines: lines[:-1], "it has 47 images, the run was trained on 48"),
    (lambda lines: lines[:-1] + ["COCO_val2014_000000500000.jpg,1"], "it names other image files"),
])
def test_resume_with_a_changed_training_list_is_refused(toy, reference, tmp_path, capsys, change, message):
    run = copy_run(reference, tmp_path / "run")
    changed = tmp_path / "list.txt"
    changed.write_text("\n".join(change((toy / "coco_train_0.4left.txt").read_text().splitlines())) + "\n")
    before = files(run)
    argv = run_args(toy, run, "--resume", "auto", stop=3)
    argv[argv.index("--dataset") + 1] = str(changed)
    line = error_line(capsys, train.main, argv)
    assert f"the training list {changed} differs from the one {run / 'last.ckpt'} was trained on" in line
    assert message in line
    assert files(run) == before


def test_resume_with_renamed_classes_is_refused(toy, reference, tmp_path, capsys):
    data = Path(shutil.copytree(toy, tmp_path / "toy"))
    for split in ("train", "val"):
        ann = data / "annotations" / f"instances_{split}2014.json"
        d = json.loads(ann.read_text())
        d["categories"][3]["name"] = "renamed"
        ann.write_text(json.dumps(d))
    run = copy_run(reference, tmp_path / "run")
    line = error_line(capsys, train.main, run_args(data, run, "--resume", "auto", stop=3))
    assert "the class names changed: class 3 was" in line and "'renamed'" in line


# ----------------------------------------------------------------------------- the class set and data files

@pytest.mark.parametrize("fault, message", [
    ("no categories key", "instances_val2014.json: no 'categories' list"),
    ("duplicate category id", "category id 1 appears twice"),
    ("duplicate category name", "appears twice (ids"),
    ("val lacks a category", "its categories differ from"),
    ("annotation file_name leaves the folder", "must not leave the image folder"),
    ("list index beyond the classes", f"coco_train_0.4left.txt:1: class index {NUM_CLASSES} out of range [0, {NUM_CLASSES})"),
    ("list file name leaves the folder", "coco_train_0.4left.txt:1: file name must be relative"),
])
def test_class_set_and_data_file_faults(toy, tmp_path, capsys, fault, message):
    data = Path(shutil.copytree(toy, tmp_path / "toy"))
    ann = data / "annotations" / "instances_val2014.json"
    d = json.loads(ann.read_text())
    lst = data / "coco_train_0.4left.txt"
    lines = lst.read_text().splitlines()
    if fault == "no categories key":
        del d["categories"]
    elif fault == "duplicate category id":
        d["categories"].append({**d["categories"][0], "name": "another"})
    elif fault == "duplicate category name":
        d["categories"].append({**d["categories"][0], "id": 999})
    elif fault == "val lacks a category":
        gone = d["categories"].pop(5)["id"]
        d["annotations"] = [a for a in d["annotations"] if a["category_id"] != gone]
    elif fault == "annotation file_name leaves the folder":
        annotated = d["annotations"][0]["image_id"]
        next(im for im in d["images"] if im["id"] == annotated)["file_name"] = "../../secret.jpg"
    elif fault == "list index beyond the classes":
        lines[0] = lines[0].split(",")[0] + f",0 {NUM_CLASSES}"
    elif fault == "list file name leaves the folder":
        lines[0] = "/etc/passwd," + lines[0].split(",")[1]
    ann.write_text(json.dumps(d))
    lst.write_text("\n".join(lines) + "\n")
    line = error_line(capsys, train.main, run_args(data, tmp_path / "run"))
    assert message in line
    if fault == "val lacks a category":
        assert "instances_train2014.json: lacks" in line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# ----------------------------------------------------------------------------- images

@pytest.mark.parametrize("pipeline", ["off", "on"])
def test_a_jpeg_cut_short_and_closed_with_ffd9_is_named(toy, tmp_path, capsys, pipeline):
    """libjpeg decodes it with a warning and grey blocks; both input pipelines stop and name the file
    (--gpu-pipeline on runs on the CPU here; --skip-bad-images: see test_datasets and test_train)."""
    data = Path(shutil.copytree(toy, tmp_path / "toy"))
    victim = sorted((data / "train2014").glob("*.jpg"))[5]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2] + b"\xff\xd9")  # cut in the scan, then an end-of-image marker
    argv = run_args(data, tmp_path / "run", "--gpu-pipeline", pipeline, stop=0, steps=1, batch=48)  # one batch
    line = error_line(capsys, train.main, argv)
    assert line.startswith(f"error: {victim}: bad image: ") and "corrupt data: Corrupt JPEG data" in line


# ----------------------------------------------------------------------------- flags

def test_a_batch_larger_than_the_training_set_needs_a_flag(toy, tmp_path, capsys):
    line = error_line(capsys, train.main, run_args(toy, tmp_path / "a", stop=0, batch=64))
    assert "--batch-size 64 is larger than the training set (48 images" in line and "--allow-small-data" in line
    train.main(run_args(toy, tmp_path / "b", "--allow-small-data", stop=0, batch=64, steps=1))
    assert [r["epoch"] for r in rows(tmp_path / "b")] == [0]


def test_an_empty_training_list_is_a_one_line_error(toy, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    argv = run_args(toy, tmp_path / "run")
    argv[argv.index("--dataset") + 1] = str(empty)
    line = error_line(capsys, train.main, argv)
    assert line == f"error: the training list {empty} holds no images"
