"""Atomic output: write under a temporary name next to the target, rename when complete."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import io
import os
import shutil
import signal
import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from caloquant.errors import InputError, Interrupted


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_writable(path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Fail early, with the path in the message, when the output cannot be written (or exists, unless ``overwrite``)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"{p}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{p}: output directory {parent} is not writable")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a file name")
    if not overwrite and p.exists():
        raise InputError(f"{p}: already exists; pass --overwrite to replace it")
    return p


def check_writable_dir(path: str | os.PathLike[str]) -> Path:
    """An output folder: an existing directory, or a new one whose parent exists and is writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: exists and is not a directory")
    if not p.exists():
        check_writable(p)
    elif not os.access(p, os.W_OK):
        raise InputError(f"{p}: output directory is not writable")
    return p


class OutputLock:
    """An exclusive lock on writing ``path``: a ``.NAME.lock`` sibling, flock-ed, naming its owner's PID and host.

    The kernel drops the lock when the owner dies (even by SIGKILL), so a stale lock file never blocks a rerun.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        target = Path(path)
        absolute = Path(os.path.abspath(target))  # a name even for '.' or 'run/'
        self.path = absolute.with_name(f".{absolute.name}.lock")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise InputError(f"{target}: another run is writing it ({owner}); wait for it to finish, "
                                 "or stop it first") from None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            os.close(fd)  # the previous owner removed this lock file as we opened it: take a fresh one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``path``, on error it is removed."""
    final = check_writable(path)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def staging_dir(path: str | os.PathLike[str]) -> Path:
    """A fresh hidden folder next to the output folder ``path`` (``.NAME.PID.tmp``), to be published by ``publish_dir``.

    Call it while holding ``OutputLock(path)``: staging folders left by killed runs on the same output are removed.
    """
    final = Path(os.path.abspath(path))
    for old in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    stage = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    stage.mkdir()
    return stage


def publish_dir(stage: Path, path: str | os.PathLike[str], owned: Iterable[str]) -> Path:
    """Move the staged files into ``path`` (renaming the folder when ``path`` is new), each replaced atomically.

    Files named in ``owned`` that ``path`` holds but the stage does not (outputs of an earlier run) are removed;
    other files in ``path`` are kept.
    """
    final = Path(path)
    if not final.exists():
        os.replace(stage, final)
        return final
    staged = {p.name for p in stage.iterdir()}
    for name in sorted(staged):
        os.replace(stage / name, final / name)
    for name in set(owned) - staged:
        (final / name).unlink(missing_ok=True)
    stage.rmdir()
    return final


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically and return its final path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


class RollbackFile(io.RawIOBase):
    """A read/write file for h5py's ``fileobj`` driver that can be rolled back to its last ``checkpoint``.

    HDF5 cannot close a file whose writes failed (a full disk makes its close crash the interpreter). Here
    every write that overwrites checkpointed bytes first saves them; ``rollback`` restores them, truncates to
    the checkpointed size and turns later writes into no-ops, so HDF5 can then close cleanly and the file is
    byte-identical to its state at the last ``checkpoint`` (a commit) without needing any new disk space.
    """

    def __init__(self, path: str | os.PathLike[str], mode: str) -> None:
        super().__init__()
        self.path = Path(path)
        self._f = cast(io.FileIO, open(self.path, mode, buffering=0))  # noqa: SIM115 - closed by close()
        self._undo: list[tuple[int, bytes]] = []
        self._size = os.fstat(self._f.fileno()).st_size
        self._discard = False
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, buffer: Any) -> int:
        return self._f.readinto(buffer)

    def _save(self, start: int, stop: int) -> None:
        """Keep the checkpointed bytes [start, stop) before they are overwritten or cut."""
        stop = min(stop, self._size)
        if start < stop:
            self._undo.append((start, os.pread(self._f.fileno(), stop - start, start)))

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self._discard:
            return len(view)
        pos = self._f.tell()
        self._save(pos, pos + len(view))
        done = 0
        try:
            while done < len(view):
                done += self._f.write(view[done:]) or 0
        except OSError as e:
            self.error = e
            raise
        return done

    def truncate(self, size: int | None = None) -> int:
        if self._discard:
            return self._f.tell() if size is None else size
        size = self._f.tell() if size is None else size
        self._save(size, self._size)
        return self._f.truncate(size)

    def flush(self) -> None:
        """Nothing to do: writes are unbuffered."""

    def checkpoint(self) -> None:
        """Make the current content the state ``rollback`` returns to."""
        self._undo.clear()
        self._size = os.fstat(self._f.fileno()).st_size

    def discard(self) -> None:
        """Ignore every later write and truncation, so that HDF5 can close a file whose writes failed."""
        self._discard = True

    def rollback(self) -> None:
        """Restore the content of the last checkpoint (raises OSError if the disk refuses even that)."""
        fd = self._f.fileno()
        for start, old in reversed(self._undo):
            os.pwrite(fd, old, start)
        self._undo.clear()
        os.ftruncate(fd, self._size)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


class StopFlag(threading.Event):
    """Set by the first SIGINT or SIGTERM; ``signum`` says which."""

    signum: int = signal.SIGINT


@contextlib.contextmanager
def deferred_signals() -> Iterator[StopFlag]:
    """Turn the first Ctrl-C or SIGTERM into a flag checked between chunks (a second one interrupts at once)."""
    stop = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise Interrupted("interrupted", signum)
        stop.signum = signum
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
