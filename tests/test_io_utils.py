"""Atomic writes that name the file on a full disk, the one-writer lock, and a killed writer's leftovers."""
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.io_utils import (FolderInUseError, RunFolderLock, WriteError, atomic_torch_save, atomic_write,
                          read_text_lines, remove_stale_temporaries)

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from src.io_utils import RunFolderLock; RunFolderLock(sys.argv[1]).acquire(); " \
       "print('held', flush=True); time.sleep(600)"


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"old")

    def full(f):
        f.write(b"part")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(WriteError, match=rf"cannot write {path}: No space left on device \(ENOSPC\); "
                                         "the previous file is intact"):
        atomic_write(path, full)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_torch_save_failing_to_write_is_a_write_error(tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError of its zip writer; the OSError behind it is found."""
    import src.io_utils as io
    real = io.os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()
    monkeypatch.setattr(io.os, "fdopen", lambda *a, **k: Full(real(*a, **k)))
    with pytest.raises(WriteError, match=r"x.ckpt: Disk quota exceeded \(EDQUOT\); nothing was written"):
        atomic_torch_save({"w": torch.zeros(1000)}, tmp_path / "x.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_one_writer_per_folder_and_the_lock_dies_with_its_holder(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUseError, match=rf"{folder} is in use by another run \(pid {holder.pid} holds"):
            RunFolderLock(folder).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunFolderLock(folder):  # kill -9 released it
        assert (folder / ".lock").read_text().strip() == str(os.getpid())


def test_a_forked_child_does_not_inherit_the_lock(tmp_path):
    """DataLoader workers are forked from the run: a killed run's lingering workers must not hold its folder."""
    folder = tmp_path / "run"
    with RunFolderLock(folder):
        pid = os.fork()
        if pid == 0:  # child: outlives the lock's release below
            time.sleep(3)
            os._exit(0)
    try:
        probe = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(600)", "pass"), str(folder)],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0 and probe.stdout.strip() == "held", probe.stderr
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    keep = ["last.ckpt", "metrics.jsonl", ".lock", "notes.tmp", ".hidden"]
    stale = [".last.ckpt.k2j4_xq9.tmp", ".metrics.jsonl.abcdefgh.tmp"]
    for name in keep + stale:
        (tmp_path / name).write_text("x")
    assert sorted(p.name for p in remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_read_text_lines_reads_what_common_editors_write(tmp_path):
    f = tmp_path / "names.txt"
    f.write_bytes("\ufeffperson\r\nbicycle\x0ccar\r\n\r\n\n".encode("utf-8"))  # BOM, CRLF, a form feed in a name
    assert read_text_lines(f, ValueError) == ["person", "bicycle\x0ccar"]


@pytest.mark.parametrize("content, message", [(None, "no such file"), (b"\xff\xfe", "not UTF-8 text")])
def test_read_text_lines_names_the_file_it_cannot_read(tmp_path, content, message):
    f = tmp_path / "list.txt"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(ValueError, match=f"list.txt: {message}"):
        read_text_lines(f, ValueError)
    with pytest.raises(ValueError, match="cannot read"):
        read_text_lines(tmp_path, ValueError)  # a folder
