"""Per-shower arrays of large samples, kept on disk: a 2-D array in an unlinked temporary file (in ``TMPDIR``),
written and read by row ranges with ``pwrite``/``pread``. Nothing is memory-mapped, so only the rows being used
occupy memory, whatever the number of showers; the file disappears when the array is garbage-collected (or the
process ends, however it ends)."""

from __future__ import annotations

import os
import tempfile
import weakref
from typing import Any

import numpy as np

#: Bytes read at once when gathering scattered rows (``DiskArray.take``).
WINDOW_BYTES = 8 * 1024 * 1024


class DiskArray:
    """A (rows, cols) array of one dtype in a temporary file, row-major.

    ``write_rows``/``read_rows`` move whole rows (one system call); ``write_cols`` stores a range of columns of
    every row (one call per row: for arrays with few rows and many columns, e.g. features x showers, written a
    block of showers at a time). ``take`` gathers any rows, in any order and with repeats, a window at a time.
    """

    def __init__(self, shape: tuple[int, int], dtype: Any, directory: str | None = None) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self._row_bytes = self.shape[1] * int(self.dtype.itemsize)
        fd, path = tempfile.mkstemp(prefix="caloquant-features-", suffix=".bin", dir=directory)
        os.unlink(path)
        self._fd = fd
        self._closer = weakref.finalize(self, os.close, fd)
        os.ftruncate(fd, self.shape[0] * self._row_bytes)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self._row_bytes

    def close(self) -> None:
        """Release the file (its space is freed at once)."""
        self._closer()

    def _write(self, data: np.ndarray, offset: int) -> None:
        view = np.ascontiguousarray(data, dtype=self.dtype).data.cast("B")
        while view:
            done = os.pwrite(self._fd, view, offset)
            view, offset = view[done:], offset + done

    def _read(self, out: np.ndarray, offset: int) -> np.ndarray:
        view = out.data.cast("B")
        while view:
            if hasattr(os, "preadv"):
                done = os.preadv(self._fd, [view], offset)
            else:  # no preadv (older macOS): one more copy
                data = os.pread(self._fd, len(view), offset)
                done = len(data)
                view[:done] = data
            if done == 0:
                raise OSError(f"short read from a temporary feature file at byte {offset}")
            view, offset = view[done:], offset + done
        return out

    def _check_rows(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.shape[0]:
            raise IndexError(f"rows {start}:{stop} of an array with {self.shape[0]} rows")

    def write_rows(self, start: int, block: np.ndarray) -> None:
        """Store ``block`` (k, cols) as rows start .. start + k."""
        if block.ndim != 2 or block.shape[1] != self.shape[1]:
            raise ValueError(f"block of shape {block.shape} does not fit rows of {self.shape[1]} columns")
        self._check_rows(start, start + block.shape[0])
        self._write(block, start * self._row_bytes)

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start .. stop as a new (stop - start, cols) array."""
        self._check_rows(start, stop)
        return self._read(np.empty((stop - start, self.shape[1]), dtype=self.dtype), start * self._row_bytes)

    def read_segment(self, row: int, start: int, stop: int) -> np.ndarray:
        """Columns start .. stop of one row as a new 1-D array."""
        self._check_rows(row, row + 1)
        if not 0 <= start <= stop <= self.shape[1]:
            raise IndexError(f"columns {start}:{stop} of an array with {self.shape[1]} columns")
        out = np.empty(stop - start, dtype=self.dtype)
        return self._read(out, row * self._row_bytes + start * self.dtype.itemsize)

    def write_cols(self, start: int, block: np.ndarray) -> None:
        """Store ``block`` (rows, k) as columns start .. start + k of every row."""
        if block.ndim != 2 or block.shape[0] != self.shape[0] or not 0 <= start <= start + block.shape[1] <= \
                self.shape[1]:
            raise ValueError(f"block of shape {block.shape} does not fit columns {start}: of {self.shape}")
        for r in range(self.shape[0]):
            self._write(block[r], r * self._row_bytes + start * self.dtype.itemsize)

    def take(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (any order, repeats allowed) as a new (len(index), cols) array, equal to ``a[index]``."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        out = np.empty((len(index), self.shape[1]), dtype=self.dtype)
        if not len(index):
            return out
        if index.min() < 0 or index.max() >= self.shape[0]:
            raise IndexError(f"row index out of range for an array with {self.shape[0]} rows")
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        window = max(1, WINDOW_BYTES // max(self._row_bytes, 1))
        pos = 0
        while pos < len(ordered):
            first = int(ordered[pos])
            end = pos + int(np.searchsorted(ordered[pos:], first + window, side="left"))
            block = self.read_rows(first, int(ordered[end - 1]) + 1)
            out[order[pos:end]] = block[ordered[pos:end] - first]
            pos = end
        return out
