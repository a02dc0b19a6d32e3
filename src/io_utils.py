"""Files of a run folder: atomic writes, the one-writer lock, and leftovers of a killed writer.

* ``atomic_write``: a crash leaves either the old file or the new one, never a torn file; a failed
  write (full disk, quota, read-only folder) is a ``WriteError`` naming the file.
* ``RunFolderLock``: an exclusive lock on ``FOLDER/.lock``, held by one process for a whole run; a
  second process is refused at once with the holder's pid.
* ``remove_stale_temporaries``: the ``.NAME.*.tmp`` files a writer killed mid-write leaves behind.
* ``read_text_lines``: the lines of a user's text file (a label list, class names), read the same whichever
  editor wrote it; a file that cannot be read is an error naming it.
* ``read_json``: a JSON file; a missing, unreadable or torn one is a UserError naming it (and the line).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

from src.errors import UserError

LOCK_NAME = ".lock"
# atomic_write's temporaries: ".<name>.<mkstemp's random part>.tmp", beside the file they replace.
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")


class WriteError(UserError, OSError):
    """A file that could not be written (full disk, quota, permissions); the old file, if any, is intact."""


class FolderInUseError(UserError):
    """A run folder locked by another process."""


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind ``error``: itself, or one in its cause/context chain (torch.save reports a failed
    write as a RuntimeError from its zip writer, with the OSError as context)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A failure leaves ``path`` as it was and removes the temporary; a failure of the file system
    (ENOSPC, EDQUOT, EFBIG, EROFS, EACCES, ...) is raised as a WriteError naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(f"cannot write {path}: {e.strerror or e}") from e
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = _os_error_in(e) if isinstance(e, Exception) and not isinstance(e, UserError) else None
        if cause is not None:
            name = errno.errorcode.get(cause.errno, "") if cause.errno else ""
            reason = f"{cause.strerror or cause} ({name})" if name else str(cause.strerror or cause)
            kept = "the previous file is intact" if path.exists() else "nothing was written"
            raise WriteError(f"cannot write {path}: {reason}; {kept}") from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (temporary file, fsync, rename)."""
    import torch  # here: the rest of this module serves commands that answer before torch loads
    return atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries ``atomic_write`` leaves in ``folder`` when its writer is killed; return them.

    Only call this while holding the folder's RunFolderLock: a live writer's temporary looks the same.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if _TEMPORARY.match(p.name) and p.is_file())
    for p in stale:
        p.unlink()
    return stale


class RunFolderLock:
    """Exclusive lock on a run folder for as long as it is held (``with RunFolderLock(folder): ...``).

    A POSIX record lock (``fcntl.lockf``) on ``FOLDER/.lock``, created if needed; the file holds the
    holder's pid and is never deleted. The kernel drops the lock when the holder exits or is killed, so a
    dead run never blocks the next one, and, unlike ``flock``, forked DataLoader workers do not inherit it
    (a killed run's lingering workers do not block its resume). A second process gets FolderInUseError
    naming the holder's pid. The lock is per process: a second acquire in the holder itself succeeds.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunFolderLock":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise WriteError(f"cannot create the run folder lock {self.path}: {e.strerror or e}") from e
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise WriteError(f"cannot lock {self.path}: {e.strerror or e}") from e
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise FolderInUseError(f"{self.folder} is in use by another run (pid {holder} holds {self.path}); "
                                   "wait for it to end or choose another --output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> "RunFolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def read_text_lines(path: str | os.PathLike, error: type[Exception]) -> list[str]:
    """The lines of a UTF-8 text file, without a byte-order mark, ``\r`` line ends or trailing blank lines.

    Lines split at ``\n`` only (``str.splitlines`` would also split at form feeds and other rare characters
    inside a name). A missing, unreadable or non-UTF-8 file raises ``error`` with a message naming ``path``.
    """
    path = Path(path)
    try:  # utf-8-sig: a byte-order mark, as some editors write one, is not part of the first line
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:  # a folder, no permission, an I/O error
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value of a file; a missing, unreadable, non-UTF-8 or torn file is a UserError naming it."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}): the file is torn or damaged") from None
