"""Bin packing of generation requests into full engine batches (pure bookkeeping, no inference).

Showers are independent, so a request may be split across batches: concatenating the queue of requests and
cutting it every ``batch`` rows fills every batch but the last, which is the optimum. A request of 3 and
one of 30 with batch 16 become [r0 0:3 + r1 0:13], [r1 13:29], [r1 29:30] (the last one only on flush).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from caloquant.errors import InputError


@dataclass(frozen=True)
class Slice:
    """Rows ``start:stop`` of request ``request``."""

    request: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


class Packer:
    """Incremental packer: ``add`` returns the batches it completed, ``flush`` the partly filled one."""

    def __init__(self, batch: int) -> None:
        if batch < 1:
            raise InputError(f"batch must be positive, got {batch}")
        self.batch = batch
        self._open: list[Slice] = []
        self._fill = 0

    @property
    def pending(self) -> int:
        """Rows waiting in the partly filled batch."""
        return self._fill

    def add(self, request: int, size: int) -> list[list[Slice]]:
        """Queue ``size`` rows of ``request``; returns every batch that is now full."""
        if size < 0:
            raise InputError(f"request size must be >= 0, got {size}")
        full: list[list[Slice]] = []
        start = 0
        while start < size:
            take = min(self.batch - self._fill, size - start)
            self._open.append(Slice(request, start, start + take))
            self._fill += take
            start += take
            if self._fill == self.batch:
                full.append(self._open)
                self._open, self._fill = [], 0
        return full

    def flush(self) -> list[Slice] | None:
        """The partly filled batch (or None when empty); the packer starts afresh."""
        if not self._open:
            return None
        out, self._open, self._fill = self._open, [], 0
        return out


def pack(sizes: Iterable[int], batch: int) -> list[list[Slice]]:
    """All requests of these sizes packed into batches of ``batch`` rows; only the last may be short."""
    packer = Packer(batch)
    batches = [b for request, size in enumerate(sizes) for b in packer.add(request, size)]
    last = packer.flush()
    return batches + ([last] if last else [])
