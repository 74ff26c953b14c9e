"""Atomic output: write under a temporary name next to the target, rename when complete."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from caloquant.errors import InputError


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Fail early, with the path in the message, when the output directory cannot take the file."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"{p}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{p}: output directory {parent} is not writable")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a file name")
    return p


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


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically and return its final path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
