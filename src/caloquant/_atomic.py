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
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
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


#: What a command names under one option: a path, several, or nothing.
Paths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None
#: Files read along with a model file given by path (a checkpoint's card and recipe, an IR's weights and spec).
_COMPANIONS = {".pt": (".json", ".recipe.json"), ".xml": (".bin", ".spec.json")}


def _each(named: Mapping[str, Paths]) -> Iterator[tuple[str, str | os.PathLike[str]]]:
    for label, value in named.items():
        items = [value] if isinstance(value, (str, os.PathLike)) else list(value or ())
        yield from ((label, item) for item in items if item is not None and os.fspath(item) != "")


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _same(a: Path, b: Path) -> bool:
    """The same file: one real path, or two links to it (hard links included)."""
    try:
        return a == b or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _read_paths(item: str | os.PathLike[str], source: bool) -> Iterator[tuple[str, Path, bool]]:
    """The existing paths a run reads for one input, each as (as given, real path, whether a whole folder)."""
    p = Path(item)
    if source and not p.exists() and any(c in os.fspath(item) for c in "*?["):
        for match in sorted(glob.glob(os.fspath(item))):
            yield from _read_paths(match, source)
        return
    if not p.exists():
        return  # a name such as a shipped model, or a missing file the command will report
    if p.is_dir():
        yield str(p), _real(p), True
        return
    yield str(p), _real(p), False
    if source and p.suffix == ".json":  # a shard manifest: its folder is the shard set
        yield str(p.parent), _real(p.parent), True
    for suffix in _COMPANIONS.get(p.suffix, ()):
        companion = p.with_suffix(suffix)
        if companion.is_file():
            yield str(companion), _real(companion), False


def check_outputs(outputs: Mapping[str, Paths], *, inputs: Mapping[str, Paths] | None = None,
                  sources: Mapping[str, Paths] | None = None, folders: Collection[str] = ()) -> None:
    """Refuse, before any work, outputs that would overwrite what the same run reads or writes.

    ``outputs`` maps each option to the path(s) it writes; those named in ``folders`` are output folders.
    ``inputs`` maps options to the files the run reads (strings that name no existing path, such as a shipped
    model, are skipped; a model's card, recipe, ``.bin`` and spec count with it). ``sources`` are shower sources:
    a file, a glob, a folder read whole or a shard manifest (whose folder is the shard set). The rule, for every
    command: an output is not an input, not inside an input folder or shard set, not another output nor inside an
    output folder, and no input lies inside an output folder. A violation is an InputError naming both.
    """
    outs = [(label, item, _real(item), label in folders) for label, item in _each(outputs)]
    for k, (label, item, real, _) in enumerate(outs):
        for other, other_item, other_real, other_folder in outs[:k]:
            if _same(real, other_real):
                raise InputError(f"{item}: given as two outputs, {other} and {label}; give each its own path")
            if other_folder and _inside(real, other_real):
                raise InputError(f"{item}: output {label} is inside the output folder {other} ({other_item})")
            if label in folders and _inside(other_real, real):
                raise InputError(f"{other_item}: output {other} is inside the output folder {label} ({item})")
    read = [(label, *found) for named, source in ((inputs or {}, False), (sources or {}, True))
            for label, item in _each(named) for found in _read_paths(item, source)]
    for label, item, real, folder in outs:
        for in_label, in_item, in_real, in_folder in read:
            if in_folder and _inside(real, in_real):
                raise InputError(f"{item}: output {label} is inside {in_item}, an input folder or shard set "
                                 f"({in_label}); write it elsewhere")
            if _same(real, in_real):
                raise InputError(f"{item}: output {label} is also an input ({in_label}); write it elsewhere")
            if folder and _inside(in_real, real):
                raise InputError(f"{in_item}: input {in_label} is inside the output folder {label} ({item}); "
                                 "use another folder")


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
